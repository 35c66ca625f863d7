// Package flannel is the pod network's overlay between nodes, flannel-style:
// each node has a VXLAN device, publishes its VTEP's MAC and IP as
// annotations on its Node (flannel's own annotation names, so tools that
// know flannel read them), and programs a route, a neighbour entry and a
// forwarding entry for every other node's pod range. It is IPv4 only, as is
// the rest of the pod network.
package flannel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/vishvananda/netlink"

	"github.com/skiff-dev/skiff/internal/component"
	"github.com/skiff-dev/skiff/internal/host"
	"github.com/skiff-dev/skiff/internal/kubeconfig"
)

const (
	// Port is the VXLAN's UDP port, flannel's.
	Port = 8472
	// overhead is what VXLAN adds to a packet: outer IPv4, UDP, VXLAN and
	// Ethernet headers.
	overhead = 50
	// retryAfter is how soon a failed pass over the peers is tried again.
	retryAfter = 2 * time.Second
)

// The Node annotations, flannel's names.
const (
	annBackendType = "flannel.alpha.coreos.com/backend-type"
	annBackendData = "flannel.alpha.coreos.com/backend-data"
	annPublicIP    = "flannel.alpha.coreos.com/public-ip"
	annSubnetMgr   = "flannel.alpha.coreos.com/kube-subnet-manager"
)

// Config is a node's overlay settings.
type Config struct {
	NodeName   string
	Kubeconfig string
	NodeIP     net.IP // the VTEP's address
	Iface      string // the interface the VXLAN runs over; default: the one holding NodeIP
	Device     string // the VXLAN device's name
	VNI        int    // see VNI
	// ClusterCIDR is the cluster's pod network: peers' ranges must lie in it.
	ClusterCIDR string
}

// VNI is the VXLAN network identifier of a cluster whose pod network is
// clusterCIDR: flannel's 1 for the default 10.42.0.0/16, else the first 24
// bits of the range's address. Every node of a cluster computes the same
// one, and clusters side by side on one host (whose pod networks cannot
// overlap) get different ones, so that their devices can share the port.
func VNI(clusterCIDR string) (int, error) {
	_, cidr, err := net.ParseCIDR(clusterCIDR)
	if err != nil || cidr.IP.To4() == nil {
		return 0, fmt.Errorf("the VXLAN overlay needs an IPv4 cluster CIDR, not %q", clusterCIDR)
	}
	if cidr.String() == host.DefaultClusterCIDR { // flannel's VNI 1
		return 1, nil
	}
	ip := cidr.IP.To4()
	return int(ip[0])<<16 | int(ip[1])<<8 | int(ip[2]), nil
}

// Overlay is the overlay component.
type Overlay struct {
	cfg     Config
	cluster *net.IPNet
	parent  netlink.Link
	// ignored is why each node left out was, last time: logged when it
	// changes, not at every sync.
	ignored map[string]string

	component.Latch
}

// New finds the interface the overlay runs over. It writes nothing.
func New(cfg Config) (*Overlay, error) {
	if cfg.NodeIP.To4() == nil {
		return nil, fmt.Errorf("the VXLAN overlay needs an IPv4 node IP, not %s: give one with --node-ip", cfg.NodeIP)
	}
	_, cluster, err := net.ParseCIDR(cfg.ClusterCIDR)
	if err != nil || cluster.IP.To4() == nil {
		return nil, fmt.Errorf("the VXLAN overlay needs an IPv4 cluster CIDR, not %q", cfg.ClusterCIDR)
	}
	o := &Overlay{cfg: cfg, cluster: cluster}
	if cfg.Iface != "" {
		l, err := netlink.LinkByName(cfg.Iface)
		if err != nil {
			return nil, fmt.Errorf("--flannel-iface %q: no such interface on this host: pick one of %s", cfg.Iface, strings.Join(linkNames(), ", "))
		}
		o.parent = l
		return o, nil
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if a.IP.Equal(cfg.NodeIP) {
			if o.parent, err = netlink.LinkByIndex(a.LinkIndex); err != nil {
				return nil, err
			}
			return o, nil
		}
	}
	return nil, fmt.Errorf("the node IP %s is on no interface of this host: give the interface with --flannel-iface", cfg.NodeIP)
}

// MTU is the overlay's MTU, which the pods' interfaces must not exceed.
func (o *Overlay) MTU() int { return o.parent.Attrs().MTU - overhead }

// Name implements component.Component.
func (o *Overlay) Name() string { return "overlay" }

// Run implements component.Component.
func (o *Overlay) Run(ctx context.Context) error {
	client, err := kubeconfig.Client(o.cfg.Kubeconfig)
	if err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	nodes := factory.Core().V1().Nodes()
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(old, cur any) { poke() },
		DeleteFunc: func(any) { poke() },
	})
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitFor(ctx, "", nodes.Informer().HasSyncedChecker()) {
		return nil
	}
	// A resync now and then repairs entries someone else removed.
	resync := time.NewTicker(5 * time.Minute)
	defer resync.Stop()
	// A failed pass (a netlink error, or a Node patch the API refused) is
	// tried again soon rather than at the next change.
	retry := time.NewTimer(0)
	<-retry.C
	defer retry.Stop()
	var link netlink.Link
	for {
		all, err := nodes.Lister().List(labels.Everything())
		if err != nil {
			return err
		}
		if link == nil {
			link, err = o.setUp(ctx, client, all)
			if err != nil {
				return err
			}
			if link != nil {
				o.SetReady()
			}
		}
		if link != nil {
			peers, ignored := Peers(o.cfg.NodeName, o.cfg.VNI, o.cluster, all)
			for n, why := range ignored {
				if o.ignored[n] != why {
					klog.InfoS("ignoring a node's overlay annotations", "node", n, "reason", why)
				}
			}
			o.ignored = ignored
			if err := apply(link, peers); err != nil {
				klog.ErrorS(err, "programming the overlay's routes failed; will retry")
				retry.Reset(retryAfter)
			}
		}
		select {
		case <-ctx.Done():
			// The device and its entries stay, so that pods keep talking
			// across a restart; skiff-killall.sh removes them.
			return nil
		case <-changed:
		case <-resync.C:
		case <-retry.C:
		}
	}
}

// setUp creates the device once the node has its pod range, and publishes
// its VTEP. It returns nil, nil while the range is not assigned yet.
func (o *Overlay) setUp(ctx context.Context, client kubernetes.Interface, all []*corev1.Node) (netlink.Link, error) {
	var self *corev1.Node
	for _, n := range all {
		if n.Name == o.cfg.NodeName {
			self = n
		}
	}
	if self == nil || self.Spec.PodCIDR == "" {
		return nil, nil
	}
	_, cidr, err := net.ParseCIDR(self.Spec.PodCIDR)
	if err != nil {
		return nil, fmt.Errorf("node %s's pod CIDR %q: %w", o.cfg.NodeName, self.Spec.PodCIDR, err)
	}
	link, err := o.ensureDevice(cidr)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", o.cfg.Device, err)
	}
	data, _ := json.Marshal(backendData{VNI: o.cfg.VNI, VtepMAC: link.Attrs().HardwareAddr.String()})
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		annBackendType: "vxlan",
		annBackendData: string(data),
		annPublicIP:    o.cfg.NodeIP.String(),
		annSubnetMgr:   "true",
	}}})
	if _, err := client.CoreV1().Nodes().Patch(ctx, o.cfg.NodeName, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return nil, fmt.Errorf("publishing the node's VTEP: %w", err)
	}
	klog.InfoS("overlay is up", "device", o.cfg.Device, "vni", o.cfg.VNI, "vtep", o.cfg.NodeIP, "mac", link.Attrs().HardwareAddr, "podCIDR", cidr)
	return link, nil
}

// ensureDevice creates the VXLAN device, or keeps the one there if it has
// the right settings (so that its MAC, which other nodes know, survives a
// restart).
func (o *Overlay) ensureDevice(cidr *net.IPNet) (netlink.Link, error) {
	want := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: o.cfg.Device, MTU: o.MTU()},
		VxlanId:      o.cfg.VNI,
		VtepDevIndex: o.parent.Attrs().Index,
		SrcAddr:      o.cfg.NodeIP.To4(),
		Port:         Port,
		Learning:     false,
	}
	if l, err := netlink.LinkByName(o.cfg.Device); err == nil {
		v, ok := l.(*netlink.Vxlan)
		if !ok || v.VxlanId != want.VxlanId || v.VtepDevIndex != want.VtepDevIndex || !v.SrcAddr.Equal(want.SrcAddr) || v.Port != want.Port {
			if err := netlink.LinkDel(l); err != nil {
				return nil, err
			}
		}
	}
	if err := netlink.LinkAdd(want); err != nil && !errors.Is(err, syscall.EEXIST) {
		return nil, err
	}
	link, err := netlink.LinkByName(o.cfg.Device)
	if err != nil {
		return nil, err
	}
	if link.Attrs().MTU != want.MTU {
		if err := netlink.LinkSetMTU(link, want.MTU); err != nil {
			return nil, err
		}
	}
	// The device holds the pod range's network address, which other nodes
	// route this node's pods through.
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: cidr.IP, Mask: net.CIDRMask(32, 32)}}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if !a.IPNet.IP.Equal(addr.IP) {
			netlink.AddrDel(link, &a)
		}
	}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return nil, err
	}
	return link, netlink.LinkSetUp(link)
}

// Cleanup deletes the overlay's device, and with it its routes and entries.
func Cleanup(device string) error {
	l, err := netlink.LinkByName(device)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return err
	}
	return netlink.LinkDel(l)
}

func linkNames() []string {
	links, _ := netlink.LinkList()
	var out []string
	for _, l := range links {
		out = append(out, l.Attrs().Name)
	}
	return out
}
