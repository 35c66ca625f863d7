package ingress

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Gateway addresses from a pool: without one, every Gateway shares the
// nodes' addresses, and the routes of Gateways on the same port merge.
// With one, each of our Gateways gets an address of its own, so that two
// Gateways with the same port and hostnames route apart. The assignment
// is computed from the objects alone, so every node computes the same:
//
//  1. a Gateway that asks for pool addresses in spec.addresses (type
//     IPAddress) gets them, oldest Gateway first, unless an older one has
//     them;
//  2. a Gateway whose status already has a pool address keeps it, so that
//     an address does not move while its Gateway lives;
//  3. the others get the lowest free address, oldest first.
//
// A Gateway left without one (the pool is used up, or it asked for an
// address outside the pool or taken) is not programmed, and says why.

// ParseAddressPool parses a comma-separated list of addresses and
// prefixes (192.0.2.10,192.0.2.16/30) into the addresses it holds,
// ascending. A prefix of more than 65536 addresses is refused.
func ParseAddressPool(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if !strings.Contains(part, "/") {
			a, err := netip.ParseAddr(part)
			if err != nil {
				return nil, fmt.Errorf("%q is neither an address nor a prefix: write 192.0.2.10 or 192.0.2.16/28", part)
			}
			if !seen[a.Unmap()] {
				seen[a.Unmap()] = true
				out = append(out, a.Unmap())
			}
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an address nor a prefix: write 192.0.2.10 or 192.0.2.16/28", part)
		}
		p = p.Masked()
		if p.Addr().BitLen()-p.Bits() > 16 {
			return nil, fmt.Errorf("prefix %s holds more than 65536 addresses: give a smaller one", p)
		}
		for a := p.Addr(); p.Contains(a); a = a.Next() {
			if !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

// assignAddresses fills GatewayAddresses from the pool for gws (ours,
// oldest first) and records why a Gateway got none in noAddress.
func (b *builder) assignAddresses(gws []*gatewayv1.Gateway) {
	if len(b.cfg.AddressPool) == 0 || b.cfg.GatewayAddresses != nil {
		return
	}
	inPool := map[netip.Addr]bool{}
	for _, a := range b.cfg.AddressPool {
		inPool[a] = true
	}
	taken := map[netip.Addr]bool{}
	got := map[types.NamespacedName][]string{}
	b.noAddress = map[types.NamespacedName]string{}
	// 1: addresses asked for.
	for _, gw := range gws {
		var asked []netip.Addr
		why := ""
		for _, sa := range gw.Spec.Addresses {
			if sa.Type != nil && *sa.Type != gatewayv1.IPAddressType {
				why = fmt.Sprintf("address type %s is not supported: ask for an IPAddress of the pool", *sa.Type)
				continue
			}
			a, err := netip.ParseAddr(sa.Value)
			switch {
			case err != nil:
				why = fmt.Sprintf("address %q is not an IP address", sa.Value)
			case !inPool[a.Unmap()]:
				why = fmt.Sprintf("address %s is not in the node's Gateway address pool", sa.Value)
			case taken[a.Unmap()]:
				why = fmt.Sprintf("address %s is taken by an older Gateway", sa.Value)
			default:
				asked = append(asked, a.Unmap())
			}
		}
		if len(gw.Spec.Addresses) == 0 {
			continue
		}
		if why != "" {
			b.noAddress[nsName(gw)] = why
			continue
		}
		for _, a := range asked {
			taken[a] = true
			got[nsName(gw)] = append(got[nsName(gw)], a.String())
		}
	}
	// 2: addresses kept.
	for _, gw := range gws {
		k := nsName(gw)
		if len(gw.Spec.Addresses) > 0 {
			continue
		}
		for _, sa := range gw.Status.Addresses {
			a, err := netip.ParseAddr(sa.Value)
			if err == nil && inPool[a.Unmap()] && !taken[a.Unmap()] {
				taken[a.Unmap()] = true
				got[k] = []string{a.Unmap().String()}
				break
			}
		}
	}
	// 3: the lowest free address.
	next := 0
	for _, gw := range gws {
		k := nsName(gw)
		if len(gw.Spec.Addresses) > 0 || got[k] != nil {
			continue
		}
		for next < len(b.cfg.AddressPool) && taken[b.cfg.AddressPool[next]] {
			next++
		}
		if next == len(b.cfg.AddressPool) {
			b.noAddress[k] = fmt.Sprintf("every address of the Gateway address pool (%d) is taken: give the node a larger pool", len(b.cfg.AddressPool))
			continue
		}
		a := b.cfg.AddressPool[next]
		taken[a] = true
		got[k] = []string{a.String()}
	}
	b.cfg.GatewayAddresses = got
}
