package cni

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ensureBridge creates the pod bridge name with the pod network's gateway
// address (the first address of podCIDR, as the bridge plugin's host-local
// IPAM picks it), so that the node's DNS can listen there before the first pod
// starts; the bridge plugin adopts it. It also turns on what pods' traffic
// through Services needs: IPv4 forwarding, and bridged packets passing
// through netfilter so that replies between pods on one bridge are un-NATed.
func ensureBridge(name, podCIDR string) (net.IP, error) {
	_, ipnet, err := net.ParseCIDR(podCIDR)
	if err != nil {
		return nil, fmt.Errorf("node pod CIDR %q: %w", podCIDR, err)
	}
	gw := Gateway(ipnet)
	link, err := netlink.LinkByName(name)
	if _, notFound := err.(netlink.LinkNotFoundError); notFound {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
		if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("creating bridge %s: %w", name, err)
		}
		link, err = netlink.LinkByName(name)
	}
	if err != nil {
		return nil, fmt.Errorf("bridge %s: %w", name, err)
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return nil, fmt.Errorf("%s exists but is a %s, not a bridge: delete it (ip link del %s)", name, link.Type(), name)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: gw, Mask: ipnet.Mask}}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return nil, fmt.Errorf("address %s on %s: %w", addr.IPNet, name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("bringing %s up: %w", name, err)
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return nil, fmt.Errorf("enabling IPv4 forwarding: %w", err)
	}
	const bridgeNF = "/proc/sys/net/bridge/bridge-nf-call-iptables"
	if err := os.WriteFile(bridgeNF, []byte("1"), 0o644); err != nil {
		return nil, fmt.Errorf("%s: %w (load the br_netfilter module: modprobe br_netfilter)", bridgeNF, err)
	}
	return gw, nil
}

// Gateway returns the first address of a network: a pod network's gateway,
// a service network's kubernetes Service IP.
func Gateway(n *net.IPNet) net.IP {
	p, _ := netip.ParsePrefix(n.String())
	return net.IP(p.Masked().Addr().Next().AsSlice())
}

// RemoveBridge deletes the pod bridge name, if there is one.
func RemoveBridge(name string) error {
	link, err := netlink.LinkByName(name)
	if _, notFound := err.(netlink.LinkNotFoundError); notFound {
		return nil
	}
	if err != nil {
		return err
	}
	return netlink.LinkDel(link)
}

// CheckRange makes sure the pod network cidr is not routed already through
// another interface than own (the node's bridge and overlay device): another
// cluster's bridge on this host, most likely, whose pods would collide with
// this one's. A broader route (a LAN's 10.0.0.0/8, say) is no conflict: the
// node's routes are more specific.
func CheckRange(cidr *net.IPNet, own ...string) error {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("listing routes: %w", err)
	}
	ones, _ := cidr.Mask.Size()
	for _, r := range routes {
		if r.Dst == nil || !cidr.Contains(r.Dst.IP) {
			continue
		}
		if n, _ := r.Dst.Mask.Size(); n < ones {
			continue
		}
		link, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil || slices.Contains(own, link.Attrs().Name) {
			continue
		}
		return fmt.Errorf("this host already routes %s through %s", r.Dst, link.Attrs().Name)
	}
	return nil
}
