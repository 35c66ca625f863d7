// Package netpol enforces Kubernetes NetworkPolicies (networking.k8s.io/v1)
// with one nftables table. This file and its neighbours are the pure model:
// a function from Pods, Namespaces and NetworkPolicies to the description
// of the table (an nft.Ruleset, which nft.WriteFull and nft.WritePartial
// write, whole or as the difference from the previous one). They touch no
// kernel.
package netpol

import (
	"cmp"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/skiff-dev/skiff/internal/nft"
)

// Layout of the table (names are stable; per-pod and per-policy names are
// hashes of namespace/name):
//
//	forward (filter, hook forward, priority 0)
//	  ct state established,related,invalid accept
//	  ip saddr vmap @egress-pods                          -> jump eg-H
//	  ip daddr vmap @ingress-pods                         -> jump in-H
//	  ip daddr <local range> ip daddr != @known-pods      jump ingress-unknown
//	  (policy accept)
//	eg-H, in-H     a local pod selected by policies, per direction: clear the
//	               allow mark, jump to each policy's chain, goto reject unless
//	               one of them set the mark, clear it again (return)
//	peg-H, pin-H   a policy, per direction: one rule per peer kind and port
//	               entry of each of its rules; a match sets the allow mark and
//	               returns
//	set sp-H       pod addresses a rule's pod and namespace selectors match
//	set sc-H       (interval) a rule's ipBlocks, less their excepts
//	set sn-H       address . protocol . port: a rule's named ports, resolved
//	               on the target pods (ingress) or on the peer pods (egress)
//	reject         tcp reset, or icmp admin-prohibited
//	ingress-unknown  goto reject, when ingress policies exist
//
// Why this shape:
//
//   - The forward hook only: traffic the node itself sends or receives is
//     never filtered (as the API documents: a node always reaches its
//     pods). Priority 0 runs after the proxy's DNAT (prerouting, -100) and
//     after its own filter-forward (-110): Service traffic meets the
//     policies of the pod it reaches, with the client's address (SNAT comes
//     later, in postrouting).
//   - Established and related packets are accepted first: only the first
//     packet of a connection is judged, so connections keep going when
//     policies change, and replies need no rule.
//   - Traffic must be allowed by the source's egress and by the
//     destination's ingress. The egress check must return to the base
//     chain to let the ingress check run, so policy chains cannot accept:
//     they set markAllow and the per-pod chain looks at it. The proxy owns
//     mark bit 0x4000; the bit here is cleared before and after each check,
//     so it never leaves the chains set.
//   - Peer addresses are named sets, not rules: a pod's label change, or a
//     new pod, changes set elements and no chain.
//   - Refused connections are rejected, not dropped: clients fail fast.
//   - What never crosses the forward hook is never judged: the node's own
//     traffic to its pods (kubelet probes), hostNetwork pods on this node
//     (theirs is the node's traffic), and pods' DNS to the node's
//     in-process resolver (an address of the node, reached through the
//     input hook, also after the proxy's DNAT of the DNS Service).
//     hostNetwork pods of other nodes have their node's address: an ipBlock
//     may match it, a pod selector never does.
//
// Addresses of this node's pod range that no known pod has (knownPods) are
// a pod the model does not know yet: its sandbox got its address from the
// CNI plugin before its status reached this engine, or its pod object
// itself has not reached it. Nothing can tell which pod it is, nor even
// its namespace. The two directions are answered differently:
//
//   - Ingress: while any ingress policy exists in the cluster, an unknown
//     local address is reached by nothing (new connections are rejected
//     until the pod is known, a second or so; clients retry). This is the
//     only sound answer: a new pod is never reached in a way its policies
//     forbid, not even in its first second. With no ingress policy
//     anywhere, no pod could be restricted, and unknown addresses pass.
//   - Egress: an unknown local address is not restricted. Holding it back
//     would fail a new pod's first connections (its start-up: reaching
//     its database, an API) whenever any egress policy exists anywhere in
//     the cluster, though most pods have none. The cost is that a new pod
//     whose egress policies forbid a connection may open it in the second
//     before it is known; the connection's destination still judges it by
//     its ingress policies, in which the unknown address matches no pod
//     selector (only ipBlocks). Connections it opened then keep going
//     (established traffic is not judged again).
//
// Two pods claiming one address (a stale pod whose address was reused) are
// treated the same way: the address is unknown, and no selector peer
// matches it.

// Names of the table's fixed chains and sets.
const (
	chainForward        = "forward"
	chainReject         = "reject"
	chainIngressUnknown = "ingress-unknown"

	mapEgressPods  = "egress-pods"
	mapIngressPods = "ingress-pods"
	setKnownPods   = "known-pods"

	// markAllow is the packet mark bit a policy chain sets when it allows
	// a connection. The proxy uses 0x4000.
	markAllow = 0x10000

	// forwardPriority is the filter priority (NF_IP_PRI_FILTER).
	forwardPriority = 0
)

// Prefixes of per-pod and per-policy chains and sets.
const (
	prefixPodEgress     = "eg-"
	prefixPodIngress    = "in-"
	prefixPolicyEgress  = "peg-"
	prefixPolicyIngress = "pin-"
	prefixSetPods       = "sp-"
	prefixSetCIDRs      = "sc-"
	prefixSetNamed      = "sn-"
)

// Config describes the node's table.
type Config struct {
	NodeName string
	// Kubeconfig gives read access to pods, namespaces, network policies
	// and the node (the component only; Build does not use it).
	Kubeconfig string
	Table      string
	// ClusterCIDR is the pod network of the cluster.
	ClusterCIDR string
	// PodCIDRs is this node's pod range (the Node's spec.podCIDRs); its
	// addresses that no known pod has are not reached while ingress
	// policies exist (see above). Empty: the whole ClusterCIDR is treated
	// so, which also holds back new pods of other nodes until they are
	// known.
	PodCIDRs []string
}

// Settings are a Config, parsed, for one address family.
type Settings struct {
	Family *nft.Family
	Table  string
	Node   string
	// Local are the ranges whose unknown addresses are held back.
	Local []*net.IPNet
}

// Settings parses c for family fam.
func (c Config) Settings(fam *nft.Family) (*Settings, error) {
	if c.NodeName == "" || c.Table == "" {
		return nil, fmt.Errorf("netpol: a node name and a table name are needed")
	}
	st := &Settings{Family: fam, Table: c.Table, Node: c.NodeName}
	parse := func(s string) (*net.IPNet, error) {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("netpol: %w", err)
		}
		return fam.CIDR(n), nil // nil: another family's
	}
	for _, s := range c.PodCIDRs {
		n, err := parse(s)
		if err != nil {
			return nil, err
		}
		if n != nil {
			st.Local = append(st.Local, n)
		}
	}
	if len(st.Local) == 0 {
		// The cluster CIDR may list one range per family.
		for _, s := range strings.Split(c.ClusterCIDR, ",") {
			n, err := parse(strings.TrimSpace(s))
			if err != nil {
				return nil, err
			}
			if n != nil {
				st.Local = []*net.IPNet{n}
				break
			}
		}
		if len(st.Local) == 0 {
			return nil, fmt.Errorf("netpol: cluster CIDR %s has no range of family %s", c.ClusterCIDR, fam.Name)
		}
	}
	return st, nil
}

// Keys of units; the prefix orders them.
const (
	keyUnknown = "0 unknown"
	keyPod     = "1 pod "
	keyPolicy  = "2 policy "
)

// hashName is prefix followed by 16 base32 characters of a hash of prefix
// and s: short, stable chain and set names.
func hashName(prefix, s string) string {
	sum := sha256.Sum256([]byte(prefix + s))
	return prefix + base32.StdEncoding.EncodeToString(sum[:10])
}

// fixedChains are the table's own chains and sets.
func fixedChains(st *Settings) ([]*nft.Chain, []*nft.Set) {
	f := st.Family
	fwd := []nft.Rule{
		// Only the first packet of a connection is judged. A packet that
		// conntrack finds invalid (out of what it thinks is its
		// connection's window) is let through too, neither judged nor
		// dropped: conntrack's window tracking is known to misjudge live
		// connections (kube-proxy grew --conntrack-tcp-be-liberal for
		// it), a reset or a drop would end a connection a policy change
		// must leave alone, and such a packet opens no new connection on
		// the pod: its own TCP stack sorts it out.
		nft.NewRule(nft.CtStateIn(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED|expr.CtStateBitINVALID), nft.Exprs(nft.Verdict(expr.VerdictAccept))),
		nft.NewRule(nft.Exprs(f.LoadSaddr(nft.Reg1),
			&expr.Lookup{SourceRegister: nft.Reg1, IsDestRegSet: true, DestRegister: nft.RegVerdict, SetName: mapEgressPods})),
	}
	fwd = append(fwd, nft.NewRule(nft.Exprs(f.LoadDaddr(nft.Reg1),
		&expr.Lookup{SourceRegister: nft.Reg1, IsDestRegSet: true, DestRegister: nft.RegVerdict, SetName: mapIngressPods})))
	for _, n := range st.Local {
		// DaddrIn leaves the masked address in Reg1: the lookup loads it
		// again.
		fwd = append(fwd, nft.NewRule(f.DaddrIn(n, false),
			nft.Exprs(f.LoadDaddr(nft.Reg1), nft.Lookup(nft.Reg1, setKnownPods, true), nft.Jump(chainIngressUnknown))))
	}
	chains := []*nft.Chain{
		nft.BaseChain(chainForward, nftables.ChainTypeFilter, nftables.ChainHookForward, forwardPriority, fwd...),
		rejectChain(f),
	}
	sets := []*nft.Set{
		{Name: mapEgressPods, Key: f.AddrType, IsMap: true},
		{Name: mapIngressPods, Key: f.AddrType, IsMap: true},
		{Name: setKnownPods, Key: f.AddrType},
	}
	return chains, sets
}

// rejectChain refuses a connection: a TCP reset, or an ICMP
// "administratively prohibited". A connection whose destination the
// Service proxy rewrote gets the ICMP error whatever its protocol: the
// kernel writes the Service's address back into the error it quotes, so
// the client fails at once, where a reset would carry the pod's address,
// which the client's socket ignores.
func rejectChain(f *nft.Family) *nft.Chain {
	return nft.NewChain(chainReject, "",
		nft.NewRule(nft.CtDNAT(false), nft.Exprs(&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: f.AdminProhibited})),
		nft.NewRule(nft.Exprs(nft.LoadL4proto(nft.Reg1), nft.CmpEq(nft.Reg1, []byte{unix.IPPROTO_TCP}),
			&expr.Reject{Type: unix.NFT_REJECT_TCP_RST})),
		nft.NewRule(nft.Exprs(&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: f.AdminProhibited})))
}

// unknownUnit holds the chain of unknown destinations, which depends on
// whether any ingress policy exists (see above): a unit, not a fixed
// chain, so that the first ingress policy changes one chain and not the
// whole table.
func unknownUnit(restricted bool) *nft.Unit {
	c := nft.NewChain(chainIngressUnknown, "no ingress policy: unknown pods are not restricted")
	if restricted {
		c = nft.NewChain(chainIngressUnknown, "an address of this node's pods no known pod has",
			nft.NewRule(nft.Exprs(nft.Goto(chainReject))))
	}
	return &nft.Unit{Key: keyUnknown, Chains: []*nft.Chain{c}}
}

// sortUnit puts a unit's parts in a stable order, for diffs and listings.
// A set's keys are unique: no two elements compare equal.
func sortUnit(u *nft.Unit) {
	slices.SortFunc(u.Elements, func(a, b nft.Element) int {
		return cmp.Or(strings.Compare(a.Set, b.Set), strings.Compare(a.Key, b.Key))
	})
	slices.SortFunc(u.Members, func(a, b nft.Member) int {
		return cmp.Or(strings.Compare(a.Set, b.Set), strings.Compare(a.Key, b.Key))
	})
}
