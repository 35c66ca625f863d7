// Package proxy is the node's Service proxy: it watches Services and
// EndpointSlices and programs one nftables table, through netlink (no nft
// binary), so that ClusterIPs, NodePorts, load balancer addresses and
// external IPs lead to the Services' endpoints.
//
// The table (family ip, named by the node: see host.For) is the
// proxy's alone and nothing else on the host is touched. Every sync is one atomic transaction: the
// first rewrites the whole table, later ones only the chains and map
// elements of the Services that changed. Stopping the proxy leaves the
// table in place, so connections keep working across restarts; Cleanup
// removes it.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/component"
	"github.com/skiff-dev/skiff/internal/kubeconfig"
	"github.com/skiff-dev/skiff/internal/nft"
)

// Config configures the proxy.
type Config struct {
	// NodeName is this node's name: endpoints on it are the local ones.
	NodeName string
	// Kubeconfig gives read access to Services and EndpointSlices.
	Kubeconfig string
	// ClusterCIDR is the pod network (--cluster-cidr; a comma-separated
	// list may hold one range per family). Traffic from it is pod traffic.
	ClusterCIDR string
	// ServiceCIDR is the Service range (--service-cidr; one range per
	// family). Traffic to an address of it that no Service port takes is
	// rejected, never routed out of the node. Empty: only the ClusterIPs'
	// other ports are rejected.
	ServiceCIDR string
	// NodePortAddresses, if not empty, limits NodePorts to the node's
	// addresses within these CIDRs; by default they answer on every local
	// address but loopback.
	NodePortAddresses []string
	// Table is the nftables table.
	Table string
	// Bridge is the pod bridge: pod egress leaving by another interface is
	// masqueraded.
	Bridge string
	// DNSService is the cluster DNS Service (kube-system/kube-dns). With
	// DNSAddress set, it has one endpoint on every node whatever the API
	// says: DNSAddress, on each Service port's target port.
	DNSService types.NamespacedName
	// DNSAddress blocks until the node's DNS address is known. Until it
	// returns, the DNS Service has no endpoints.
	DNSAddress func(context.Context) (net.IP, error)
}

// settings validates c.
func (c Config) settings() (*settings, error) {
	st := &settings{fam: nft.IPv4, table: c.Table, node: c.NodeName, bridge: c.Bridge}
	if c.NodeName == "" || c.Table == "" || c.Bridge == "" {
		return nil, errors.New("service proxy: the node name, table and bridge must all be given")
	}
	for _, s := range strings.Split(c.ClusterCIDR, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("--cluster-cidr: %q is not a CIDR", s)
		}
		if n := st.fam.CIDR(n); n != nil && st.clusterCIDR == nil {
			st.clusterCIDR = n
		}
	}
	if st.clusterCIDR == nil {
		return nil, fmt.Errorf("--cluster-cidr: %q has no IPv4 range", c.ClusterCIDR)
	}
	for _, s := range strings.Split(c.ServiceCIDR, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("--service-cidr: %q is not a CIDR such as 10.43.0.0/16", s)
		}
		if n := st.fam.CIDR(n); n != nil && st.serviceCIDR == nil {
			st.serviceCIDR = n
		}
	}
	if len(c.NodePortAddresses) > 0 {
		st.nodePortCIDRs = []*net.IPNet{} // not nil: only these
		for _, s := range c.NodePortAddresses {
			_, n, err := net.ParseCIDR(strings.TrimSpace(s))
			if err != nil {
				return nil, fmt.Errorf("--nodeport-addresses: %q is not a CIDR such as 192.168.1.0/24", s)
			}
			if n := st.fam.CIDR(n); n != nil {
				st.nodePortCIDRs = append(st.nodePortCIDRs, n)
			}
		}
	}
	if c.DNSService.Name != "" && c.DNSAddress != nil {
		st.dnsService = c.DNSService
	}
	return st, nil
}

// Proxy is the Service proxy component.
type Proxy struct {
	cfg Config
	component.Latch
	dns  atomic.Pointer[net.IP]
	loop *component.SyncLoop
}

// New returns the proxy, or an error naming the flag of an invalid setting.
func New(cfg Config) (*Proxy, error) {
	if _, err := cfg.settings(); err != nil {
		return nil, err
	}
	return &Proxy{cfg: cfg, loop: component.NewSyncLoop("service proxy")}, nil
}

// Name implements component.Component.
func (p *Proxy) Name() string { return "service proxy" }

// Cleanup deletes the proxy's table, if it exists.
func Cleanup(table string) error {
	return cleanup(nft.IPv4, table, 0)
}

// Run implements component.Component.
func (p *Proxy) Run(ctx context.Context) error {
	client, err := kubeconfig.Client(p.cfg.Kubeconfig)
	if err != nil {
		return err
	}
	return p.run(ctx, client, 0)
}

// run is Run with a client, in the network namespace netns (0: ours).
func (p *Proxy) run(ctx context.Context, client kubernetes.Interface, netns int) error {
	syncer, err := NewSyncer(p.cfg, netns)
	if err != nil {
		return err
	}
	if err := syncer.probe(); err != nil {
		return fmt.Errorf("nftables table %s cannot be created on this host (kernel without nf_tables, nat or fib support?): %w",
			syncer.st.table, err)
	}
	// Like kube-proxy: Services another proxy implements, and headless
	// ones, are none of our business.
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
		}))
	services := factory.Core().V1().Services()
	slices := factory.Discovery().V1().EndpointSlices()
	handler := p.loop.Handler()
	if _, err := services.Informer().AddEventHandler(handler); err != nil {
		return err
	}
	if _, err := slices.Informer().AddEventHandler(handler); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitFor(ctx, "", services.Informer().HasSyncedChecker(), slices.Informer().HasSyncedChecker()) {
		return nil // ctx ended
	}
	if syncer.st.dnsService.Name != "" {
		go p.waitDNS(ctx)
	}

	health := &healthChecks{node: syncer.st.node}
	defer health.close()
	sync := func() error {
		svcs, err := services.Lister().List(labels.Everything())
		if err != nil {
			return err
		}
		eps, err := slices.Lister().List(labels.Everything())
		if err != nil {
			return err
		}
		if ip := p.dns.Load(); ip != nil {
			syncer.SetDNSAddress(*ip)
		}
		health.update(svcs, eps)
		start := time.Now()
		err = syncer.Sync(svcs, eps)
		klog.V(2).InfoS("service proxy sync", "full", syncer.last.full, "servicePorts", syncer.last.services,
			"duration", time.Since(start), "err", err)
		return err
	}
	// The table stays when the loop ends: established connections keep
	// working.
	return p.loop.Run(ctx, &p.Latch, sync)
}

// waitDNS waits for the node's DNS address and triggers a sync with it.
func (p *Proxy) waitDNS(ctx context.Context) {
	ip, err := p.cfg.DNSAddress(ctx)
	if err != nil {
		if ctx.Err() == nil {
			klog.ErrorS(err, "service proxy: no DNS address; the DNS Service stays without endpoints")
		}
		return
	}
	if ip.To4() == nil {
		klog.ErrorS(nil, "service proxy: the DNS address is not IPv4; the DNS Service stays without endpoints", "address", ip)
		return
	}
	p.dns.Store(&ip)
	p.trigger()
}

func (p *Proxy) trigger() { p.loop.Trigger() }
