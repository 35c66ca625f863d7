package netpol

import (
	"fmt"
	"math/rand"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/mattfenwick/cyclonus/pkg/matcher"
	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/skiff-dev/skiff/internal/nft"
)

// The property tests compile random clusters and check, for random
// connections, that the compiled table (run by the interpreter of
// interp_test.go) allows exactly what cyclonus's policy matcher, an
// independent reading of the API, allows. Cyclonus judges a connection
// cluster-wide; this node enforces the egress of its own pods and the
// ingress of its own pods, so the reference is: the source's egress
// allows it if the source is a pod of this node, and the destination's
// ingress allows it if the destination is a pod of this node.

// gen makes random clusters out of small vocabularies, so that selectors,
// ports and addresses often meet.
//
// Cyclonus reads a NotIn requirement as false for an object without the
// key, where Kubernetes (and the API documentation) reads it as true. So
// that the reference stays right, a scenario either gives every pod and
// namespace every label key and may use NotIn, or leaves keys out and
// does not use NotIn.
type gen struct {
	r     *rand.Rand
	notIn bool // every object has every key; selectors may use NotIn
}

var (
	genNamespaces = []string{"x", "y", "z"}
	genLabelKeys  = []string{"app", "tier"}
	genLabelVals  = []string{"a", "b", "c"}
	genPortNames  = []string{"http", "dns", "metrics"}
	genPorts      = []int32{53, 80, 81, 443, 8080, 9090}
	genProtos     = []v1.Protocol{v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP}
	genBlocks     = []string{"10.42.0.0/16", "10.42.0.0/24", "10.42.1.0/24", "0.0.0.0/0", "192.168.0.0/16", "10.42.0.8/29"}
	genExcepts    = []string{"10.42.0.0/28", "10.42.0.16/28", "10.42.1.0/25", "192.168.1.0/24", "10.42.0.0/16", "10.42.0.12/30"}
	genExternals  = []string{"192.168.1.7", "192.168.9.9", "8.8.8.8", "10.0.0.1"}
)

func (g gen) pick(list []string) string { return list[g.r.Intn(len(list))] }

func (g gen) labels(n int) map[string]string {
	m := map[string]string{}
	if g.notIn {
		for _, k := range genLabelKeys {
			m[k] = g.pick(genLabelVals)
		}
		return m
	}
	for range g.r.Intn(n + 1) {
		m[g.pick(genLabelKeys)] = g.pick(genLabelVals)
	}
	return m
}

func (g gen) selector() *metav1.LabelSelector {
	switch g.r.Intn(4) {
	case 0:
		return &metav1.LabelSelector{}
	case 1:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: g.pick(genLabelKeys), Operator: metav1.LabelSelectorOpIn, Values: []string{g.pick(genLabelVals), g.pick(genLabelVals)}}}}
	case 2:
		op := metav1.LabelSelectorOpNotIn
		if !g.notIn {
			op = []metav1.LabelSelectorOperator{metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist}[g.r.Intn(2)]
		}
		r := metav1.LabelSelectorRequirement{Key: g.pick(genLabelKeys), Operator: op}
		if op == metav1.LabelSelectorOpNotIn {
			r.Values = []string{g.pick(genLabelVals)}
		}
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{r}}
	}
	return &metav1.LabelSelector{MatchLabels: g.labels(1)}
}

func (g gen) cluster() ([]*v1.Pod, []*v1.Namespace, []*networkingv1.NetworkPolicy) {
	var nss []*v1.Namespace
	for _, n := range genNamespaces {
		l := g.labels(2)
		l[v1.LabelMetadataName] = n
		nss = append(nss, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: l}})
	}
	var pods []*v1.Pod
	for i := range 3 + g.r.Intn(6) {
		node, ip := testNode, fmt.Sprintf("10.42.0.%d", 10+i)
		if g.r.Intn(3) == 0 {
			node, ip = "node-b", fmt.Sprintf("10.42.1.%d", 10+i)
		}
		p := newPod(g.pick(genNamespaces), fmt.Sprintf("p%d", i), node, ip)
		p.Labels = g.labels(2)
		switch g.r.Intn(12) {
		case 0:
			p.Spec.HostNetwork = true
			p.Status.PodIP, p.Status.PodIPs = "10.0.0.1", []v1.PodIP{{IP: "10.0.0.1"}}
		case 1:
			p.Status.PodIP, p.Status.PodIPs = "", nil // not started yet
		}
		used := map[string]bool{}
		for _, name := range genPortNames {
			if g.r.Intn(2) == 0 {
				continue
			}
			proto, num := genProtos[g.r.Intn(3)], genPorts[g.r.Intn(len(genPorts))]
			if k := string(proto) + fmt.Sprint(num); !used[k] { // a pod's ports differ
				used[k] = true
				p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, v1.ContainerPort{Name: name, Protocol: proto, ContainerPort: num})
			}
		}
		pods = append(pods, p)
	}
	var pols []*networkingv1.NetworkPolicy
	for i := range 1 + g.r.Intn(4) {
		p := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: g.pick(genNamespaces), Name: fmt.Sprintf("np%d", i)}}
		p.Spec.PodSelector = *g.selector()
		switch g.r.Intn(4) {
		case 1:
			p.Spec.PolicyTypes = typeIngress
		case 2:
			p.Spec.PolicyTypes = typeEgress
		case 3:
			p.Spec.PolicyTypes = typeBoth
		}
		for range g.r.Intn(3) {
			p.Spec.Ingress = append(p.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: g.peers(), Ports: g.ports()})
		}
		for range g.r.Intn(3) {
			p.Spec.Egress = append(p.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: g.peers(), Ports: g.ports()})
		}
		pols = append(pols, p)
	}
	return pods, nss, pols
}

func (g gen) peers() []networkingv1.NetworkPolicyPeer {
	n := g.r.Intn(3)
	if n == 0 {
		if g.r.Intn(2) == 0 {
			return []networkingv1.NetworkPolicyPeer{} // empty, not nil: all the same
		}
		return nil
	}
	var out []networkingv1.NetworkPolicyPeer
	for range n {
		switch g.r.Intn(4) {
		case 0:
			out = append(out, networkingv1.NetworkPolicyPeer{PodSelector: g.selector()})
		case 1:
			out = append(out, networkingv1.NetworkPolicyPeer{NamespaceSelector: g.selector()})
		case 2:
			out = append(out, networkingv1.NetworkPolicyPeer{PodSelector: g.selector(), NamespaceSelector: g.selector()})
		default:
			b := &networkingv1.IPBlock{CIDR: g.pick(genBlocks)}
			for range g.r.Intn(3) {
				b.Except = append(b.Except, g.pick(genExcepts))
			}
			out = append(out, networkingv1.NetworkPolicyPeer{IPBlock: b})
		}
	}
	return out
}

func (g gen) ports() []networkingv1.NetworkPolicyPort {
	var out []networkingv1.NetworkPolicyPort
	for range g.r.Intn(3) {
		var p networkingv1.NetworkPolicyPort
		if g.r.Intn(3) > 0 {
			p.Protocol = ptr.To(genProtos[g.r.Intn(3)])
		}
		switch g.r.Intn(4) {
		case 0: // the whole protocol
		case 1:
			p.Port = ptr.To(intstr.FromString(g.pick(genPortNames)))
		case 2:
			start := genPorts[g.r.Intn(len(genPorts))]
			p.Port = ptr.To(intstr.FromInt32(start))
			p.EndPort = ptr.To(start + int32(g.r.Intn(100)))
		default:
			p.Port = ptr.To(intstr.FromInt32(genPorts[g.r.Intn(len(genPorts))]))
		}
		out = append(out, p)
	}
	return out
}

// endpoint is one side of a connection.
type endpoint struct {
	ip  string
	pod *v1.Pod // nil: outside the pod network
}

// reference judges a connection with cyclonus.
func reference(ref *matcher.Policy, nss []*v1.Namespace, src, dst endpoint, proto v1.Protocol, port int) bool {
	eg, in := referenceSides(ref, nss, src, dst, proto, port)
	return eg && in
}

// referenceSides judges a connection with cyclonus, side by side: whether
// the source's egress allows it (if the source is a pod of this node), and
// whether the destination's ingress does (if the destination is).
func referenceSides(ref *matcher.Policy, nss []*v1.Namespace, src, dst endpoint, proto v1.Protocol, port int) (egressOK, ingressOK bool) {
	nsLabels := map[string]map[string]string{}
	for _, n := range nss {
		nsLabels[n.Name] = n.Labels
	}
	peer := func(e endpoint) *matcher.TrafficPeer {
		if e.pod == nil || e.pod.Spec.HostNetwork {
			return &matcher.TrafficPeer{IP: e.ip}
		}
		return &matcher.TrafficPeer{IP: e.ip, Internal: &matcher.InternalPeer{
			PodLabels: e.pod.Labels, Namespace: e.pod.Namespace, NamespaceLabels: nsLabels[e.pod.Namespace]}}
	}
	t := &matcher.Traffic{Source: peer(src), Destination: peer(dst), ResolvedPort: port, Protocol: proto}
	if dst.pod != nil && !dst.pod.Spec.HostNetwork {
		for _, cp := range dst.pod.Spec.Containers[0].Ports {
			if cp.ContainerPort == int32(port) && cp.Protocol == proto {
				t.ResolvedPortName = cp.Name
			}
		}
	}
	res := ref.IsTrafficAllowed(t)
	local := func(e endpoint) bool {
		return e.pod != nil && !e.pod.Spec.HostNetwork && e.pod.Spec.NodeName == testNode
	}
	return !local(src) || res.Egress.IsAllowed(), !local(dst) || res.Ingress.IsAllowed()
}

// withDefaultTypes fills in policyTypes as the API server does: cyclonus
// wants them.
func withDefaultTypes(pols []*networkingv1.NetworkPolicy) []*networkingv1.NetworkPolicy {
	var out []*networkingv1.NetworkPolicy
	for _, p := range pols {
		if len(p.Spec.PolicyTypes) == 0 {
			p = p.DeepCopy()
			p.Spec.PolicyTypes = typeIngress
			if len(p.Spec.Egress) > 0 {
				p.Spec.PolicyTypes = typeBoth
			}
		}
		out = append(out, p)
	}
	return out
}

func describeCase(pods []*v1.Pod, nss []*v1.Namespace, pols []*networkingv1.NetworkPolicy) string {
	var b strings.Builder
	for _, n := range nss {
		fmt.Fprintf(&b, "namespace %s %v\n", n.Name, n.Labels)
	}
	for _, p := range pods {
		fmt.Fprintf(&b, "pod %s/%s node=%s ip=%s host=%v labels=%v ports=%v\n", p.Namespace, p.Name, p.Spec.NodeName,
			p.Status.PodIP, p.Spec.HostNetwork, p.Labels, p.Spec.Containers[0].Ports)
	}
	for _, p := range pols {
		fmt.Fprintf(&b, "policy %s/%s %s\n", p.Namespace, p.Name, p.Spec.String())
	}
	return b.String()
}

func TestCompiledMatchesReference(t *testing.T) {
	st := testSettings(t)
	scenarios, conns := 3000, 40
	if testing.Short() {
		scenarios = 300
	}
	checked := 0
	allowedN := 0
	for seed := range scenarios {
		g := gen{r: rand.New(rand.NewSource(int64(seed))), notIn: seed%2 == 1}
		pods, nss, pols := g.cluster()
		m := load(Build(st, pods, nss, pols))
		ref := matcher.BuildNetworkPolicies(false, withDefaultTypes(pols))
		var srcs, dsts []endpoint
		for _, p := range pods {
			if p.Status.PodIP == "" {
				continue
			}
			srcs = append(srcs, endpoint{p.Status.PodIP, p})
			if !p.Spec.HostNetwork { // the node's own address: not forwarded
				dsts = append(dsts, endpoint{p.Status.PodIP, p})
			}
		}
		for _, ip := range genExternals {
			srcs = append(srcs, endpoint{ip: ip})
		}
		if len(dsts) == 0 {
			continue
		}
		for range conns {
			src, dst := srcs[g.r.Intn(len(srcs))], dsts[g.r.Intn(len(dsts))]
			if src.ip == dst.ip {
				continue // a pod's traffic to itself never crosses the forward hook
			}
			proto := genProtos[g.r.Intn(3)]
			port := int(genPorts[g.r.Intn(len(genPorts))]) + g.r.Intn(2)*g.r.Intn(60)
			if cps := dst.pod.Spec.Containers[0].Ports; len(cps) > 0 && g.r.Intn(2) == 0 {
				cp := cps[g.r.Intn(len(cps))] // a port the destination has a name for
				proto, port = cp.Protocol, int(cp.ContainerPort)
			}
			want := reference(ref, nss, src, dst, proto, port)
			got := m.allowed(packet{saddr: net.ParseIP(src.ip).To4(), daddr: net.ParseIP(dst.ip).To4(),
				proto: protoNumber(proto), dport: uint16(port)})
			checked++
			if want {
				allowedN++
			}
			if got != want {
				t.Fatalf("seed %d: %s -> %s %s/%d: compiled table allows=%v, reference %v\n%s\n%s", seed, src.ip, dst.ip, proto, port,
					got, want, describeCase(pods, nss, pols), nft.Render(Build(st, pods, nss, pols)))
			}
		}
	}
	t.Logf("%d connections checked, %d allowed", checked, allowedN)
	if allowedN == 0 || allowedN == checked {
		t.Errorf("the scenarios never deny or never allow: they test nothing")
	}
}

// TestUnknownAddressesSound checks the table's answer for a pod it does not
// know yet (its address came before its status): whatever the table lets
// through to the address, the pod's policies allow; whatever it lets
// through from the address, the destination's ingress policies allow (the
// pod's own egress policies are not enforced until it is known: see the
// model's comment). And while it is unknown, it reaches at least what a
// pod without policies reaches: its egress is not held back.
func TestUnknownAddressesSound(t *testing.T) {
	st := testSettings(t)
	checked, allowedN := 0, 0
	for seed := range 1000 {
		g := gen{r: rand.New(rand.NewSource(int64(seed))), notIn: seed%2 == 1}
		pods, nss, pols := g.cluster()
		var others []endpoint
		var fresh *v1.Pod
		hidden := slices.Clone(pods)
		for i, p := range pods {
			if p.Status.PodIP == "" {
				continue
			}
			if fresh == nil && p.Spec.NodeName == testNode && !p.Spec.HostNetwork {
				fresh = p
				q := p.DeepCopy()
				q.Status.PodIP, q.Status.PodIPs = "", nil
				hidden[i] = q
				continue
			}
			others = append(others, endpoint{p.Status.PodIP, p})
		}
		for _, ip := range genExternals {
			others = append(others, endpoint{ip: ip})
		}
		if fresh == nil {
			continue
		}
		m := load(Build(st, hidden, nss, pols))
		ref := matcher.BuildNetworkPolicies(false, withDefaultTypes(pols))
		me := endpoint{fresh.Status.PodIP, fresh}
		for range 40 {
			other := others[g.r.Intn(len(others))]
			src, dst := me, other
			if g.r.Intn(2) == 0 || other.pod == nil || other.pod.Spec.HostNetwork {
				src, dst = other, me
			}
			proto := genProtos[g.r.Intn(3)]
			port := int(genPorts[g.r.Intn(len(genPorts))])
			got := m.allowed(packet{saddr: net.ParseIP(src.ip).To4(), daddr: net.ParseIP(dst.ip).To4(),
				proto: protoNumber(proto), dport: uint16(port)})
			checked++
			if got {
				allowedN++
			}
			egressOK, ingressOK := referenceSides(ref, nss, src, dst, proto, port)
			if dst == me && got && !(egressOK && ingressOK) {
				t.Fatalf("seed %d: %s -> %s %s/%d: allowed before %s/%s is known, its policies deny it\n%s", seed,
					src.ip, dst.ip, proto, port, fresh.Namespace, fresh.Name, describeCase(pods, nss, pols))
			}
			if src == me && got && !ingressOK {
				t.Fatalf("seed %d: %s -> %s %s/%d: allowed from %s/%s, not yet known, though the destination's policies deny it\n%s",
					seed, src.ip, dst.ip, proto, port, fresh.Namespace, fresh.Name, describeCase(pods, nss, pols))
			}
			if src == me && (other.pod == nil || other.pod.Spec.NodeName != testNode) && !got {
				t.Fatalf("seed %d: %s -> %s %s/%d: the egress of %s/%s, not yet known, is held back\n%s",
					seed, src.ip, dst.ip, proto, port, fresh.Namespace, fresh.Name, describeCase(pods, nss, pols))
			}
		}
	}
	t.Logf("%d connections of unknown pods checked, %d allowed", checked, allowedN)
}
