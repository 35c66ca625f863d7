package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiff-dev/skiff/internal/nft"
)

// This file turns Services and EndpointSlices into the description of the
// table (a ruleset). It is pure: no kernel access.
//
// Layout of the table (names are stable; per-Service names are hashes):
//
//	nat-prerouting, nat-output (nat, -100)  -> services
//	nat-postrouting (nat, 100)              -> masquerading; pod egress masquerade
//	filter-input, -forward, -output (-110)  ct state new -> no-endpoints-check
//	filter-forward, filter-output-post-dnat (-90)  ct state new -> cluster-ips-check
//	services             daddr . proto . port vmap @service-ips,
//	                     local daddr: proto . port vmap @service-nodeports
//	no-endpoints-check   the same keys in @no-endpoint-ips / @no-endpoint-nodeports -> reject-new
//	cluster-ips-check    what is still addressed to the Service range after DNAT took
//	                     every Service port: a ClusterIP (@cluster-ips) -> reject-new,
//	                     an unallocated address dropped, so it never leaves the node
//	svc-H  all endpoints:   clusterIP masquerade, affinity, numgen random mod N vmap @svc-H
//	map svc-H              number -> goto ep-H (maps and chains have separate names)
//	lcl-H  node-local endpoints, the same (chain and map)
//	ext-H  NodePort / LoadBalancer / externalIP entry: masquerade or source shortcuts, then svc-H or lcl-H
//	fw-H   load balancer addresses of a Service with loadBalancerSourceRanges: those sources to ext-H, the rest dropped
//	ep-H   hairpin masquerade, affinity update, dnat
//	aff-H  per-endpoint dynamic set of client addresses (sessionAffinity ClientIP)

// Names of the table's fixed chains and maps.
const (
	chainNatPrerouting  = "nat-prerouting"
	chainNatOutput      = "nat-output"
	chainNatPostrouting = "nat-postrouting"
	chainFilterInput    = "filter-input"
	chainFilterForward  = "filter-forward"
	chainFilterOutput   = "filter-output"
	chainFilterPostDNAT = "filter-output-post-dnat"
	chainClusterIPs     = "cluster-ips-check"
	chainServices       = "services"
	chainNoEndpoints    = "no-endpoints-check"
	chainMarkMasq       = "mark-for-masquerade"
	chainMasquerading   = "masquerading"
	chainReject         = "reject-new"

	mapServiceIPs       = "service-ips"
	mapServiceNodePorts = "service-nodeports"
	mapNoEndpointIPs    = "no-endpoint-ips"
	mapNoEndpointPorts  = "no-endpoint-nodeports"
	mapClusterIPs       = "cluster-ips"

	// markMasq is the packet mark bit that asks nat postrouting to
	// masquerade.
	markMasq = 0x4000

	// defaultAffinityTimeout is the Kubernetes default of
	// sessionAffinityConfig.clientIP.timeoutSeconds.
	defaultAffinityTimeout = 10800 * time.Second
)

// settings are the parts of Config the rules depend on, parsed.
type settings struct {
	fam           *nft.Family
	table         string
	node          string
	clusterCIDR   *net.IPNet
	serviceCIDR   *net.IPNet   // nil: unknown
	nodePortCIDRs []*net.IPNet // nil: every local address but loopback
	bridge        string
	dnsService    types.NamespacedName
}

// ruleset describes the whole table: the fixed chains and maps, and a unit
// per Service port.
type ruleset struct {
	nft.Ruleset
	// conflicts are the addresses Services claimed that another one had.
	conflicts []string
}

// svcRules is what one Service port adds to the table, keyed
// namespace/name/protocol/port name or number.
type svcRules = nft.Unit

// endpoint is one usable backend of a Service port.
type endpoint struct {
	ip    net.IP
	port  uint16
	local bool
	addr  string // ip:port
}

func newEndpoint(ip net.IP, port uint16, local bool) endpoint {
	return endpoint{ip: ip, port: port, local: local, addr: net.JoinHostPort(ip.String(), strconv.Itoa(int(port)))}
}

func (e endpoint) String() string { return e.addr }

// hashName is prefix followed by 16 base32 characters of a hash of prefix
// and s: short, stable chain and set names.
func hashName(prefix, s string) string {
	sum := sha256.Sum256([]byte(prefix + s))
	return prefix + base32.StdEncoding.EncodeToString(sum[:10])
}

// modelCache keeps each Service's rules between syncs, with what they were
// computed from.
type modelCache map[types.NamespacedName]*cacheEntry

type cacheEntry struct {
	svc    *v1.Service
	rv     string
	slices []*discoveryv1.EndpointSlice
	dns    string
	out    []*svcRules
}

// same tells whether e was computed from the same objects as o. Objects
// are compared by identity (and resource version): like informers' caches,
// Sync's callers never modify an object they passed, they pass a new one.
func (e *cacheEntry) same(o *cacheEntry) bool {
	if e.svc != o.svc || e.rv != o.rv || e.dns != o.dns || len(e.slices) != len(o.slices) {
		return false
	}
	for i := range e.slices {
		if e.slices[i] != o.slices[i] || e.slices[i].ResourceVersion != o.slices[i].ResourceVersion {
			return false
		}
	}
	return true
}

// buildRuleset computes the table for services and slices. dnsAddr is the
// node's DNS address, or nil while it is unknown. With a cache, the rules
// of Services whose objects did not change since the last call are reused.
func buildRuleset(st *settings, services []*v1.Service, epSlices []*discoveryv1.EndpointSlice, dnsAddr net.IP, cache *modelCache) *ruleset {
	rs := &ruleset{Ruleset: nft.Ruleset{Family: st.fam, Table: st.table}}
	rs.Chains, rs.Sets = fixedChains(st)

	bySvc := map[types.NamespacedName][]*discoveryv1.EndpointSlice{}
	for _, s := range epSlices {
		name := s.Labels[discoveryv1.LabelServiceName]
		if name == "" || s.AddressType != addressType(st.fam) {
			continue
		}
		k := types.NamespacedName{Namespace: s.Namespace, Name: name}
		bySvc[k] = append(bySvc[k], s)
	}
	for _, list := range bySvc {
		if len(list) > 1 { // listers list in no particular order
			sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
		}
	}
	if dnsAddr != nil {
		dnsAddr = st.fam.Addr(dnsAddr)
	}
	var next modelCache
	if cache != nil {
		next = make(modelCache, len(services))
	}
	for _, svc := range services {
		k := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
		dns := st.dnsService.Name != "" && k == st.dnsService
		in := cacheEntry{svc: svc, rv: svc.ResourceVersion, slices: bySvc[k]}
		if dns {
			in.slices, in.dns = nil, dnsAddr.String()
		}
		var old *cacheEntry
		if cache != nil {
			old = (*cache)[k]
		}
		if old != nil && old.same(&in) {
			in.out = old.out
		} else {
			in.out = serviceRules(st, svc, in.slices, dns, dnsAddr)
		}
		if cache != nil {
			next[k] = &in
		}
		rs.Units = append(rs.Units, in.out...)
	}
	if cache != nil {
		*cache = next
	}
	sort.Slice(rs.Units, func(i, j int) bool { return rs.Units[i].Key < rs.Units[j].Key })
	rs.conflicts = dedupe(rs)
	return rs
}

// dedupe drops the map elements a Service port shares with one before it
// (two Services with the same external IP and port, say): the kernel would
// refuse the duplicate, and with it the whole sync. The first in key order
// keeps the address. It returns what it dropped, for logs.
func dedupe(rs *ruleset) []string {
	var dropped []string
	seen := make(map[string]string, 2*len(rs.Units)) // map group and key: owner
	for i, sv := range rs.Units {
		var keep []nft.Element
		copied := false
		for j, e := range sv.Elements {
			var group string
			switch e.Set {
			case mapServiceIPs, mapNoEndpointIPs: // one address goes to one place
				group = "ip"
			case mapServiceNodePorts, mapNoEndpointPorts:
				group = "port"
			case mapClusterIPs: // every port of a Service names its ClusterIP
				group = "cluster-ip"
			}
			if group != "" {
				k := group + e.Key
				if owner, ok := seen[k]; ok {
					if !copied {
						keep, copied = slices.Clone(sv.Elements[:j]), true
					}
					if group != "cluster-ip" || serviceOf(owner) != serviceOf(sv.Key) {
						dropped = append(dropped, sv.Key+": "+nft.FormatKey(fixedSetKey(rs, e.Set), []byte(e.Key))+" (taken by "+owner+")")
					}
					continue
				}
				seen[k] = sv.Key
			}
			if copied {
				keep = append(keep, e)
			}
		}
		if copied { // a copy: the original may be in the model cache
			c := *sv
			c.Elements = keep
			rs.Units[i] = &c
		}
	}
	return dropped
}

// serviceOf is the namespace/name part of a Service port's key.
func serviceOf(key string) string {
	ns, rest, _ := strings.Cut(key, "/")
	name, _, _ := strings.Cut(rest, "/")
	return ns + "/" + name
}

func fixedSetKey(rs *ruleset, name string) nftables.SetDatatype {
	for _, s := range rs.Sets {
		if s.Name == name {
			return s.Key
		}
	}
	return nftables.TypeInvalid
}

func addressType(f *nft.Family) discoveryv1.AddressType {
	if f.AddrLen == 4 {
		return discoveryv1.AddressTypeIPv4
	}
	return discoveryv1.AddressTypeIPv6
}

// fixedChains are the chains and maps that do not depend on Services.
func fixedChains(st *settings) ([]*nft.Chain, []*nft.Set) {
	f := st.fam
	var nodePorts, noEndpointPorts []nft.Rule
	if st.nodePortCIDRs == nil { // loopback is never a NodePort address unless asked for
		nodePorts = append(nodePorts, nft.NewRule(nft.FibLocal(true), f.DaddrIn(f.Loopback, true), nft.LookupProtoPort(mapServiceNodePorts)))
		noEndpointPorts = append(noEndpointPorts, nft.NewRule(nft.FibLocal(true), f.DaddrIn(f.Loopback, true), nft.LookupProtoPort(mapNoEndpointPorts)))
	}
	for _, n := range st.nodePortCIDRs {
		nodePorts = append(nodePorts, nft.NewRule(nft.FibLocal(true), f.DaddrIn(n, false), nft.LookupProtoPort(mapServiceNodePorts)))
		noEndpointPorts = append(noEndpointPorts, nft.NewRule(nft.FibLocal(true), f.DaddrIn(n, false), nft.LookupProtoPort(mapNoEndpointPorts)))
	}
	checkNew := nft.NewRule(nft.CtStateNew(), nft.Exprs(nft.Jump(chainNoEndpoints)))
	// After DNAT, only what no Service port took is still addressed to the
	// Service range, and it never follows the node's default route out.
	// As kube-proxy does, a ClusterIP's other ports and protocols are
	// refused, and the range's unallocated addresses dropped: a Service
	// created a moment ago, whose rules are on their way, then answers
	// the client's next try instead of refusing its first.
	checkClusterIPs := nft.NewRule(nft.CtStateNew(), nft.Exprs(nft.Jump(chainClusterIPs)))
	clusterIPRules := []nft.Rule{nft.NewRule(nft.Exprs(f.LoadDaddr(nft.Reg1),
		&expr.Lookup{SourceRegister: nft.Reg1, IsDestRegSet: true, DestRegister: nft.RegVerdict, SetName: mapClusterIPs}))}
	if st.serviceCIDR != nil {
		clusterIPRules = append(clusterIPRules, nft.NewRule(f.DaddrIn(st.serviceCIDR, false), nft.Exprs(nft.Verdict(expr.VerdictDrop))))
	}
	chains := []*nft.Chain{
		nft.BaseChain(chainNatPrerouting, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, -100, nft.NewRule(nft.Exprs(nft.Jump(chainServices)))),
		nft.BaseChain(chainNatOutput, nftables.ChainTypeNAT, nftables.ChainHookOutput, -100, nft.NewRule(nft.Exprs(nft.Jump(chainServices)))),
		nft.BaseChain(chainNatPostrouting, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, 100,
			nft.NewRule(nft.Exprs(nft.Jump(chainMasquerading))),
			// Pod egress: pods leaving the cluster network look like the node.
			nft.NewRule(f.SaddrIn(st.clusterCIDR, false), f.DaddrIn(st.clusterCIDR, true),
				nft.Exprs(&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: nft.Reg1}, nft.CmpNeq(nft.Reg1, nft.IfName(st.bridge)),
					&expr.Masq{FullyRandom: true}))),
		// Reject is only allowed in input, forward and output; -110 runs
		// before nat output (-100), so the node's own connections are
		// rejected before anything rewrites them.
		nft.BaseChain(chainFilterInput, nftables.ChainTypeFilter, nftables.ChainHookInput, -110, checkNew),
		nft.BaseChain(chainFilterForward, nftables.ChainTypeFilter, nftables.ChainHookForward, -110, checkNew, checkClusterIPs),
		nft.BaseChain(chainFilterOutput, nftables.ChainTypeFilter, nftables.ChainHookOutput, -110, checkNew),
		// -90: after nat output (-100) rewrote what goes to a Service.
		nft.BaseChain(chainFilterPostDNAT, nftables.ChainTypeFilter, nftables.ChainHookOutput, -90, checkClusterIPs),
		nft.NewChain(chainServices, "", append([]nft.Rule{nft.NewRule(f.LookupIPProtoPort(mapServiceIPs))}, nodePorts...)...),
		nft.NewChain(chainNoEndpoints, "", append([]nft.Rule{nft.NewRule(f.LookupIPProtoPort(mapNoEndpointIPs))}, noEndpointPorts...)...),
		nft.NewChain(chainClusterIPs, "", clusterIPRules...),
		nft.NewChain(chainMarkMasq, "", nft.NewRule(nft.SetMark(markMasq, true))),
		nft.NewChain(chainMasquerading, "", nft.MasqueradeMarked(markMasq)...),
		nft.NewChain(chainReject, "",
			nft.NewRule(nft.Exprs(nft.LoadL4proto(nft.Reg1), nft.CmpEq(nft.Reg1, []byte{nft.ProtoTCP}), &expr.Reject{Type: unix.NFT_REJECT_TCP_RST})),
			nft.NewRule(nft.Exprs(&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: f.PortUnreach}))),
	}
	ipKey := nft.TypeIPProtoPort
	if f.AddrLen != 4 {
		ipKey = nftables.MustConcatSetType(f.AddrType, nftables.TypeInetProto, nftables.TypeInetService)
	}
	// The address maps are keyed by ip . l4proto . port, the node port maps
	// by l4proto . port.
	sets := []*nft.Set{
		{Name: mapServiceIPs, Key: ipKey, IsMap: true},
		{Name: mapServiceNodePorts, Key: nft.TypeProtoPort, IsMap: true},
		{Name: mapNoEndpointIPs, Key: ipKey, IsMap: true},
		{Name: mapNoEndpointPorts, Key: nft.TypeProtoPort, IsMap: true},
		{Name: mapClusterIPs, Key: f.AddrType, IsMap: true},
	}
	return chains, sets
}

// serviceRules computes the rules of each port of svc.
func serviceRules(st *settings, svc *v1.Service, epSlices []*discoveryv1.EndpointSlice, dns bool, dnsAddr net.IP) []*svcRules {
	f := st.fam
	if svc.Spec.Type == v1.ServiceTypeExternalName || svc.Spec.ClusterIP == v1.ClusterIPNone {
		return nil
	}
	var clusterIP net.IP
	for _, s := range append([]string{svc.Spec.ClusterIP}, svc.Spec.ClusterIPs...) {
		if ip := f.Addr(net.ParseIP(s)); ip != nil {
			clusterIP = ip
			break
		}
	}
	if clusterIP == nil {
		return nil // not of this family, or not allocated yet
	}
	var extIPs []net.IP
	addExt := func(s string) {
		if ip := f.Addr(net.ParseIP(s)); ip != nil && !slices.ContainsFunc(extIPs, ip.Equal) {
			extIPs = append(extIPs, ip)
		}
	}
	for _, s := range svc.Spec.ExternalIPs {
		addExt(s)
	}
	var lbIPs []net.IP
	var sourceRanges []*net.IPNet
	if svc.Spec.Type == v1.ServiceTypeLoadBalancer {
		for _, in := range svc.Status.LoadBalancer.Ingress {
			// ipMode Proxy means the load balancer delivers to the node
			// with its own destination: the proxy must not capture the IP.
			if in.IPMode != nil && *in.IPMode == v1.LoadBalancerIPModeProxy {
				continue
			}
			addExt(in.IP)
			if ip := f.Addr(net.ParseIP(in.IP)); ip != nil {
				lbIPs = append(lbIPs, ip)
			}
		}
		// The API validates them; one of the other family is not ours.
		for _, c := range svc.Spec.LoadBalancerSourceRanges {
			if _, n, err := net.ParseCIDR(strings.TrimSpace(c)); err == nil && f.Addr(n.IP) != nil {
				sourceRanges = append(sourceRanges, n)
			}
		}
	}
	var affinity time.Duration
	if svc.Spec.SessionAffinity == v1.ServiceAffinityClientIP {
		affinity = defaultAffinityTimeout
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			affinity = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
		}
	}
	localExternal := svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal
	localInternal := svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == v1.ServiceInternalTrafficPolicyLocal

	var out []*svcRules
	for _, sp := range svc.Spec.Ports {
		proto, ok := nft.ProtocolNumber(string(sp.Protocol))
		if !ok {
			continue
		}
		var eps []candidate
		if dns {
			// The cluster DNS runs on every node: each node sends its
			// pods' queries to its own, whatever the API says.
			if dnsAddr != nil {
				port := sp.Port
				if sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal != 0 {
					port = sp.TargetPort.IntVal
				}
				eps = []candidate{{endpoint: newEndpoint(dnsAddr, uint16(port), true), ready: true}}
			}
		} else {
			eps = endpointsFor(st, epSlices, sp)
		}
		p := &portRules{
			st: st, key: portKey(svc, sp), name: svc.Namespace + "/" + svc.Name + ":" + portName(sp) + "/" + strings.ToLower(string(sp.Protocol)),
			proto: proto, port: uint16(sp.Port), nodePort: uint16(sp.NodePort),
			clusterIP: clusterIP, extIPs: extIPs, lbIPs: lbIPs, sourceRanges: sourceRanges, affinity: affinity,
			localInternal: localInternal, localExternal: localExternal,
		}
		p.all, p.local = usable(eps)
		out = append(out, p.build())
	}
	return out
}

func portName(sp v1.ServicePort) string {
	if sp.Name != "" {
		return sp.Name
	}
	return strconv.Itoa(int(sp.Port))
}

func portKey(svc *v1.Service, sp v1.ServicePort) string {
	return svc.Namespace + "/" + svc.Name + "/" + string(sp.Protocol) + "/" + portName(sp)
}

// candidate is an endpoint with its conditions.
type candidate struct {
	endpoint
	ready, servingTerminating bool
}

// endpointsFor collects the endpoints of service port sp from its slices.
// An address listed twice (slices overlap while they are rewritten) counts
// once, with the best of its conditions.
func endpointsFor(st *settings, epSlices []*discoveryv1.EndpointSlice, sp v1.ServicePort) []candidate {
	seen := map[string]int{}
	var out []candidate
	for _, s := range epSlices {
		var port *int32
		for _, p := range s.Ports {
			pproto := v1.ProtocolTCP
			if p.Protocol != nil {
				pproto = *p.Protocol
			}
			sproto := sp.Protocol
			if sproto == "" {
				sproto = v1.ProtocolTCP
			}
			if p.Port != nil && ptrString(p.Name) == sp.Name && pproto == sproto {
				port = p.Port
				break
			}
		}
		if port == nil || *port <= 0 || *port > 65535 {
			continue
		}
		for _, e := range s.Endpoints {
			ready := e.Conditions.Ready == nil || *e.Conditions.Ready
			serving := ready
			if e.Conditions.Serving != nil {
				serving = *e.Conditions.Serving
			}
			terminating := e.Conditions.Terminating != nil && *e.Conditions.Terminating
			local := e.NodeName != nil && *e.NodeName == st.node
			for _, a := range e.Addresses {
				ip := st.fam.Addr(net.ParseIP(a))
				if ip == nil {
					continue
				}
				c := candidate{endpoint: newEndpoint(ip, uint16(*port), local),
					ready: ready, servingTerminating: serving && terminating}
				if i, ok := seen[c.addr]; ok {
					out[i].ready = out[i].ready || c.ready
					out[i].servingTerminating = out[i].servingTerminating || c.servingTerminating
					out[i].local = out[i].local || c.local
					continue
				}
				seen[c.addr] = len(out)
				out = append(out, c)
			}
		}
	}
	return out
}

func ptrString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// usable picks the endpoints traffic may go to: the ready ones, or if there
// are none, those that still serve while terminating. The node-local ones
// are picked the same way among themselves.
func usable(in []candidate) (all, local []endpoint) {
	pick := func(onlyLocal bool) []endpoint {
		var ready, term []endpoint
		for _, c := range in {
			if onlyLocal && !c.local {
				continue
			}
			if c.ready {
				ready = append(ready, c.endpoint)
			} else if c.servingTerminating {
				term = append(term, c.endpoint)
			}
		}
		if len(ready) == 0 {
			ready = term
		}
		sort.Slice(ready, func(i, j int) bool {
			if c := bytes.Compare(ready[i].ip, ready[j].ip); c != 0 {
				return c < 0
			}
			return ready[i].port < ready[j].port
		})
		return ready
	}
	return pick(false), pick(true)
}

// Prefixes of the endpoint selection chains.
const (
	svcPrefix = "svc-"
	lclPrefix = "lcl-"
)

// portRules builds the rules of one Service port.
type portRules struct {
	st                           *settings
	key, name                    string
	proto                        uint8
	port, nodePort               uint16
	clusterIP                    net.IP
	extIPs                       []net.IP
	lbIPs                        []net.IP     // those of extIPs that are the load balancer's
	sourceRanges                 []*net.IPNet // the clients the load balancer addresses take; none: all
	affinity                     time.Duration
	localInternal, localExternal bool
	all, local                   []endpoint
	out                          *svcRules
	eps                          map[string]string // endpoint chains made, by address
}

func (p *portRules) build() *svcRules {
	p.out = &svcRules{Key: p.key}
	p.eps = make(map[string]string, len(p.all))
	svcChain, lclChain, extChain := hashName(svcPrefix, p.key), hashName(lclPrefix, p.key), hashName("ext-", p.key)
	fwChain := hashName("fw-", p.key)
	firewall := len(p.sourceRanges) > 0 && len(p.lbIPs) > 0 && len(p.all) > 0

	// Internal traffic: the ClusterIP.
	internal, internalChain := p.all, svcChain
	if p.localInternal {
		internal, internalChain = p.local, lclChain
	}
	clusterKey := nft.IPProtoPortKey(p.clusterIP, p.proto, p.port)
	p.elem(mapClusterIPs, string(p.clusterIP), chainReject)
	if len(internal) == 0 {
		p.elem(mapNoEndpointIPs, clusterKey, chainReject)
	} else {
		p.elem(mapServiceIPs, clusterKey, internalChain)
	}

	// External traffic: node ports, load balancer and external IPs.
	external := p.nodePort != 0 || len(p.extIPs) > 0
	if external {
		target := extChain
		m, mp := mapServiceIPs, mapServiceNodePorts
		if len(p.all) == 0 {
			target, m, mp = chainReject, mapNoEndpointIPs, mapNoEndpointPorts
		}
		for _, ip := range p.extIPs {
			if firewall && slices.ContainsFunc(p.lbIPs, ip.Equal) {
				p.elem(m, nft.IPProtoPortKey(ip, p.proto, p.port), fwChain)
				continue
			}
			p.elem(m, nft.IPProtoPortKey(ip, p.proto, p.port), target)
		}
		if p.nodePort != 0 {
			p.elem(mp, nft.ProtoPortKey(p.proto, p.nodePort), target)
		}
	}
	external = external && len(p.all) > 0

	// Endpoint selection chains, made when something goes to them.
	needSvc := len(p.all) > 0 && ((!p.localInternal) || external)
	needLcl := len(p.local) > 0 && (p.localInternal || (external && p.localExternal))
	if needSvc {
		p.selectChain(svcPrefix, "all endpoints", p.all, !p.localInternal)
	}
	if needLcl {
		p.selectChain(lclPrefix, "node-local endpoints", p.local, p.localInternal)
	}
	if external {
		f := p.st.fam
		var rules []nft.Rule
		if !p.localExternal {
			rules = append(rules, nft.NewRule(nft.Exprs(nft.Jump(chainMarkMasq))), nft.NewRule(nft.Exprs(nft.Goto(svcChain))))
		} else {
			// Pods and the node itself reach external addresses like
			// the ClusterIP; only outside clients are kept on this node,
			// with their source address.
			rules = append(rules,
				nft.NewRule(f.SaddrIn(p.st.clusterCIDR, false), nft.Exprs(nft.Goto(svcChain))),
				nft.NewRule(nft.FibLocal(false), nft.Exprs(nft.Jump(chainMarkMasq))),
				nft.NewRule(nft.FibLocal(false), nft.Exprs(nft.Goto(svcChain))))
			if len(p.local) > 0 {
				rules = append(rules, nft.NewRule(nft.Exprs(nft.Goto(lclChain))))
			} else {
				rules = append(rules, nft.NewRule(nft.Exprs(nft.Verdict(expr.VerdictDrop))))
			}
		}
		p.out.Chains = append(p.out.Chains, nft.NewChain(extChain, p.name+" external", rules...))
	}
	if firewall {
		// Only the first packet of a connection passes the nat hooks:
		// dropping it here keeps the connection from ever being made.
		var rules []nft.Rule
		for _, n := range p.sourceRanges {
			rules = append(rules, nft.NewRule(p.st.fam.SaddrIn(n, false), nft.Exprs(nft.Goto(extChain))))
		}
		rules = append(rules, nft.NewRule(nft.Exprs(nft.Verdict(expr.VerdictDrop))))
		p.out.Chains = append(p.out.Chains, nft.NewChain(fwChain, p.name+" load balancer source ranges", rules...))
	}
	// Entry chains first, then endpoints, for listings.
	rank := func(c *nft.Chain) int {
		switch c.Name[:3] {
		case "fw-", "ext":
			return 0
		case "svc":
			return 1
		case "lcl":
			return 2
		}
		return 3
	}
	sort.Slice(p.out.Chains, func(i, j int) bool {
		a, b := p.out.Chains[i], p.out.Chains[j]
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra < rb
		}
		return a.Name < b.Name
	})
	sort.Slice(p.out.Sets, func(i, j int) bool { return p.out.Sets[i].Name < p.out.Sets[j].Name })
	sort.Slice(p.out.Elements, func(i, j int) bool {
		a, b := p.out.Elements[i], p.out.Elements[j]
		if a.Set != b.Set {
			return a.Set < b.Set
		}
		return a.Key < b.Key
	})
	return p.out
}

func (p *portRules) elem(set, key, chain string) {
	p.out.Elements = append(p.out.Elements, nft.Element{Set: set, Key: key, Chain: chain})
}

// selectChain makes a chain that picks one of eps at random (sticking to
// the client's previous choice with session affinity). If internal, it is
// where the ClusterIP leads: connections from outside the cluster network
// (the node itself, hostNetwork pods) are masqueraded.
func (p *portRules) selectChain(prefix, what string, eps []endpoint, internal bool) {
	name := hashName(prefix, p.key)
	f := p.st.fam
	var rules []nft.Rule
	if internal {
		rules = append(rules, nft.NewRule(
			nft.Exprs(f.LoadDaddr(nft.Reg1), nft.CmpEq(nft.Reg1, p.clusterIP), nft.LoadL4proto(nft.Reg1), nft.CmpEq(nft.Reg1, []byte{p.proto}),
				nft.LoadDport(nft.Reg1), nft.CmpEq(nft.Reg1, nft.Port16(p.port))),
			f.SaddrIn(p.st.clusterCIDR, true),
			nft.Exprs(nft.Jump(chainMarkMasq))))
	}
	targets := make([]string, len(eps))
	for i, e := range eps {
		targets[i] = p.endpointChain(e)
	}
	if p.affinity > 0 {
		for i, e := range eps {
			rules = append(rules, nft.NewRule(nft.Exprs(f.LoadSaddr(nft.Reg1),
				&expr.Lookup{SourceRegister: nft.Reg1, SetName: p.affinitySet(e)},
				nft.Goto(targets[i]))))
		}
	}
	// The choice: a random number, looked up in the chain's own verdict
	// map (named like the chain). Not an anonymous map as nft would make:
	// the kernel takes twice as long to create those.
	p.out.Sets = append(p.out.Sets, &nft.Set{Name: name, Key: nftables.TypeInteger, IsMap: true})
	rules = append(rules, nft.NewRule(nft.Exprs(&expr.Numgen{Register: nft.Reg1, Modulus: uint32(len(eps)), Type: unix.NFT_NG_RANDOM},
		&expr.Lookup{SourceRegister: nft.Reg1, IsDestRegSet: true, DestRegister: nft.RegVerdict, SetName: name})))
	for i, t := range targets {
		p.elem(name, string(nft.Native32(uint32(i))), t)
	}
	p.out.Chains = append(p.out.Chains, nft.NewChain(name, p.name+" "+what, rules...))
}

func (p *portRules) affinitySet(e endpoint) string {
	return hashName("aff-", p.key+"/"+e.String()+"/"+strconv.FormatInt(int64(p.affinity/time.Second), 10))
}

// endpointChain makes (once) the chain that sends a connection to e.
func (p *portRules) endpointChain(e endpoint) string {
	if name, ok := p.eps[e.addr]; ok {
		return name
	}
	name := hashName("ep-", p.key+"/"+e.addr)
	p.eps[e.addr] = name
	f := p.st.fam
	rules := []nft.Rule{
		// Hairpin: an endpoint reaching itself through the Service.
		nft.NewRule(nft.Exprs(f.LoadSaddr(nft.Reg1), nft.CmpEq(nft.Reg1, e.ip), nft.Jump(chainMarkMasq))),
	}
	if p.affinity > 0 {
		aff := p.affinitySet(e)
		p.out.Sets = append(p.out.Sets, &nft.Set{Name: aff, Key: f.AddrType, Timeout: p.affinity})
		rules = append(rules, nft.NewRule(nft.Exprs(f.LoadSaddr(nft.Reg1),
			&expr.Dynset{SrcRegKey: nft.Reg1, SetName: aff, Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: p.affinity})))
	}
	rules = append(rules, nft.NewRule(nft.Exprs(nft.LoadL4proto(nft.Reg1), nft.CmpEq(nft.Reg1, []byte{p.proto}),
		&expr.Immediate{Register: nft.Reg1, Data: e.ip},
		&expr.Immediate{Register: nft.Reg2, Data: nft.Port16(e.port)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: f.NFProto, RegAddrMin: nft.Reg1, RegProtoMin: nft.Reg2, Specified: true})))
	p.out.Chains = append(p.out.Chains, nft.NewChain(name, p.name+" endpoint "+e.String(), rules...))
	return name
}
