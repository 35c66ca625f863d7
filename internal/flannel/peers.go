package flannel

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/vishvananda/netlink"
)

// backendData is flannel's backend-data annotation for VXLAN.
type backendData struct {
	VNI     int    `json:"VNI"`
	VtepMAC string `json:"VtepMAC"`
}

// Peer is another node as the overlay sees it.
type Peer struct {
	Node     string
	PodCIDR  *net.IPNet
	MAC      net.HardwareAddr
	PublicIP net.IP
}

// Gateway is the peer's address on the overlay: its pod range's network
// address, which its device holds.
func (p Peer) Gateway() net.IP { return p.PodCIDR.IP }

// Peers returns the nodes other than self that the overlay can reach: those
// with a pod range inside the cluster's and a VTEP published on VNI vni,
// sorted by name; and, by node, why the others that publish a VTEP are left
// out. Nothing read from a Node is trusted beyond the cluster's pod range:
// a range outside it, or over the range of a node that registered earlier
// (or of self), and a VTEP address that is not one of the Node's own are
// refused, so that one bad Node object cannot steer a host's other routes.
func Peers(self string, vni int, cluster *net.IPNet, nodes []*corev1.Node) ([]Peer, map[string]string) {
	nodes = slices.Clone(nodes)
	slices.SortFunc(nodes, func(a, b *corev1.Node) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	var taken []*net.IPNet
	for _, n := range nodes {
		if n.Name == self {
			if _, cidr, err := net.ParseCIDR(n.Spec.PodCIDR); err == nil {
				taken = append(taken, cidr)
			}
		}
	}
	var out []Peer
	ignored := map[string]string{}
	for _, n := range nodes {
		if n.Name == self || n.Spec.PodCIDR == "" || n.Annotations[annBackendType] != "vxlan" {
			continue
		}
		p, err := peer(n, vni, cluster)
		if err == nil {
			for _, t := range taken {
				if t.Contains(p.PodCIDR.IP) || p.PodCIDR.Contains(t.IP) {
					err = fmt.Errorf("pod CIDR %s overlaps another node's %s", p.PodCIDR, t)
				}
			}
		}
		if err != nil {
			ignored[n.Name] = err.Error()
			continue
		}
		taken = append(taken, p.PodCIDR)
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out, ignored
}

func peer(n *corev1.Node, vni int, cluster *net.IPNet) (Peer, error) {
	p := Peer{Node: n.Name}
	_, cidr, err := net.ParseCIDR(n.Spec.PodCIDR)
	if err != nil || cidr.IP.To4() == nil {
		return p, fmt.Errorf("pod CIDR %q is not IPv4", n.Spec.PodCIDR)
	}
	if ones, _ := cidr.Mask.Size(); !cluster.Contains(cidr.IP) || ones <= maskSize(cluster) {
		return p, fmt.Errorf("pod CIDR %s is not a range inside the cluster's %s", cidr, cluster)
	}
	p.PodCIDR = cidr
	var data backendData
	if err := json.Unmarshal([]byte(n.Annotations[annBackendData]), &data); err != nil {
		return p, fmt.Errorf("%s: %w", annBackendData, err)
	}
	if data.VNI != vni {
		return p, fmt.Errorf("VNI %d, not %d", data.VNI, vni)
	}
	if p.MAC, err = net.ParseMAC(data.VtepMAC); err != nil || len(p.MAC) != 6 {
		return p, fmt.Errorf("VTEP MAC %q", data.VtepMAC)
	}
	if p.PublicIP = net.ParseIP(n.Annotations[annPublicIP]).To4(); p.PublicIP == nil {
		return p, fmt.Errorf("public IP %q is not IPv4", n.Annotations[annPublicIP])
	}
	if !slices.ContainsFunc(n.Status.Addresses, func(a corev1.NodeAddress) bool {
		return (a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP) && net.ParseIP(a.Address).Equal(p.PublicIP)
	}) {
		return p, fmt.Errorf("public IP %s is not one of the node's addresses", p.PublicIP)
	}
	return p, nil
}

func maskSize(n *net.IPNet) int {
	ones, _ := n.Mask.Size()
	return ones
}

// State is what the overlay's device should hold for its peers: one route
// per pod range, and per peer a neighbour entry (its overlay address to its
// VTEP MAC) and a forwarding entry (that MAC to its public IP). Keys are
// comparable strings.
type State struct {
	Routes map[string]Peer // pod CIDR
	Neigh  map[string]Peer // gateway IP|MAC
	FDB    map[string]Peer // MAC|public IP
}

// Desired computes the state for peers.
func Desired(peers []Peer) State {
	s := State{Routes: map[string]Peer{}, Neigh: map[string]Peer{}, FDB: map[string]Peer{}}
	for _, p := range peers {
		s.Routes[routeKey(p.PodCIDR, p.Gateway())] = p
		s.Neigh[neighKey(p.Gateway(), p.MAC)] = p
		s.FDB[neighKey(p.PublicIP, p.MAC)] = p
	}
	return s
}

func routeKey(dst *net.IPNet, gw net.IP) string { return dst.String() + "|" + gw.String() }

func neighKey(ip net.IP, mac net.HardwareAddr) string {
	return ip.String() + "|" + strings.ToLower(mac.String())
}

// apply makes the device's routes, neighbour and forwarding entries those of
// peers: it adds what is missing and deletes what is no longer wanted,
// touching nothing on other devices.
func apply(link netlink.Link, peers []Peer) error {
	want := Desired(peers)
	idx := link.Attrs().Index

	routes, err := netlink.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, r := range routes {
		if r.Dst == nil || r.Protocol == syscall.RTPROT_KERNEL {
			continue
		}
		k := routeKey(r.Dst, r.Gw)
		if _, ok := want.Routes[k]; !ok {
			if err := netlink.RouteDel(&r); err != nil {
				return fmt.Errorf("deleting route %s: %w", r.Dst, err)
			}
			continue
		}
		have[k] = true
	}
	for k, p := range want.Routes {
		if have[k] {
			continue
		}
		// Added, never replaced: a route the host already has (one the
		// node did not make) stays as it is.
		r := &netlink.Route{LinkIndex: idx, Dst: p.PodCIDR, Gw: p.Gateway(), Flags: int(netlink.FLAG_ONLINK)}
		if err := netlink.RouteAdd(r); errors.Is(err, syscall.EEXIST) {
			klog.InfoS("the host already routes a node's pod CIDR elsewhere; the overlay leaves that route alone", "node", p.Node, "podCIDR", p.PodCIDR)
		} else if err != nil {
			return fmt.Errorf("route to %s's pods %s: %w", p.Node, p.PodCIDR, err)
		}
	}

	if err := syncNeigh(idx, netlink.FAMILY_V4, want.Neigh, func(p Peer) *netlink.Neigh {
		return &netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: p.Gateway(), HardwareAddr: p.MAC}
	}); err != nil {
		return fmt.Errorf("neighbour entries: %w", err)
	}
	if err := syncNeigh(idx, syscall.AF_BRIDGE, want.FDB, func(p Peer) *netlink.Neigh {
		return &netlink.Neigh{LinkIndex: idx, Family: syscall.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, IP: p.PublicIP, HardwareAddr: p.MAC}
	}); err != nil {
		return fmt.Errorf("forwarding entries: %w", err)
	}
	return nil
}

// syncNeigh makes the device's permanent entries of a family those wanted.
func syncNeigh(idx, family int, want map[string]Peer, entry func(Peer) *netlink.Neigh) error {
	list, err := netlink.NeighList(idx, family)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, n := range list {
		if n.IP == nil || n.HardwareAddr == nil || n.State&netlink.NUD_PERMANENT == 0 {
			continue
		}
		k := neighKey(n.IP, n.HardwareAddr)
		if _, ok := want[k]; !ok {
			if err := netlink.NeighDel(&n); err != nil {
				return err
			}
			continue
		}
		have[k] = true
	}
	for k, p := range want {
		if !have[k] {
			if err := netlink.NeighSet(entry(p)); err != nil {
				return fmt.Errorf("%s: %w", p.Node, err)
			}
		}
	}
	return nil
}
