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
const DefaultClusterCIDR = "10.42.0.0/16"

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
}

// Config is a node's settings.
type Config struct {
	NodeOptions
	DataDir           string
	ClusterCIDR       string
	NodePortAddresses []string
	DisableDNS        bool
	// The kubelet's credentials.
	Kubeconfig  string
	ClientCA    string
	ServingCert string
	ServingKey  string
}

// RunDir is where a node keeps runtime state (sockets, runc state, pod
// network namespaces): /run/skiff for the default data dir, else a directory
// named after the data dir, so that several nodes can share a host.
func RunDir(dataDir string) string {
	if dataDir == DefaultDataDir {
		return containerd.DefaultRunDir
	}
	return fmt.Sprintf("/run/skiff-%x", sha256.Sum256([]byte(dataDir)))[:len("/run/skiff-")+8]
}

// KubeletRoot is the kubelet's root dir: upstream's /var/lib/kubelet for the
// default data dir, else inside the data dir, so that a second node on the
// host (a throwaway cluster in a temp dir, say) keeps its pods apart.
func KubeletRoot(dataDir string) string {
	if dataDir == DefaultDataDir {
		return "/var/lib/kubelet"
	}
	return filepath.Join(dataDir, "kubelet")
}

// CgroupRoot is the cgroup the kubelet puts pods under (cgroupfs driver):
// /skiff for the default data dir, else named like RunDir.
func CgroupRoot(dataDir string) string {
	if dataDir == DefaultDataDir {
		return "/skiff"
	}
	return "/" + filepath.Base(RunDir(dataDir))
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
	endpoint := cfg.ContainerRuntimeEndpoint
	var runtime *containerd.Containerd
	if endpoint == "" {
		if err := containerd.CheckRunc(); err != nil {
			return nil, err
		}
		runtime = containerd.New(cfg.DataDir, RunDir(cfg.DataDir))
		runtime.SandboxImage = pause.Image
		runtime.SandboxTarball = pause.Tarball
		endpoint = runtime.Endpoint()
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = kubelet.DefaultResolvConf()
	} else if _, err := os.Stat(cfg.ResolvConf); err != nil {
		return nil, fmt.Errorf("--resolv-conf: %w", err)
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
		RootDir:       KubeletRoot(cfg.DataDir),
		CgroupRoot:    CgroupRoot(cfg.DataDir),
		RunDir:        RunDir(cfg.DataDir),
		ExtraArgs:     cfg.KubeletArgs,
	})
	if err != nil {
		return nil, err
	}
	var out []component.Component
	if runtime != nil {
		out = append(out, runtime)
	}
	network := cni.NewNetwork(cfg.NodeName, cfg.Kubeconfig,
		filepath.Join(cfg.DataDir, "data", "bin"),
		filepath.Join(cfg.DataDir, "agent", "etc", "cni", "net.d"),
		filepath.Join(cfg.DataDir, "agent", "cni", "networks"))
	var overlay *flannel.Overlay
	switch cfg.FlannelBackend {
	case "", "vxlan":
		overlay, err = flannel.New(flannel.Config{NodeName: cfg.NodeName, Kubeconfig: cfg.Kubeconfig, NodeIP: net.ParseIP(cfg.NodeIP), Iface: cfg.FlannelIface})
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
			Bridge:            cni.Bridge,
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
