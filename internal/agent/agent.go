// Package agent assembles a node: containerd, the pod network and the
// kubelet, as an ordered list of components. `skiff server` runs it in the
// same process unless --disable-agent is given.
package agent

import (
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
	"github.com/skiff-dev/skiff/internal/host"
	"github.com/skiff-dev/skiff/internal/hostport"
	"github.com/skiff-dev/skiff/internal/ingress"
	"github.com/skiff-dev/skiff/internal/kubelet"
	"github.com/skiff-dev/skiff/internal/localstorage"
	"github.com/skiff-dev/skiff/internal/memorylimit"
	"github.com/skiff-dev/skiff/internal/netpol"
	"github.com/skiff-dev/skiff/internal/pause"
	"github.com/skiff-dev/skiff/internal/proxy"
	"github.com/skiff-dev/skiff/internal/registries"
)

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
	// DisableNetworkPolicy leaves NetworkPolicies unenforced (for a CNI
	// that enforces them): no table, no watches.
	DisableNetworkPolicy bool
	FlannelIface         string
	FlannelBackend       string // vxlan, or none
	// DefaultLocalStoragePath is the root of the node's local volumes
	// (default <data-dir>/storage).
	DefaultLocalStoragePath string
	// PrivateRegistry is the node's registries.yaml (default
	// /etc/skiff/registries.yaml, read when it exists).
	PrivateRegistry string
	// DisableDefaultRegistryEndpoint pulls a mirrored registry's images
	// from its mirrors only.
	DisableDefaultRegistryEndpoint bool
	// NodePortAddresses limits NodePorts to the node's addresses in these
	// CIDRs (default: every address but loopback).
	NodePortAddresses []string
	// IngressHTTPPort and IngressHTTPSPort serve Ingresses (0: none on
	// that scheme); IngressTrustedProxies are the CIDRs of clients whose
	// X-Forwarded-* headers are kept.
	IngressHTTPPort, IngressHTTPSPort int
	IngressTrustedProxies             []string
}

// Config is a node's settings.
type Config struct {
	NodeOptions
	DataDir     string
	ClusterCIDR string
	// ServiceCIDR is the Service range, which the proxy keeps on the node.
	ServiceCIDR string
	DisableDNS  bool
	// DisableLocalStorage leaves the local volume provisioner out.
	DisableLocalStorage bool
	// DisableIngress leaves the Ingress and Gateway API proxy out.
	DisableIngress bool
	// GatewayAddressPool is the server's --gateway-address-pool.
	GatewayAddressPool string
	// IngressStatusKubeconfig, on a server's node, writes the status of
	// Ingresses and Gateway API objects (while it holds a Lease among the
	// servers); agents write none.
	IngressStatusKubeconfig string
	// The kubelet's credentials.
	Kubeconfig  string
	ClientCA    string
	ServingCert string
	ServingKey  string
	// BeforeKubelet are components the kubelet waits for (a server's
	// gate for its controller manager's volume plugins).
	BeforeKubelet []component.Component
}

// CheckRange makes sure no other interface on this host routes part of the
// pod network clusterCIDR: another cluster's bridge, most likely, whose pods
// would collide with this node's.
func CheckRange(dataDir, clusterCIDR string) error {
	_, cidr, err := net.ParseCIDR(clusterCIDR)
	if err != nil {
		return err
	}
	h := host.For(dataDir)
	return cni.CheckRange(cidr, h.Bridge, h.Overlay)
}

// loadRegistries reads the node's registries.yaml: path, or the default
// one when it exists.
func loadRegistries(path string) (*registries.Registries, error) {
	if path == "" {
		return registries.Load(registries.DefaultPath, false)
	}
	return registries.Load(path, true)
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
	hst := host.For(cfg.DataDir)
	endpoint := cfg.ContainerRuntimeEndpoint
	var runtime *containerd.Containerd
	if endpoint == "" {
		if err := containerd.CheckRunc(); err != nil {
			return nil, err
		}
		regs, err := loadRegistries(cfg.PrivateRegistry)
		if err != nil {
			return nil, err
		}
		if runtime, err = containerd.New(containerd.Config{DataDir: cfg.DataDir, RunDir: hst.RunDir,
			SandboxImage: pause.Image, SandboxTarball: pause.Tarball, SandboxID: pause.ID(), GCPercent: memorylimit.Applied().GCPercent,
			Registries: regs, DisableDefaultEndpoint: cfg.DisableDefaultRegistryEndpoint}); err != nil {
			return nil, err
		}
		endpoint = runtime.Endpoint()
	} else if cfg.PrivateRegistry != "" {
		return nil, fmt.Errorf("--private-registry configures the built-in containerd, and --container-runtime-endpoint replaces it: configure your runtime's registries there and drop --private-registry")
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = kubelet.DefaultResolvConf()
	} else if _, err := os.Stat(cfg.ResolvConf); err != nil {
		return nil, fmt.Errorf("--resolv-conf: %w", err)
	}
	ports := []int{0, 0} // the kubelet's and its healthz: upstream's
	if !hst.WellKnownPorts {
		// The last start's, while they are free: the API server reaches
		// the kubelet (exec, logs) at the port in its Node's status, which
		// stays right across a restart instead of until the new kubelet
		// publishes another.
		var last []int
		if s, ok := kubelet.ReadState(hst.RunDir); ok {
			last = []int{s.Port, s.HealthzPort}
		}
		if ports, err = host.PreferPorts(last, 2); err != nil {
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
		RootDir:       hst.KubeletRoot,
		CgroupRoot:    hst.CgroupRoot,
		RunDir:        hst.RunDir,
		Port:          ports[0],
		HealthzPort:   ports[1],
		ExtraArgs:     cfg.KubeletArgs,
	})
	if err != nil {
		return nil, err
	}
	var out []component.Component
	if runtime != nil {
		out = append(out, runtime, component.Gate{What: "containerd serving", Latch: &runtime.Serving})
	}
	var overlay *flannel.Overlay
	mtu := 0
	switch cfg.FlannelBackend {
	case "", "vxlan":
		vni, err := flannel.VNI(cfg.ClusterCIDR)
		if err != nil {
			return nil, err
		}
		overlay, err = flannel.New(flannel.Config{NodeName: cfg.NodeName, Kubeconfig: cfg.Kubeconfig, NodeIP: net.ParseIP(cfg.NodeIP), Iface: cfg.FlannelIface,
			Device: hst.Overlay, VNI: vni, ClusterCIDR: cfg.ClusterCIDR})
		if err != nil {
			return nil, err
		}
		mtu = overlay.MTU()
	case "none":
	default:
		return nil, fmt.Errorf("--flannel-backend %q is not a backend: pick vxlan (the default) or none", cfg.FlannelBackend)
	}
	network, err := cni.New(cni.Config{NodeName: cfg.NodeName, Kubeconfig: cfg.Kubeconfig, Bridge: hst.Bridge, MTU: mtu,
		BinDir:  filepath.Join(cfg.DataDir, "data", "bin"),
		ConfDir: filepath.Join(cfg.DataDir, "agent", "etc", "cni", "net.d"),
		IPAMDir: filepath.Join(cfg.DataDir, "agent", "cni", "networks")})
	if err != nil {
		return nil, err
	}
	out = append(out, network)
	// Network policies: the kubelet starts once they are enforced, so that
	// no pod of this node is ever reachable before its policies are (the
	// rules apply after the proxy's DNAT whatever the start order). A
	// kernel that cannot hold the table stops the node here, before
	// anything started, unless policies are disabled.
	if !cfg.DisableNetworkPolicy {
		np, err := netpol.New(netpol.Config{NodeName: cfg.NodeName, Kubeconfig: cfg.Kubeconfig,
			Table: hst.NetpolTable, ClusterCIDR: cfg.ClusterCIDR})
		if err != nil {
			return nil, err
		}
		if err := netpol.NewSyncer(netpol.Config{Table: hst.NetpolTable}, 0).Probe(); err != nil {
			return nil, err
		}
		out = append(out, np)
	} else if err := netpol.Cleanup(hst.NetpolTable); err != nil {
		// A table left by a start with policies enforced would go on
		// enforcing them, frozen.
		return nil, fmt.Errorf("removing the network policy table %s that an earlier start left: %w", hst.NetpolTable, err)
	}
	out = append(out, cfg.BeforeKubelet...)
	out = append(out, k)
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
			ServiceCIDR:       cfg.ServiceCIDR,
			NodePortAddresses: cfg.NodePortAddresses,
			Table:             hst.Table,
			Bridge:            hst.Bridge,
			DNSService:        types.NamespacedName{Namespace: metav1.NamespaceSystem, Name: "kube-dns"},
			DNSAddress:        network.Gateway,
		})
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if !cfg.DisableIngress {
		g, err := ingressComponent(cfg)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	hp, err := hostport.New(hostport.Config{NodeName: cfg.NodeName, Kubeconfig: cfg.Kubeconfig, Table: hst.HostPortTable, Bridge: hst.Bridge})
	if err != nil {
		return nil, err
	}
	out = append(out, hp)
	if !cfg.DisableDNS {
		d, err := dns.New(dns.Config{
			Kubeconfig:    cfg.Kubeconfig,
			ClusterDomain: cfg.ClusterDomain,
			ResolvConf:    cfg.ResolvConf,
			Dir:           filepath.Join(cfg.DataDir, "agent", "etc", "coredns"),
			Address:       network.Gateway,
		})
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	if !cfg.DisableLocalStorage {
		dir := cfg.DefaultLocalStoragePath
		if dir == "" {
			dir = filepath.Join(cfg.DataDir, "storage")
		}
		s, err := localstorage.New(localstorage.Config{NodeName: cfg.NodeName, Kubeconfig: cfg.Kubeconfig, Dir: dir})
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// ingressComponent is the node's Ingress and Gateway API proxy.
func ingressComponent(cfg Config) (*ingress.Ingress, error) {
	for _, p := range []struct {
		flag string
		port int
	}{{"--ingress-http-port", cfg.IngressHTTPPort}, {"--ingress-https-port", cfg.IngressHTTPSPort}} {
		if p.port < 0 || p.port > 65535 {
			return nil, fmt.Errorf("%s %d is not a port: give 1-65535, or 0 to serve no Ingress on it", p.flag, p.port)
		}
	}
	if cfg.IngressHTTPPort != 0 && cfg.IngressHTTPPort == cfg.IngressHTTPSPort {
		return nil, fmt.Errorf("--ingress-http-port and --ingress-https-port are both %d: give two ports", cfg.IngressHTTPPort)
	}
	var trusted []*net.IPNet
	for _, c := range cfg.IngressTrustedProxies {
		_, n, err := net.ParseCIDR(c)
		if err != nil {
			ip := net.ParseIP(c)
			if ip == nil {
				return nil, fmt.Errorf("--ingress-trusted-proxies %q is not a CIDR such as 10.0.0.0/8", c)
			}
			n = &net.IPNet{IP: ip, Mask: net.CIDRMask(len(ip)*8, len(ip)*8)}
		}
		trusted = append(trusted, n)
	}
	pool, err := ingress.ParseAddressPool(cfg.GatewayAddressPool)
	if err != nil {
		return nil, fmt.Errorf("--gateway-address-pool: %v", err)
	}
	return ingress.New(ingress.NodeConfig{
		NodeName: cfg.NodeName, Kubeconfig: cfg.Kubeconfig, AddressPool: pool,
		StatusKubeconfig: cfg.IngressStatusKubeconfig, Identity: cfg.NodeName + "_" + cfg.NodeIP,
		HTTPPort: int32(cfg.IngressHTTPPort), HTTPSPort: int32(cfg.IngressHTTPSPort),
		Server: ingress.ServerConfig{TrustedProxies: trusted},
	})
}
