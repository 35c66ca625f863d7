package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

// LAN is several machines on one switch, built on this one: each host is a
// network namespace joined by a veth pair to a bridge here, which has
// LANGateway. Hosts have no default route: their traffic stays on the LAN.
type LAN struct {
	Hosts []*LANHost
}

// LANHost is one machine of a LAN.
type LANHost struct {
	Netns string
	IP    string
	link  string
}

const (
	lanBridge = "sktestlan0"
	// LANGateway is this machine's address on the LAN; the tests' upstream
	// resolver answers there too.
	LANGateway = "172.30.0.1"
)

// NewLAN creates n hosts, 172.30.0.11 and up.
func NewLAN(n int) (*LAN, error) {
	l := &LAN{}
	for i := 1; i <= n; i++ {
		l.Hosts = append(l.Hosts, &LANHost{
			Netns: fmt.Sprintf("skiff-test-lan%d", i),
			IP:    fmt.Sprintf("172.30.0.%d", 10+i),
			link:  fmt.Sprintf("sklan%d", i),
		})
	}
	l.Delete() // a leftover of an interrupted run
	steps := [][]string{
		{"link", "add", lanBridge, "type", "bridge"},
		{"addr", "add", LANGateway + "/24", "dev", lanBridge},
		{"link", "set", lanBridge, "up"},
	}
	for _, h := range l.Hosts {
		steps = append(steps, h.steps()...)
	}
	if err := ipSteps(steps); err != nil {
		l.Delete()
		return nil, err
	}
	// The hosts' traffic crosses this machine's bridge: keep the host's
	// own firewall (br_netfilter) out of it, as a real switch would be.
	if out, err := exec.Command("ip", "link", "set", lanBridge, "type", "bridge", "nf_call_iptables", "0").CombinedOutput(); err != nil {
		l.Delete()
		return nil, fmt.Errorf("bridge %s: %v: %s", lanBridge, err, out)
	}
	return l, nil
}

// steps are the ip commands that put h on the LAN.
func (h *LANHost) steps() [][]string {
	return [][]string{
		{"netns", "add", h.Netns},
		{"link", "add", h.link, "type", "veth", "peer", "name", "eth0", "netns", h.Netns},
		{"link", "set", h.link, "master", lanBridge},
		{"link", "set", h.link, "up"},
		{"-n", h.Netns, "addr", "add", h.IP + "/24", "dev", "eth0"},
		{"-n", h.Netns, "link", "set", "eth0", "up"},
		{"-n", h.Netns, "link", "set", "lo", "up"},
	}
}

func ipSteps(steps [][]string) error {
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	return nil
}

// Sink adds a host to the LAN, 172.30.0.254, that forwards nothing, and
// makes it the default route of host h: what h sends off the LAN ends
// there. remove takes both away again.
func (l *LAN) Sink(h *LANHost) (sink *LANHost, remove func(), err error) {
	sink = &LANHost{Netns: "skiff-test-lan-sink", IP: "172.30.0.254", link: "sklansink"}
	remove = func() {
		exec.Command("ip", "-n", h.Netns, "route", "del", "default", "via", sink.IP).Run()
		exec.Command("ip", "netns", "del", sink.Netns).Run()
		exec.Command("ip", "link", "del", sink.link).Run()
	}
	remove() // a leftover of an interrupted run
	steps := append(sink.steps(), []string{"-n", h.Netns, "route", "add", "default", "via", sink.IP})
	if err := ipSteps(steps); err != nil {
		remove()
		return nil, nil, err
	}
	return sink, remove, nil
}

// Delete removes the hosts (and whatever their nodes left in them) and the
// bridge.
func (l *LAN) Delete() {
	for _, h := range l.Hosts {
		exec.Command("ip", "netns", "del", h.Netns).Run()
		exec.Command("ip", "link", "del", h.link).Run()
	}
	exec.Command("ip", "link", "del", lanBridge).Run()
}

// NewLANServer describes a server that is also a node, on host h.
func NewLANServer(dir string, h *LANHost, extra ...string) (*Server, error) {
	s, err := NewNode(dir, extra...)
	if err != nil {
		return nil, err
	}
	return s, s.OnHost(h)
}

// NewLANAgent describes an agent on host h that joins server with its
// token.
func NewLANAgent(dir string, h *LANHost, server *Server, extra ...string) (*Server, error) {
	a, err := NewAgent(dir, server, extra...)
	if err != nil {
		return nil, err
	}
	a.Join = server.APIServer
	return a, a.OnHost(h)
}

// OnHost puts s on host h of a LAN: its network namespace, its address,
// and for a node the resolver the LAN's gateway serves.
func (s *Server) OnHost(h *LANHost) error {
	s.Netns, s.NodeIP = h.Netns, h.IP
	if s.Join == "" {
		s.APIServer = fmt.Sprintf("https://%s:%d", h.IP, s.Port)
	}
	if !s.Node {
		return nil
	}
	var err error
	s.ResolvConf, err = writeResolvConfAt(s.Dir, LANGateway)
	return err
}

// Run runs a command on the host.
func (h *LANHost) Run(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", h.Netns}, args...)...).CombinedOutput()
	return string(out), err
}

// HostKubeconfig is an admin kubeconfig that works from this machine: for a
// server in a network namespace, a copy of its kubeconfig with the server's
// LAN address instead of its loopback.
func (s *Server) HostKubeconfig() (string, error) {
	if s.APIServer == "" {
		return s.Kubeconfig, nil
	}
	cfg, err := clientcmd.LoadFromFile(s.Kubeconfig)
	if err != nil {
		return "", err
	}
	for _, c := range cfg.Clusters {
		c.Server = s.APIServer
	}
	path := filepath.Join(s.Dir, "host-kubeconfig.yaml")
	return path, clientcmd.WriteToFile(*cfg, path)
}

// LANMain runs a test package on a LAN of hosts, in a temp dir named after
// the package: start brings up its nodes on the LAN, and nodes lists them
// (nil entries, for nodes not started, are skipped). Every node is stopped
// and torn down at the end, failed or not, and the nodes' logs are printed
// when anything failed. It returns the exit code for TestMain.
func LANMain(m *testing.M, name string, hosts int, start func(dir string, lan *LAN) error, nodes func() []*Server) int {
	dir, err := os.MkdirTemp("", "skiff-"+name+"-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	lan, err := NewLAN(hosts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer lan.Delete()
	defer func() {
		for _, n := range nodes() {
			if n == nil {
				continue
			}
			n.Stop()
			if err := n.Teardown(); err != nil {
				fmt.Fprintf(os.Stderr, "teardown of %s: %v\n", n.Dir, err)
			}
		}
	}()
	if err := start(dir, lan); err != nil {
		fmt.Fprintln(os.Stderr, err)
		PrintLogs(40, nodes()...)
		return 1
	}
	code := m.Run()
	if code != 0 {
		PrintLogs(60, nodes()...)
	}
	return code
}
