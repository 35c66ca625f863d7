package cluster

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Host is a client outside the cluster: a network namespace joined to this
// machine by a veth pair, with 172.31.<n>.2 on its side and 172.31.<n>.1 on
// ours as its default gateway.
type Host struct {
	Name    string // the namespace
	IP      string
	Gateway string
	link    string
}

// NewHost creates host n (0-255).
func NewHost(n int) (*Host, error) {
	h := &Host{
		Name:    fmt.Sprintf("skiff-test-host%d", n),
		IP:      fmt.Sprintf("172.31.%d.2", n),
		Gateway: fmt.Sprintf("172.31.%d.1", n),
		link:    fmt.Sprintf("sktest%d", n),
	}
	h.Delete() // a leftover of an interrupted run
	steps := [][]string{
		{"netns", "add", h.Name},
		{"link", "add", h.link, "type", "veth", "peer", "name", "eth0", "netns", h.Name},
		{"addr", "add", h.Gateway + "/24", "dev", h.link},
		{"link", "set", h.link, "up"},
		{"-n", h.Name, "addr", "add", h.IP + "/24", "dev", "eth0"},
		{"-n", h.Name, "link", "set", "eth0", "up"},
		{"-n", h.Name, "link", "set", "lo", "up"},
		{"-n", h.Name, "route", "add", "default", "via", h.Gateway},
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			h.Delete()
			return nil, fmt.Errorf("ip %s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	return h, nil
}

// Run runs a command inside the host's namespace.
func (h *Host) Run(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Name}, args...)...).CombinedOutput()
	return string(out), err
}

// Delete removes the namespace and the veth pair.
func (h *Host) Delete() {
	exec.Command("ip", "link", "del", h.link).Run()
	exec.Command("ip", "netns", "del", h.Name).Run()
}

// ToolPath is the test image's tool built for this machine, for hosts to run.
func ToolPath() (string, error) {
	if _, err := testTool(); err != nil {
		return "", err
	}
	return toolOnce.path, nil
}
