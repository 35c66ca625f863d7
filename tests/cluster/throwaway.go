package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Throwaway is the README's throwaway cluster for CI: `skiff server` with its
// data dir in a temp dir, on a free API port, with the test image in its
// air-gap folder and the tests' resolver. Its kubelet, cgroup and runtime
// dirs are the ones skiff derives from the data dir.
type Throwaway struct {
	Dir, DataDir, Kubeconfig, Log string
	// The run dir, cgroup root, bridge, overlay device and nftables table
	// skiff derives from the data dir.
	NodeNames
	// Flags are the server's flags (after `server`).
	Flags  []string
	cmd    *exec.Cmd
	exited chan struct{}
}

// NewThrowaway prepares a throwaway cluster in dir; extra are more server
// flags (a second cluster's ranges, say).
func NewThrowaway(dir string, extra ...string) (*Throwaway, error) {
	c := &Throwaway{Dir: dir, DataDir: filepath.Join(dir, "data"), Kubeconfig: filepath.Join(dir, "kubeconfig"), Log: filepath.Join(dir, "skiff.log")}
	c.NodeNames = NamesOf(c.DataDir)
	if err := WriteBusyboxImage(filepath.Join(c.DataDir, "agent", "images")); err != nil {
		return nil, err
	}
	resolv, err := WriteResolvConf(dir)
	if err != nil {
		return nil, err
	}
	c.Flags = []string{"--data-dir", c.DataDir, "--https-listen-port", fmt.Sprint(FreePort()),
		"--write-kubeconfig", c.Kubeconfig, "--resolv-conf", resolv}
	c.Flags = append(c.Flags, extra...)
	return c, nil
}

// Start runs `bin server` with the flags in the background, then `skiff
// wait` until the cluster can take pods.
func (c *Throwaway) Start(bin string) error {
	c.cmd = exec.Command(bin, append([]string{"server"}, c.Flags...)...)
	exited := make(chan struct{})
	if err := startLogged(c.cmd, c.Log, func(error) { close(exited) }); err != nil {
		return err
	}
	c.exited = exited
	_, err := c.Skiff(4*time.Minute, "wait", "--kubeconfig", c.Kubeconfig, "--timeout", "3m")
	return err
}

// Port is the API server's port.
func (c *Throwaway) Port() string {
	for i, f := range c.Flags[:len(c.Flags)-1] {
		if f == "--https-listen-port" {
			return c.Flags[i+1]
		}
	}
	return ""
}

// Kubectl runs `skiff kubectl` against the cluster.
func (c *Throwaway) Kubectl(timeout time.Duration, args ...string) (string, error) {
	return c.Skiff(timeout, append([]string{"kubectl", "--kubeconfig", c.Kubeconfig}, args...)...)
}

// RunPod runs the test image as pod p and waits until it is Ready.
func (c *Throwaway) RunPod() error {
	kc := []string{"kubectl", "--kubeconfig", c.Kubeconfig}
	if _, err := c.Skiff(time.Minute, append(kc, "run", "p", "--image", BusyboxImage, "--restart", "Never",
		"--image-pull-policy", "Never", "--", "sleep", "3600")...); err != nil {
		return err
	}
	_, err := c.Skiff(3*time.Minute, append(kc, "wait", "--for", "condition=Ready", "pod/p", "--timeout", "2m")...)
	return err
}

// Skiff runs the built binary.
func (c *Throwaway) Skiff(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, Binary(), args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("skiff %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Exited waits up to timeout for the server process to end.
func (c *Throwaway) Exited(timeout time.Duration) bool {
	select {
	case <-c.exited:
		return true
	default:
	}
	select {
	case <-c.exited:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Remove ends whatever is left of the cluster, whatever state it is in:
// the server's process group, then `skiff killall` (idempotent).
func (c *Throwaway) Remove() {
	if c.cmd != nil && c.cmd.Process != nil {
		syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.exited
	}
	exec.Command(Binary(), "killall", "--data-dir", c.DataDir).Run()
}

// LogTail is the end of the server's log.
func (c *Throwaway) LogTail(n int) string {
	data, _ := os.ReadFile(c.Log)
	lines := strings.Split(string(data), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
