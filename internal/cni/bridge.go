package cni

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ensureBridge creates the pod bridge with the pod network's gateway address
// (the first address of podCIDR, as the bridge plugin's host-local IPAM
// picks it), so that the node's DNS can listen there before the first pod
// starts; the bridge plugin adopts it. It also turns on what pods' traffic
// through Services needs: IPv4 forwarding, and bridged packets passing
// through netfilter so that replies between pods on one bridge are un-NATed.
func ensureBridge(podCIDR string) (net.IP, error) {
	_, ipnet, err := net.ParseCIDR(podCIDR)
	if err != nil {
		return nil, fmt.Errorf("node pod CIDR %q: %w", podCIDR, err)
	}
	gw := Gateway(ipnet)
	link, err := netlink.LinkByName(Bridge)
	if _, notFound := err.(netlink.LinkNotFoundError); notFound {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: Bridge}}
		if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("creating bridge %s: %w", Bridge, err)
		}
		link, err = netlink.LinkByName(Bridge)
	}
	if err != nil {
		return nil, fmt.Errorf("bridge %s: %w", Bridge, err)
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return nil, fmt.Errorf("%s exists but is a %s, not a bridge: delete it (ip link del %s)", Bridge, link.Type(), Bridge)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: gw, Mask: ipnet.Mask}}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return nil, fmt.Errorf("address %s on %s: %w", addr.IPNet, Bridge, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("bringing %s up: %w", Bridge, err)
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

// RemoveBridge deletes the pod bridge, if there is one.
func RemoveBridge() error {
	link, err := netlink.LinkByName(Bridge)
	if _, notFound := err.(netlink.LinkNotFoundError); notFound {
		return nil
	}
	if err != nil {
		return err
	}
	return netlink.LinkDel(link)
}
