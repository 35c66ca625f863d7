package hostport

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	v1 "k8s.io/api/core/v1"

	"github.com/skiff-dev/skiff/internal/nft"
)

// This file turns the pods of this node into the description of the table.
// It is pure: no kernel access.
//
// Layout of the table:
//
//	nat-prerouting, nat-output (nat, -100)  -> hostports
//	nat-postrouting (nat, 100)              hairpin: marked connections masqueraded
//	filter-input (filter, 0)                loopback destinations only from loopback or through DNAT
//	hostports   daddr . proto . port vmap @hostip-ports   (a pod's hostIP)
//	            local daddr but loopback: proto . port vmap @hostports   (no hostIP)
//	hp-H        one mapping: hairpin mark, dnat to the pod's address and port

const (
	chainNatPrerouting  = "nat-prerouting"
	chainNatOutput      = "nat-output"
	chainNatPostrouting = "nat-postrouting"
	chainFilterInput    = "filter-input"
	chainHostPorts      = "hostports"

	mapAnyAddress = "hostports"
	mapHostIP     = "hostip-ports"

	// markHairpin asks nat postrouting to masquerade a connection from a
	// pod to its own hostPort: without it the pod would get a packet from
	// its own address, which its kernel drops. Another bit than the
	// Service proxy's 0x4000.
	markHairpin = 0x2000
)

// mapping is one hostPort of one pod.
type mapping struct {
	pod      string // namespace/name
	hostIP   net.IP // nil: every address of the node but loopback
	proto    uint8
	protocol v1.Protocol
	hostPort uint16
	podIP    net.IP
	podPort  uint16
}

func (m mapping) String() string {
	ip := "*"
	if m.hostIP != nil {
		ip = m.hostIP.String()
	}
	return fmt.Sprintf("%s:%d/%s", ip, m.hostPort, m.protocol)
}

// Conflict is a hostPort a pod asked for that another pod of the node has.
type Conflict struct {
	Pod    *v1.Pod
	Port   string // hostIP:port/protocol
	Holder string // namespace/name of the pod that has it
}

// ruleset computes the table for pods, and the hostPorts they could not
// have. A pod gets its hostPorts once it has an address; it loses them
// when it ends. Two pods asking for the same address, port and protocol
// (a wildcard address overlaps every other): the older pod keeps it.
func ruleset(fam *nft.Family, table string, pods []*v1.Pod) (*nft.Ruleset, []Conflict) {
	rs := &nft.Ruleset{Family: fam, Table: table}
	rs.Chains, rs.Sets = fixedChains(fam)

	var candidates []*v1.Pod
	for _, p := range pods {
		if p.Spec.HostNetwork || p.Status.Phase == v1.PodSucceeded || p.Status.Phase == v1.PodFailed || podIP(fam, p) == nil {
			continue
		}
		candidates = append(candidates, p)
	}
	sort.Slice(candidates, func(i, j int) bool {
		a, b := candidates[i], candidates[j]
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	var conflicts []Conflict
	var taken []mapping
	for _, p := range candidates {
		for _, m := range mappings(fam, p) {
			if holder := overlapping(taken, m); holder != "" {
				conflicts = append(conflicts, Conflict{Pod: p, Port: m.String(), Holder: holder})
				continue
			}
			taken = append(taken, m)
			rs.Units = append(rs.Units, unit(fam, m))
		}
	}
	sort.Slice(rs.Units, func(i, j int) bool { return rs.Units[i].Key < rs.Units[j].Key })
	return rs, conflicts
}

// loopbackMapping tells whether rs serves a hostPort on a loopback hostIP.
func loopbackMapping(fam *nft.Family, rs *nft.Ruleset) bool {
	for _, u := range rs.Units {
		for _, e := range u.Elements {
			if e.Set == mapHostIP && fam.Loopback.Contains(net.IP(e.Key[:fam.AddrLen])) {
				return true
			}
		}
	}
	return false
}

// podIP is the pod's address of the family, or nil.
func podIP(fam *nft.Family, p *v1.Pod) net.IP {
	for _, s := range append([]string{p.Status.PodIP}, podIPs(p)...) {
		if ip := fam.Addr(net.ParseIP(s)); ip != nil {
			return ip
		}
	}
	return nil
}

func podIPs(p *v1.Pod) []string {
	out := make([]string, 0, len(p.Status.PodIPs))
	for _, ip := range p.Status.PodIPs {
		out = append(out, ip.IP)
	}
	return out
}

// mappings are the hostPorts of pod p, in the family's addresses. A hostIP
// of the other family is not this table's; 0.0.0.0 and :: mean every
// address.
func mappings(fam *nft.Family, p *v1.Pod) []mapping {
	ip := podIP(fam, p)
	var out []mapping
	seen := map[string]bool{}
	// The containers' ports, and those of sidecars (init containers that
	// keep running), as the kubelet counts them.
	containers := slices.Clone(p.Spec.Containers)
	for _, c := range p.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways {
			containers = append(containers, c)
		}
	}
	for _, c := range containers {
		for _, cp := range c.Ports {
			if cp.HostPort <= 0 || cp.HostPort > 65535 || cp.ContainerPort <= 0 || cp.ContainerPort > 65535 {
				continue
			}
			proto, ok := nft.ProtocolNumber(string(cp.Protocol))
			if !ok {
				continue
			}
			protocol := cp.Protocol
			if protocol == "" {
				protocol = v1.ProtocolTCP
			}
			m := mapping{pod: p.Namespace + "/" + p.Name, proto: proto, protocol: protocol,
				hostPort: uint16(cp.HostPort), podIP: ip, podPort: uint16(cp.ContainerPort)}
			if cp.HostIP != "" {
				hip := net.ParseIP(cp.HostIP)
				if hip == nil {
					continue
				}
				if !hip.IsUnspecified() {
					if m.hostIP = fam.Addr(hip); m.hostIP == nil {
						continue
					}
				}
			}
			if k := m.String(); !seen[k] {
				seen[k] = true
				out = append(out, m)
			}
		}
	}
	return out
}

// overlapping names the pod of a mapping in taken that m overlaps.
func overlapping(taken []mapping, m mapping) string {
	for _, t := range taken {
		if t.proto == m.proto && t.hostPort == m.hostPort &&
			(t.hostIP == nil || m.hostIP == nil || t.hostIP.Equal(m.hostIP)) {
			return t.pod
		}
	}
	return ""
}

// hashName is prefix followed by 16 base32 characters of a hash of s.
func hashName(prefix, s string) string {
	sum := sha256.Sum256([]byte(prefix + s))
	return prefix + base32.StdEncoding.EncodeToString(sum[:10])
}

// unit is what mapping m adds: its map element and its chain.
func unit(fam *nft.Family, m mapping) *nft.Unit {
	key := m.pod + "/" + m.String()
	chain := hashName("hp-", key+"/"+m.podIP.String()+":"+strconv.Itoa(int(m.podPort)))
	u := &nft.Unit{Key: key}
	if m.hostIP == nil {
		u.Elements = []nft.Element{{Set: mapAnyAddress, Key: nft.ProtoPortKey(m.proto, m.hostPort), Chain: chain}}
	} else {
		u.Elements = []nft.Element{{Set: mapHostIP, Key: nft.IPProtoPortKey(m.hostIP, m.proto, m.hostPort), Chain: chain}}
	}
	u.Chains = []*nft.Chain{nft.NewChain(chain, fmt.Sprintf("%s %s to %s:%d", m.pod, m, m.podIP, m.podPort),
		// Hairpin: the pod reaching its own hostPort.
		nft.NewRule(nft.Exprs(fam.LoadSaddr(nft.Reg1), nft.CmpEq(nft.Reg1, m.podIP)), nft.SetMark(markHairpin, true)),
		// The node reaching a hostPort on a loopback hostIP: the pod
		// cannot answer a loopback address.
		nft.NewRule(fam.SaddrIn(fam.Loopback, false), nft.SetMark(markHairpin, true)),
		nft.NewRule(nft.Exprs(nft.LoadL4proto(nft.Reg1), nft.CmpEq(nft.Reg1, []byte{m.proto}),
			&expr.Immediate{Register: nft.Reg1, Data: m.podIP},
			&expr.Immediate{Register: nft.Reg2, Data: nft.Port16(m.podPort)},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: fam.NFProto, RegAddrMin: nft.Reg1, RegProtoMin: nft.Reg2, Specified: true})))}
	return u
}

// fixedChains are the chains and maps that do not depend on pods.
func fixedChains(f *nft.Family) ([]*nft.Chain, []*nft.Set) {
	toHostPorts := nft.NewRule(nft.Exprs(nft.Jump(chainHostPorts)))
	chains := []*nft.Chain{
		nft.BaseChain(chainNatPrerouting, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, -100, toHostPorts),
		// The node's own connections to its addresses.
		nft.BaseChain(chainNatOutput, nftables.ChainTypeNAT, nftables.ChainHookOutput, -100, toHostPorts),
		nft.BaseChain(chainNatPostrouting, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, 100,
			nft.MasqueradeMarked(markHairpin)...),
		// Loopback is left out: a connection from 127.0.0.1 cannot be
		// routed to a pod.
		// A hostPort on a loopback hostIP (127.0.0.1) needs the pod
		// bridge to route loopback addresses (route_localnet): then
		// nothing but those connections may reach the node's loopback
		// from outside it, as kube-proxy guards it.
		nft.BaseChain(chainFilterInput, nftables.ChainTypeFilter, nftables.ChainHookInput, 0,
			nft.NewRule(f.DaddrIn(f.Loopback, false), f.SaddrIn(f.Loopback, true), nft.CtDNAT(true), nft.Exprs(nft.Verdict(expr.VerdictDrop)))),
		nft.NewChain(chainHostPorts, "",
			nft.NewRule(f.LookupIPProtoPort(mapHostIP)),
			nft.NewRule(nft.FibLocal(true), f.DaddrIn(f.Loopback, true), nft.LookupProtoPort(mapAnyAddress))),
	}
	ipKey := nftables.MustConcatSetType(f.AddrType, nftables.TypeInetProto, nftables.TypeInetService)
	sets := []*nft.Set{
		{Name: mapHostIP, Key: ipKey, IsMap: true},
		{Name: mapAnyAddress, Key: nft.TypeProtoPort, IsMap: true},
	}
	return chains, sets
}
