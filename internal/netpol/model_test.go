package netpol

import (
	"strconv"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/skiff-dev/skiff/internal/golden"
	"github.com/skiff-dev/skiff/internal/nft"
)

const testNode = "node-a"

func testSettings(t testing.TB) *Settings {
	st, err := Config{NodeName: testNode, Table: "skiff-netpol", ClusterCIDR: "10.42.0.0/16",
		PodCIDRs: []string{"10.42.0.0/24"}}.Settings(nft.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Fixture builders.

func namespace(name string, lbl ...string) *v1.Namespace {
	l := labelMap(lbl)
	l[v1.LabelMetadataName] = name
	return &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}
}

func labelMap(kv []string) map[string]string {
	m := map[string]string{}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		m[k] = v
	}
	return m
}

type podOpt func(*v1.Pod)

func newPod(ns, name, node, ip string, opts ...podOpt) *v1.Pod {
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{}},
		Spec:       v1.PodSpec{NodeName: node, Containers: []v1.Container{{Name: "c"}}},
		Status:     v1.PodStatus{Phase: v1.PodRunning, PodIP: ip},
	}
	if ip != "" {
		p.Status.PodIPs = []v1.PodIP{{IP: ip}}
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func podLabels(kv ...string) podOpt {
	return func(p *v1.Pod) { p.Labels = labelMap(kv) }
}

func cport(name string, proto v1.Protocol, n int32) podOpt {
	return func(p *v1.Pod) {
		p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, v1.ContainerPort{Name: name, Protocol: proto, ContainerPort: n})
	}
}

func hostNetwork(p *v1.Pod) { p.Spec.HostNetwork = true }

func sel(kv ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: labelMap(kv)}
}

func policy(ns, name string, podSel *metav1.LabelSelector, types []networkingv1.PolicyType,
	in []networkingv1.NetworkPolicyIngressRule, eg []networkingv1.NetworkPolicyEgressRule) *networkingv1.NetworkPolicy {
	p := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: types, Ingress: in, Egress: eg},
	}
	if podSel != nil {
		p.Spec.PodSelector = *podSel
	}
	return p
}

func tcp(port intstr.IntOrString) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Port: &port}
}

func portOf(proto v1.Protocol, port intstr.IntOrString, end int32) networkingv1.NetworkPolicyPort {
	p := networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &port}
	if end != 0 {
		p.EndPort = ptr.To(end)
	}
	return p
}

var (
	typeIngress = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	typeEgress  = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	typeBoth    = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
)

// scenario is the cluster most golden tests start from.
func scenario() ([]*v1.Pod, []*v1.Namespace) {
	pods := []*v1.Pod{
		newPod("default", "web", testNode, "10.42.0.10", podLabels("app=web"), cport("http", v1.ProtocolTCP, 8080)),
		newPod("default", "db", testNode, "10.42.0.11", podLabels("app=db"), cport("sql", v1.ProtocolTCP, 5432)),
		newPod("default", "web-2", "node-b", "10.42.1.10", podLabels("app=web"), cport("http", v1.ProtocolTCP, 8081)),
		newPod("prod", "api", "node-b", "10.42.1.20", podLabels("app=api"), cport("http", v1.ProtocolTCP, 9000)),
		newPod("prod", "probe", testNode, "", podLabels("app=probe")),                             // no address yet
		newPod("kube-system", "agent", testNode, "10.0.0.1", hostNetwork, podLabels("app=agent")), // the node's address
	}
	nss := []*v1.Namespace{namespace("default"), namespace("prod", "env=prod"), namespace("kube-system")}
	return pods, nss
}

func TestGoldenTables(t *testing.T) {
	st := testSettings(t)
	pods, nss := scenario()
	for _, tc := range []struct {
		name     string
		policies []*networkingv1.NetworkPolicy
	}{
		{"no-policies", nil},
		{"default-deny", []*networkingv1.NetworkPolicy{
			policy("default", "deny-all", nil, typeBoth, nil, nil),
		}},
		{"peers", []*networkingv1.NetworkPolicy{
			// Ingress to web: from db (same namespace), from prod (all its
			// pods), from prod's api pods (both selectors), from an ipBlock.
			policy("default", "web-in", sel("app=web"), nil, []networkingv1.NetworkPolicyIngressRule{
				{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app=db")}}},
				{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("env=prod")}}},
				{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("env=prod"), PodSelector: sel("app=api")},
					{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/16", Except: []string{"192.168.1.0/24", "192.168.4.0/22"}}}}},
			}, nil),
			// Egress of db: anywhere but the cluster network (policyTypes
			// left to their default).
			policy("default", "db-out", sel("app=db"), nil, nil, []networkingv1.NetworkPolicyEgressRule{
				{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{"10.42.0.0/16"}}}}},
			}),
		}},
		{"ports", []*networkingv1.NetworkPolicy{
			policy("default", "web-ports", sel("app=web"), typeBoth, []networkingv1.NetworkPolicyIngressRule{
				// Any source, numbered, ranged, named and protocol-only ports.
				{Ports: []networkingv1.NetworkPolicyPort{tcp(intstr.FromInt32(80)), portOf(v1.ProtocolUDP, intstr.FromInt32(5000), 5100),
					tcp(intstr.FromString("http")), {Protocol: ptr.To(v1.ProtocolSCTP)}}},
			}, []networkingv1.NetworkPolicyEgressRule{
				// Named ports of the peers, wherever they run.
				{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}},
					Ports: []networkingv1.NetworkPolicyPort{tcp(intstr.FromString("http")), tcp(intstr.FromString("sql"))}},
				// DNS anywhere.
				{Ports: []networkingv1.NetworkPolicyPort{portOf(v1.ProtocolUDP, intstr.FromInt32(53), 0)}},
			}),
			// A second policy on web adds to the first.
			policy("default", "web-more", sel("app=web"), typeIngress, []networkingv1.NetworkPolicyIngressRule{
				{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}}},
			}, nil),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			golden.Check(t, tc.name, nft.Render(Build(st, pods, nss, tc.policies)))
		})
	}
}

// TestUnitsSorted: partial writes need the units in key order, also when
// a namespace's name starts with another's.
func TestUnitsSorted(t *testing.T) {
	st := testSettings(t)
	var pods []*v1.Pod
	var pols []*networkingv1.NetworkPolicy
	for i, ns := range []string{"web", "web-2", "web.x", "webz"} {
		pods = append(pods, newPod(ns, "p", testNode, "10.42.0."+strconv.Itoa(10+i)))
		pols = append(pols, policy(ns, "deny", nil, typeBoth, nil, nil), policy(ns, "deny-2", nil, typeIngress, nil, nil))
	}
	rs := Build(st, pods, []*v1.Namespace{namespace("web")}, pols)
	for i := 1; i < len(rs.Units); i++ {
		if rs.Units[i-1].Key >= rs.Units[i].Key {
			t.Errorf("unit %q before %q", rs.Units[i-1].Key, rs.Units[i].Key)
		}
	}
}
