package netpol

import (
	"net/netip"
	"sort"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/skiff-dev/skiff/internal/nft"
)

// addrRange is the addresses from first to last, both included.
type addrRange struct{ first, last netip.Addr }

// The kernel's interval sets take disjoint ranges only, and a range of an
// ipBlock less its excepts is not something net/netip (or any library the
// module has) computes: the few lines below do, on netip's ordered
// addresses.

// prefixRange is the range of prefix p.
func prefixRange(p netip.Prefix) addrRange {
	p = p.Masked()
	first := p.Addr()
	b := first.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ := netip.AddrFromSlice(b)
	return addrRange{first, last}
}

// subtract removes x from each of rs.
func subtract(rs []addrRange, x addrRange) []addrRange {
	var out []addrRange
	for _, r := range rs {
		if x.last.Less(r.first) || r.last.Less(x.first) {
			out = append(out, r) // apart
			continue
		}
		if r.first.Less(x.first) {
			out = append(out, addrRange{r.first, x.first.Prev()})
		}
		if x.last.Less(r.last) {
			out = append(out, addrRange{x.last.Next(), r.last})
		}
	}
	return out
}

// merge sorts rs and joins those that overlap or touch.
func merge(rs []addrRange) []addrRange {
	sort.Slice(rs, func(i, j int) bool { return rs[i].first.Less(rs[j].first) })
	var out []addrRange
	for _, r := range rs {
		if n := len(out); n > 0 {
			last := &out[n-1]
			next := last.last.Next()
			if next.IsValid() && next.Less(r.first) { // a gap: next is not in either
				out = append(out, r)
				continue
			}
			if last.last.Less(r.last) {
				last.last = r.last
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// blockRanges are the addresses of the family that ipBlock b matches: its
// CIDR less its excepts. A CIDR of another family matches none.
func blockRanges(f *nft.Family, b *networkingv1.IPBlock) []addrRange {
	p, err := netip.ParsePrefix(b.CIDR)
	if err != nil || (p.Addr().Is4() != (f.AddrLen == 4)) {
		return nil
	}
	rs := []addrRange{prefixRange(p)}
	for _, e := range b.Except {
		if x, err := netip.ParsePrefix(e); err == nil && x.Addr().Is4() == p.Addr().Is4() {
			rs = subtract(rs, prefixRange(x))
		}
	}
	return rs
}

// rangeMembers are the members of interval set set for rs (merged).
func rangeMembers(set string, rs []addrRange) []nft.Member {
	var out []nft.Member
	for _, r := range merge(rs) {
		m := nft.Member{Set: set, Key: string(r.first.AsSlice())}
		if end := r.last.Next(); end.IsValid() {
			m.End = string(end.AsSlice())
		}
		out = append(out, m)
	}
	return out
}
