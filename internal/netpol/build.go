package netpol

import (
	"crypto/sha256"
	"slices"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/skiff-dev/skiff/internal/nft"
)

// Build computes the table for all the cluster's pods, namespaces and
// network policies. Objects are only read.
func Build(st *Settings, pods []*v1.Pod, namespaces []*v1.Namespace, policies []*networkingv1.NetworkPolicy) *nft.Ruleset {
	return build(st, pods, namespaces, policies, nil)
}

// modelCache keeps each policy's and each pod's unit between builds, with
// what it was computed from, so that a sync after one change recomputes
// only what the change can reach.
//
// What a policy's unit depends on: the policy object; the pods of its
// namespace (its targets, its pod-selector peers, the named ports of its
// targets); and, if it is wide (a namespace selector, or egress to named
// ports, which resolve on any pod), every pod and namespace. Pods are
// compared by what policies see of them (see pod.sig), so the many status
// updates of a pod's life that change none of it (conditions, phase)
// recompute nothing.
type modelCache struct {
	policies map[string]*policyEntry
	pods     map[string]*podEntry
}

type policyEntry struct {
	obj   *networkingv1.NetworkPolicy
	rv    string
	stamp string
	out   *compiled
}

type podEntry struct {
	sig   string
	jumps string
	out   *nft.Unit
}

func build(st *Settings, pods []*v1.Pod, namespaces []*v1.Namespace, policies []*networkingv1.NetworkPolicy, cache *modelCache) *nft.Ruleset {
	idx := newIndex(st, pods, namespaces)
	// In the order of their units' keys, "namespace/name": partial writes
	// walk the units in key order (a namespace may be the start of
	// another's name: "web/x" sorts after "web-2/y").
	policies = slices.Clone(policies)
	sort.Slice(policies, func(i, j int) bool {
		return policies[i].Namespace+"/"+policies[i].Name < policies[j].Namespace+"/"+policies[j].Name
	})
	var next modelCache
	if cache != nil {
		next = modelCache{policies: make(map[string]*policyEntry, len(policies)), pods: make(map[string]*podEntry, len(idx.pods))}
	}

	// Each local pod's policy chains, per direction, in policy order.
	jumps := map[*direction]map[string][]string{ingress: {}, egress: {}}
	var anyIngress bool
	var units []*nft.Unit
	for _, p := range policies {
		in, _ := policyTypes(p)
		anyIngress = anyIngress || in
		key := p.Namespace + "/" + p.Name
		var c *compiled
		if cache != nil {
			e := &policyEntry{obj: p, rv: p.ResourceVersion}
			if wide(p) {
				e.stamp = idx.stamp()
			} else {
				e.stamp = idx.nsStamp(p.Namespace)
			}
			if old := cache.policies[key]; old != nil && old.obj == p && old.rv == e.rv && old.stamp == e.stamp {
				e.out = old.out
			} else {
				e.out = compilePolicy(st, idx, p)
			}
			next.policies[key] = e
			c = e.out
		} else {
			c = compilePolicy(st, idx, p)
		}
		units = append(units, c.unit)
		for d, targets := range c.targets {
			for _, q := range targets {
				jumps[d][q] = append(jumps[d][q], c.chains[d])
			}
		}
	}
	rs := &nft.Ruleset{Family: st.Family, Table: st.Table}
	rs.Chains, rs.Sets = fixedChains(st)
	rs.Units = append(rs.Units, unknownUnit(anyIngress))
	for _, q := range idx.pods {
		eg, in := jumps[egress][q.key], jumps[ingress][q.key]
		var u *nft.Unit
		if cache != nil {
			e := &podEntry{sig: q.sig(), jumps: strings.Join(eg, " ") + "|" + strings.Join(in, " ")}
			if old := cache.pods[q.key]; old != nil && old.sig == e.sig && old.jumps == e.jumps {
				e.out = old.out
			} else {
				e.out = podUnit(st, q, eg, in)
			}
			next.pods[q.key] = e
			u = e.out
		} else {
			u = podUnit(st, q, eg, in)
		}
		if u != nil {
			rs.Units = append(rs.Units, u)
		}
	}
	rs.Units = append(rs.Units, units...)
	if cache != nil {
		*cache = next
	}
	return rs
}

// wide tells whether policy p's unit may depend on pods and namespaces
// other than its own namespace's pods.
func wide(p *networkingv1.NetworkPolicy) bool {
	for _, r := range p.Spec.Ingress {
		for _, peer := range r.From {
			if peer.NamespaceSelector != nil {
				return true
			}
		}
	}
	for _, r := range p.Spec.Egress {
		for _, peer := range r.To {
			if peer.NamespaceSelector != nil {
				return true
			}
		}
		for _, port := range r.Ports {
			if port.Port != nil && port.Port.StrVal != "" {
				return true
			}
		}
	}
	return false
}

// nsStamp sums up what policies see of the pods of namespace ns.
func (idx *index) nsStamp(ns string) string {
	if s, ok := idx.nsStamps[ns]; ok {
		return s
	}
	h := sha256.New()
	for _, q := range idx.byNS[ns] {
		h.Write([]byte(q.sig()))
		h.Write([]byte{0})
	}
	s := string(h.Sum(nil))
	idx.nsStamps[ns] = s
	return s
}

// stamp sums up what policies see of all pods and namespaces.
func (idx *index) stamp() string {
	if idx.allStamp != "" {
		return idx.allStamp
	}
	h := sha256.New()
	for _, q := range idx.pods {
		h.Write([]byte(q.sig()))
		h.Write([]byte{0})
	}
	names := make([]string, 0, len(idx.nsLabels))
	for n := range idx.nsLabels {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		h.Write([]byte(n + "\x01" + idx.nsLabels[n].String() + "\x00"))
	}
	idx.allStamp = string(h.Sum(nil))
	return idx.allStamp
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
