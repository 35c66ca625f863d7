// Package host is what identifies a node on its host: the names and ports
// it takes outside its data dir, its IP and name, and the defaults users
// know from k3s. It imports nothing of skiff, so that killall, the server
// and the tests can name a node's things without linking the node.
package host

import (
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gofrs/flock"
	utilnet "k8s.io/apimachinery/pkg/util/net"
)

const (
	// DefaultDataDir is the data dir whose runtime state lives in
	// DefaultRunDir.
	DefaultDataDir = "/var/lib/skiff"
	// DefaultRunDir holds the runtime state of the node with the default
	// data dir.
	DefaultRunDir = "/run/skiff"
	// DefaultClusterCIDR is the pod network's default range, k3s's.
	DefaultClusterCIDR = "10.42.0.0/16"
)

// Host is what a node sets up on the host outside its data dir. The default
// data dir gets the usual names and ports; any other gets names derived from
// a hash of its path and free ports, so that a second node on the host (a
// throwaway cluster in a temp dir, say) keeps apart from the first.
type Host struct {
	// RunDir holds runtime state: sockets, runc state, pods' network
	// namespaces. Default /run/skiff, else /run/skiff-<hash>.
	RunDir string
	// KubeletRoot is the kubelet's root dir: upstream's /var/lib/kubelet,
	// else <data-dir>/kubelet.
	KubeletRoot string
	// CgroupRoot is the cgroup the kubelet puts pods under (cgroupfs
	// driver): /skiff, else /skiff-<hash>.
	CgroupRoot string
	// Bridge is the pods' bridge: cni0, else cni-<hash>.
	Bridge string
	// Overlay is the VXLAN device: flannel.1, else vxlan-<hash>.
	Overlay string
	// Table is the Service proxy's nftables table: skiff, else skiff-<hash>.
	Table string
	// HostPortTable is the hostPorts' nftables table: skiff-hostports, else
	// skiff-<hash>-hostports.
	HostPortTable string
	// NetpolTable is the network policies' nftables table: skiff-netpol,
	// else skiff-<hash>-netpol.
	NetpolTable string
	// WellKnownPorts: the kubelet listens on 10250 (healthz 10248), the
	// controller manager on 10257, the scheduler on 10259 and an agent's
	// API load balancer on 6444. Otherwise each takes a free port (see
	// FreePorts).
	WellKnownPorts bool
}

// For is the host names of the node whose data dir is dataDir (an absolute
// path).
func For(dataDir string) Host {
	if dataDir == DefaultDataDir {
		return Host{RunDir: DefaultRunDir, KubeletRoot: "/var/lib/kubelet", CgroupRoot: "/skiff",
			Bridge: "cni0", Overlay: "flannel.1", Table: "skiff", HostPortTable: "skiff-hostports", NetpolTable: "skiff-netpol", WellKnownPorts: true}
	}
	// Interface names hold at most 15 bytes: 8 hex digits leave room for a
	// prefix that says what the device is.
	h := fmt.Sprintf("%x", sha256.Sum256([]byte(dataDir)))[:8]
	return Host{RunDir: "/run/skiff-" + h, KubeletRoot: filepath.Join(dataDir, "kubelet"), CgroupRoot: "/skiff-" + h,
		Bridge: "cni-" + h, Overlay: "vxlan-" + h, Table: "skiff-" + h, HostPortTable: "skiff-" + h + "-hostports",
		NetpolTable: "skiff-" + h + "-netpol"}
}

// FreePorts asks the kernel for n distinct TCP ports that are free now. The
// components that listen there bind them a moment later; a node with its own
// data dir uses such ports so that it can run beside another without flags.
func FreePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", ":0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// PreferPorts returns prefer when it holds n distinct ports, each free now,
// and else n free ports (FreePorts): a node restarted on its own data dir
// keeps its ports when it can.
func PreferPorts(prefer []int, n int) ([]int, error) {
	if len(prefer) == n {
		var held []net.Listener
		for _, p := range prefer {
			if p <= 0 {
				break
			}
			ln, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
			if err != nil {
				break
			}
			held = append(held, ln)
		}
		for _, ln := range held {
			ln.Close()
		}
		if len(held) == n {
			return prefer, nil
		}
	}
	return FreePorts(n)
}

// NodeIP is the IP given with --node-ip, else the address of the interface
// that holds the default route.
func NodeIP(flag string) (net.IP, error) {
	if flag != "" {
		ip := net.ParseIP(flag)
		if ip == nil {
			return nil, fmt.Errorf("--node-ip %q is not an IP address", flag)
		}
		return ip, nil
	}
	ip, err := utilnet.ChooseHostInterface()
	if err != nil {
		return nil, fmt.Errorf("cannot find this host's IP (%v): give it with --node-ip", err)
	}
	return ip, nil
}

// NodeName is the name given with --node-name, else the host name.
func NodeName(flag string) string {
	if flag != "" {
		return flag
	}
	h, _ := os.Hostname()
	return strings.ToLower(h)
}

// LockFile is the file in a data dir whose lock a running server or agent
// holds, and which names its process.
const LockFile = "skiff.lock"

// Lock takes the data dir's lock for this process, or says which process
// holds it. Two processes on one data dir would share its database, sockets
// and host names (the runtime dir, the kubelet dir, the bridge): the second
// one's start, or the first one's exit, would pull them from under the
// other. The lock goes with the process, a crash included; release gives it
// up earlier. The file stays, so that no process can lock a file that
// another has just removed.
func Lock(dataDir string) (release func(), err error) {
	path := filepath.Join(dataDir, LockFile)
	l := flock.New(path, flock.SetPermissions(0o600))
	ok, err := l.TryLock()
	if err != nil {
		return nil, fmt.Errorf("data dir %s cannot be locked (%v): fix its permissions or pick another with --data-dir", dataDir, err)
	}
	if !ok {
		holder := "another skiff"
		if b, err := os.ReadFile(path); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				holder = fmt.Sprintf("skiff (pid %d)", pid)
			}
		}
		return nil, fmt.Errorf("data dir %s is in use by %s: stop it first (skiff killall --data-dir %s), or give this one a data dir of its own with --data-dir", dataDir, holder, dataDir)
	}
	// Only a process that holds the lock writes the file; the lock is
	// advisory, so this second handle on it is fine.
	if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("data dir %s: cannot write %s (%v): fix its permissions or pick another with --data-dir", dataDir, LockFile, err)
	}
	return func() { l.Close() }, nil
}

// Program is a program from the host that a node runs.
type Program struct {
	Name string
	// Why the node needs it, and Install how to get it.
	Why, Install string
}

// Programs are every program from the host that a node runs: everything
// else it needs (containerd, the runc shim, the CNI plugins, the pod
// sandbox, nftables rules through netlink) is inside skiff. The node tests
// run nodes with a PATH that holds only these.
var Programs = []Program{
	{"runc", "the container runtime that containerd starts", "apt-get install runc (Alpine: apk add runc)"},
	{"mount", "the kubelet mounts pods' volumes with it", "apt-get install mount (Alpine: busybox has it)"},
	{"umount", "the kubelet unmounts pods' volumes with it", "apt-get install mount (Alpine: busybox has it)"},
}
