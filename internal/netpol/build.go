package netpol

import (
	"sort"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/skiff-dev/skiff/internal/nft"
)

// Build computes the table for all the cluster's pods, namespaces and
// network policies. Objects are only read.
func Build(st *Settings, pods []*v1.Pod, namespaces []*v1.Namespace, policies []*networkingv1.NetworkPolicy) *nft.Ruleset {
	idx := newIndex(st, pods, namespaces)
	policies = append([]*networkingv1.NetworkPolicy(nil), policies...)
	sort.Slice(policies, func(i, j int) bool {
		a, b := policies[i], policies[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})

	// Each local pod's policy chains, per direction, in policy order.
	jumps := map[*direction]map[*pod][]string{ingress: {}, egress: {}}
	var anyIngress, anyEgress bool
	var units []*nft.Unit
	for _, p := range policies {
		in, eg := policyTypes(p)
		anyIngress, anyEgress = anyIngress || in, anyEgress || eg
		c := compilePolicy(st, idx, p)
		units = append(units, c.unit)
		for d, targets := range c.targets {
			for _, q := range targets {
				jumps[d][q] = append(jumps[d][q], c.chains[d])
			}
		}
	}
	rs := &nft.Ruleset{Family: st.Family, Table: st.Table}
	rs.Chains, rs.Sets = fixedChains(st)
	rs.Units = append(rs.Units, unknownUnit(anyIngress, anyEgress))
	for _, q := range idx.pods {
		if u := podUnit(st, q, jumps[egress][q], jumps[ingress][q]); u != nil {
			rs.Units = append(rs.Units, u)
		}
	}
	rs.Units = append(rs.Units, units...)
	return rs
}

// podUnit is what pod q adds to the table: its address in the known pods,
// and, if q is local and policies restrict it, its chains and their
// entries in the verdict maps. Nil if nothing.
func podUnit(st *Settings, q *pod, egressJumps, ingressJumps []string) *nft.Unit {
	u := &nft.Unit{Key: keyPod + q.key}
	for _, n := range st.Local {
		if n.Contains(q.ip) {
			u.Members = append(u.Members, nft.Member{Set: setKnownPods, Key: string(q.ip)})
			break
		}
	}
	if q.local {
		for _, d := range []*direction{egress, ingress} {
			jumps := egressJumps
			if d == ingress {
				jumps = ingressJumps
			}
			if len(jumps) == 0 {
				continue // no policy selects q: unrestricted
			}
			name := hashName(d.podPrefix, q.key)
			rules := []nft.Rule{nft.NewRule(nft.SetMark(markAllow, false))}
			for _, j := range jumps {
				rules = append(rules, nft.NewRule(nft.Exprs(nft.Jump(j))))
			}
			rules = append(rules,
				nft.NewRule(nft.MarkBit(markAllow, false), nft.Exprs(nft.Goto(chainReject))),
				nft.NewRule(nft.SetMark(markAllow, false)))
			u.Chains = append(u.Chains, nft.NewChain(name, q.key+" "+d.name+" "+q.ip.String(), rules...))
			u.Elements = append(u.Elements, nft.Element{Set: d.podMap, Key: string(q.ip), Chain: name, Jump: true})
		}
	}
	if len(u.Members) == 0 && len(u.Chains) == 0 {
		return nil
	}
	sortUnit(u)
	return u
}
