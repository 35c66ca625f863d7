// Package agent assembles a node: containerd, the pod network and the
// kubelet, as an ordered list of components. `skiff server` runs it in the
// same process unless --disable-agent is given.
package agent

import (
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/kubernetes/pkg/util/taints"

	"github.com/skiff-dev/skiff/internal/cni"
	"github.com/skiff-dev/skiff/internal/component"
	"github.com/skiff-dev/skiff/internal/containerd"
	"github.com/skiff-dev/skiff/internal/dns"
	"github.com/skiff-dev/skiff/internal/flannel"
	"github.com/skiff-dev/skiff/internal/kubelet"
	"github.com/skiff-dev/skiff/internal/pause"
	"github.com/skiff-dev/skiff/internal/proxy"
)

// DefaultDataDir is the data dir whose runtime state lives in /run/skiff.
const DefaultDataDir = "/var/lib/skiff"

// DefaultClusterCIDR is the pod network's default range.
const DefaultClusterCIDR = flannel.DefaultNetwork

// NodeOptions are a node's flags, the same for server and agent.
type NodeOptions struct {
	NodeName                 string
	NodeIP                   string
	Labels                   []string // key=value
	Taints                   []string // key=value:Effect
	KubeletArgs              []string
	ContainerRuntimeEndpoint string
	ClusterDNS               string
	ClusterDomain            string
	ResolvConf               string
	DisableProxy             bool
	FlannelIface             string
	FlannelBackend           string // vxlan, or none
	// NodePortAddresses limits NodePorts to the node's addresses in these
	// CIDRs (default: every address but loopback).
	NodePortAddresses []string
}

// Config is a node's settings.
type Config struct {
	NodeOptions
	DataDir     string
	ClusterCIDR string
	DisableDNS  bool
	// The kubelet's credentials.
	Kubeconfig  string
	ClientCA    string
	ServingCert string
	ServingKey  string
}

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
	// WellKnownPorts: the kubelet listens on 10250 (healthz 10248), the
	// controller manager on 10257, the scheduler on 10259 and an agent's
	// API load balancer on 6444. Otherwise each takes a free port (see
	// FreePorts).
	WellKnownPorts bool
}

// HostFor is the host names of the node whose data dir is dataDir (an
// absolute path).
func HostFor(dataDir string) Host {
	if dataDir == DefaultDataDir {
		return Host{RunDir: containerd.DefaultRunDir, KubeletRoot: "/var/lib/kubelet", CgroupRoot: "/skiff",
			Bridge: "cni0", Overlay: "flannel.1", Table: "skiff", WellKnownPorts: true}
	}
	// Interface names hold at most 15 bytes: 8 hex digits leave room for a
	// prefix that says what the device is.
	h := fmt.Sprintf("%x", sha256.Sum256([]byte(dataDir)))[:8]
	return Host{RunDir: "/run/skiff-" + h, KubeletRoot: filepath.Join(dataDir, "kubelet"), CgroupRoot: "/skiff-" + h,
		Bridge: "cni-" + h, Overlay: "vxlan-" + h, Table: "skiff-" + h}
}

// CheckRange makes sure no other interface on this host routes part of the
// pod network clusterCIDR: another cluster's bridge, most likely, whose pods
// would collide with this node's.
func CheckRange(dataDir, clusterCIDR string) error {
	_, cidr, err := net.ParseCIDR(clusterCIDR)
	if err != nil {
		return err
	}
	h := HostFor(dataDir)
	return cni.CheckRange(cidr, h.Bridge, h.Overlay)
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

// Components returns the node's components in start order. It checks the
// configuration and writes nothing, so that bad input fails before anything
// is written; the kubelet's credentials must exist once they run.
func Components(cfg Config) ([]component.Component, error) {
	labels := map[string]string{}
	for _, l := range cfg.Labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--node-label %q is not key=value", l)
		}
		labels[k] = v
	}
	add, _, err := taints.ParseTaints(cfg.Taints)
	if err != nil {
		return nil, fmt.Errorf("--node-taint: %w (want key=value:NoSchedule)", err)
	}
	host := HostFor(cfg.DataDir)
	endpoint := cfg.ContainerRuntimeEndpoint
	var runtime *containerd.Containerd
	if endpoint == "" {
		if err := containerd.CheckRunc(); err != nil {
			return nil, err
		}
		runtime = containerd.New(cfg.DataDir, host.RunDir)
		runtime.SandboxImage = pause.Image
		runtime.SandboxTarball = pause.Tarball
		endpoint = runtime.Endpoint()
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = kubelet.DefaultResolvConf()
	} else if _, err := os.Stat(cfg.ResolvConf); err != nil {
		return nil, fmt.Errorf("--resolv-conf: %w", err)
	}
	ports := []int{0, 0} // the kubelet's and its healthz: upstream's
	if !host.WellKnownPorts {
		if ports, err = FreePorts(2); err != nil {
			return nil, err
		}
	}
	k, err := kubelet.New(&kubelet.Config{
		NodeName:      cfg.NodeName,
		NodeIP:        cfg.NodeIP,
		Labels:        labels,
		Taints:        add,
		Kubeconfig:    cfg.Kubeconfig,
		ClientCA:      cfg.ClientCA,
		ServingCert:   cfg.ServingCert,
		ServingKey:    cfg.ServingKey,
		CRIEndpoint:   endpoint,
		ClusterDNS:    cfg.ClusterDNS,
		ClusterDomain: cfg.ClusterDomain,
		ResolvConf:    cfg.ResolvConf,
		DataDir:       cfg.DataDir,
		RootDir:       host.KubeletRoot,
		CgroupRoot:    host.CgroupRoot,
		RunDir:        host.RunDir,
		Port:          ports[0],
		HealthzPort:   ports[1],
		ExtraArgs:     cfg.KubeletArgs,
	})
	if err != nil {
		return nil, err
	}
	var out []component.Component
	if runtime != nil {
		out = append(out, runtime)
	}
	network := cni.NewNetwork(cfg.NodeName, cfg.Kubeconfig, host.Bridge,
		filepath.Join(cfg.DataDir, "data", "bin"),
		filepath.Join(cfg.DataDir, "agent", "etc", "cni", "net.d"),
		filepath.Join(cfg.DataDir, "agent", "cni", "networks"))
	var overlay *flannel.Overlay
	switch cfg.FlannelBackend {
	case "", "vxlan":
		vni, err := flannel.VNI(cfg.ClusterCIDR)
		if err != nil {
			return nil, err
		}
		overlay, err = flannel.New(flannel.Config{NodeName: cfg.NodeName, Kubeconfig: cfg.Kubeconfig, NodeIP: net.ParseIP(cfg.NodeIP), Iface: cfg.FlannelIface,
			Device: host.Overlay, VNI: vni})
		if err != nil {
			return nil, err
		}
		network.MTU = overlay.MTU()
	case "none":
	default:
		return nil, fmt.Errorf("--flannel-backend %q is not a backend: pick vxlan (the default) or none", cfg.FlannelBackend)
	}
	out = append(out, network, k)
	if overlay != nil {
		out = append(out, overlay)
	}
	// The kubelet registers the node, which then gets its pod CIDR: the
	// proxy and the DNS start after it, and the DNS listens on the pod
	// bridge once the network has it.
	if !cfg.DisableProxy {
		p, err := proxy.New(proxy.Config{
			NodeName:          cfg.NodeName,
			Kubeconfig:        cfg.Kubeconfig,
			ClusterCIDR:       cfg.ClusterCIDR,
			NodePortAddresses: cfg.NodePortAddresses,
			Table:             host.Table,
			Bridge:            host.Bridge,
			DNSService:        types.NamespacedName{Namespace: metav1.NamespaceSystem, Name: "kube-dns"},
			DNSAddress:        network.Gateway,
		})
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if !cfg.DisableDNS {
		out = append(out, dns.New(dns.Config{
			Kubeconfig:    cfg.Kubeconfig,
			ClusterDomain: cfg.ClusterDomain,
			ResolvConf:    cfg.ResolvConf,
			Dir:           filepath.Join(cfg.DataDir, "agent", "etc", "coredns"),
			Address:       network.Gateway,
		}))
	}
	return out, nil
}
