package netpol

import (
	"net/netip"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiff-dev/skiff/internal/nft"
)

// direction is ingress or egress.
type direction struct {
	name         string // for keys and comments
	policyPrefix string // of the policy's chain
	podPrefix    string // of the pod's chain
	podMap       string
}

var (
	ingress = &direction{name: "ingress", policyPrefix: prefixPolicyIngress, podPrefix: prefixPodIngress, podMap: mapIngressPods}
	egress  = &direction{name: "egress", policyPrefix: prefixPolicyEgress, podPrefix: prefixPodEgress, podMap: mapEgressPods}
)

// policyTypes says which directions p restricts. Without policyTypes (the
// API server fills them in, but objects made elsewhere may lack them), a
// policy restricts ingress, and egress if it has egress rules.
func policyTypes(p *networkingv1.NetworkPolicy) (in, eg bool) {
	if len(p.Spec.PolicyTypes) == 0 {
		return true, len(p.Spec.Egress) > 0
	}
	for _, t := range p.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			in = true
		case networkingv1.PolicyTypeEgress:
			eg = true
		}
	}
	return in, eg
}

// compiled is a policy's unit, with the local pods it restricts (their
// keys).
type compiled struct {
	unit    *nft.Unit
	targets map[*direction][]string
	chains  map[*direction]string
}

// rule is one ingress or egress rule, direction-neutral.
type rule struct {
	peers []networkingv1.NetworkPolicyPeer
	ports []networkingv1.NetworkPolicyPort
}

// compilePolicy makes the unit of policy p.
func compilePolicy(st *Settings, idx *index, p *networkingv1.NetworkPolicy) *compiled {
	key := p.Namespace + "/" + p.Name
	c := &compiled{unit: &nft.Unit{Key: keyPolicy + key}, targets: map[*direction][]string{}, chains: map[*direction]string{}}
	in, eg := policyTypes(p)
	sel := selector(&p.Spec.PodSelector)
	var selected []*pod
	for _, q := range idx.byNS[p.Namespace] {
		if q.local && sel.Matches(q.labels) {
			selected = append(selected, q)
		}
	}
	if in {
		var rules []rule
		for _, r := range p.Spec.Ingress {
			rules = append(rules, rule{r.From, r.Ports})
		}
		c.direction(st, idx, ingress, key, p.Namespace, rules, selected)
	}
	if eg {
		var rules []rule
		for _, r := range p.Spec.Egress {
			rules = append(rules, rule{r.To, r.Ports})
		}
		c.direction(st, idx, egress, key, p.Namespace, rules, selected)
	}
	sortUnit(c.unit)
	return c
}

// direction adds the chain of one direction of the policy, and its sets.
func (c *compiled) direction(st *Settings, idx *index, d *direction, key, ns string, rules []rule, targets []*pod) {
	f := st.Family
	name := hashName(d.policyPrefix, key)
	c.chains[d] = name
	for _, q := range targets {
		c.targets[d] = append(c.targets[d], q.key)
	}
	load := f.LoadDaddr(nft.Reg1) // the peer is the destination
	if d == ingress {
		load = f.LoadSaddr(nft.Reg1)
	}
	allow := nft.Exprs(nft.SetMark(markAllow, true)...)
	allow = append(allow, nft.Verdict(expr.VerdictReturn))
	var nrules []nft.Rule
	for i, r := range rules {
		rkey := key + "/" + d.name + "/" + strconv.Itoa(i)
		all, numeric, named := parsePorts(r.ports)
		// Egress named ports match addresses through their own set: the
		// peer sets are only for port numbers.
		addrSets := d == ingress || all || len(numeric) > 0

		// The peers: addresses of selected pods, ipBlocks, or anything.
		var addrs [][]expr.Any
		var peerPods []*pod // selected pods and pods in ipBlocks, for egress named ports
		var blocks []addrRange
		selectors, ipBlocks := false, false
		for _, peer := range r.peers {
			if peer.PodSelector != nil || peer.NamespaceSelector != nil {
				selectors = true
				peerPods = append(peerPods, idx.peerPods(ns, peer)...)
			}
			if peer.IPBlock != nil {
				ipBlocks = true
				blocks = append(blocks, blockRanges(f, peer.IPBlock)...)
			}
		}
		if len(r.peers) == 0 {
			addrs = [][]expr.Any{nil}
			peerPods = idx.pods
		}
		if selectors && addrSets {
			set := hashName(prefixSetPods, rkey)
			c.unit.Sets = append(c.unit.Sets, &nft.Set{Name: set, Key: f.AddrType})
			seen := map[string]bool{}
			for _, q := range peerPods {
				if !seen[string(q.ip)] {
					seen[string(q.ip)] = true
					c.unit.Members = append(c.unit.Members, nft.Member{Set: set, Key: string(q.ip)})
				}
			}
			addrs = append(addrs, nft.Exprs(load, nft.Lookup(nft.Reg1, set, false)))
		}
		if ipBlocks && addrSets {
			set := hashName(prefixSetCIDRs, rkey)
			c.unit.Sets = append(c.unit.Sets, &nft.Set{Name: set, Key: f.AddrType, Interval: true})
			c.unit.Members = append(c.unit.Members, rangeMembers(set, blocks)...)
			addrs = append(addrs, nft.Exprs(load, nft.Lookup(nft.Reg1, set, false)))
		}
		if ipBlocks && d == egress && len(named) > 0 {
			// A named port of an ipBlock peer is that of the pods in it.
			for _, q := range idx.pods {
				if a, ok := netip.AddrFromSlice(q.ip); ok && inRanges(a, blocks) {
					peerPods = append(peerPods, q)
				}
			}
		}

		// The ports: numbers and ranges inline, names through a set.
		if all {
			numeric = [][]expr.Any{nil}
		}
		for _, a := range addrs {
			for _, pm := range numeric {
				nrules = append(nrules, nft.NewRule(a, pm, allow))
			}
		}
		if len(named) > 0 {
			set := hashName(prefixSetNamed, rkey)
			c.unit.Sets = append(c.unit.Sets, &nft.Set{Name: set, Key: ipProtoPort(f)})
			// Named ports resolve on the pod the connection goes to: the
			// target for ingress, each peer pod for egress.
			resolveOn := targets
			if d == egress {
				resolveOn = peerPods
			}
			seen := map[string]bool{}
			for _, q := range resolveOn {
				for _, np := range named {
					for _, cp := range q.ports {
						if cp.Name == np.name && protoNumber(cp.Protocol) == np.proto && cp.ContainerPort > 0 && cp.ContainerPort < 65536 {
							k := nft.IPProtoPortKey(q.ip, np.proto, uint16(cp.ContainerPort))
							if !seen[k] {
								seen[k] = true
								c.unit.Members = append(c.unit.Members, nft.Member{Set: set, Key: k})
							}
						}
					}
				}
			}
			lookup := f.LookupDaddrProtoPort(set)
			if d == egress {
				// The set holds the peers' addresses already.
				nrules = append(nrules, nft.NewRule(lookup, allow))
			} else {
				for _, a := range addrs {
					nrules = append(nrules, nft.NewRule(a, lookup, allow))
				}
			}
		}
	}
	comment := key + " " + d.name
	if len(rules) == 0 {
		comment += ": nothing allowed"
	}
	c.unit.Chains = append(c.unit.Chains, nft.NewChain(name, comment, nrules...))
}

func inRanges(a netip.Addr, rs []addrRange) bool {
	for _, r := range rs {
		if !a.Less(r.first) && !r.last.Less(a) {
			return true
		}
	}
	return false
}

func ipProtoPort(f *nft.Family) nftables.SetDatatype {
	if f.AddrLen == 4 {
		return nft.TypeIPProtoPort
	}
	return nftables.MustConcatSetType(f.AddrType, nftables.TypeInetProto, nftables.TypeInetService)
}

// namedPort is a port of a policy given by name.
type namedPort struct {
	name  string
	proto uint8
}

// protoNumber is the number of protocol p; 0 for one policies cannot name.
func protoNumber(p v1.Protocol) uint8 {
	switch p {
	case v1.ProtocolTCP, "":
		return nft.ProtoTCP
	case v1.ProtocolUDP:
		return nft.ProtoUDP
	case v1.ProtocolSCTP:
		return nft.ProtoSCTP
	}
	return 0
}

// parsePorts splits a rule's ports into matches on protocol and port
// numbers, and named ports. No ports at all: all matches everything.
func parsePorts(ports []networkingv1.NetworkPolicyPort) (all bool, numeric [][]expr.Any, named []namedPort) {
	if len(ports) == 0 {
		return true, nil, nil
	}
	for _, p := range ports {
		proto := v1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		n := protoNumber(proto)
		if n == 0 {
			continue // matches nothing
		}
		m := nft.Exprs(nft.LoadL4proto(nft.Reg1), nft.CmpEq(nft.Reg1, []byte{n}))
		switch {
		case p.Port == nil: // every port of the protocol
			numeric = append(numeric, m)
		case p.Port.Type == intstr.String:
			named = append(named, namedPort{p.Port.StrVal, n})
		case p.Port.IntVal <= 0 || p.Port.IntVal > 65535:
			continue
		case p.EndPort != nil && *p.EndPort > p.Port.IntVal:
			end := min(*p.EndPort, 65535)
			numeric = append(numeric, append(m, nft.LoadDport(nft.Reg1),
				nft.CmpGte(nft.Reg1, nft.Port16(uint16(p.Port.IntVal))), nft.CmpLte(nft.Reg1, nft.Port16(uint16(end)))))
		default:
			numeric = append(numeric, append(m, nft.LoadDport(nft.Reg1), nft.CmpEq(nft.Reg1, nft.Port16(uint16(p.Port.IntVal)))))
		}
	}
	return false, numeric, named
}
