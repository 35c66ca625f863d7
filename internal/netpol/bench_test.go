package netpol

import (
	"fmt"
	"testing"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiff-dev/skiff/internal/netnstest"
	"github.com/skiff-dev/skiff/internal/nft"
)

// benchCluster is pods pods in 100 namespaces (a third of them on this
// node), and policies policies: per namespace, a default deny, then
// policies letting one app reach another by label, from labelled
// namespaces, on numbered and named ports, and to ipBlocks.
func benchCluster(pods, policies int) ([]*v1.Pod, []*v1.Namespace, []*networkingv1.NetworkPolicy) {
	const namespaces = 100
	var nss []*v1.Namespace
	for i := range namespaces {
		nss = append(nss, namespace(fmt.Sprintf("ns-%d", i), fmt.Sprintf("team=t%d", i%10)))
	}
	var ps []*v1.Pod
	for i := range pods {
		node := "node-b"
		if i%3 == 0 {
			node = testNode
		}
		ps = append(ps, newPod(fmt.Sprintf("ns-%d", i%namespaces), fmt.Sprintf("pod-%d", i), node,
			fmt.Sprintf("10.42.%d.%d", i/250, i%250+1), podLabels(fmt.Sprintf("app=a%d", i%10), "tier=web"),
			cport("http", v1.ProtocolTCP, 8080)))
	}
	var pols []*networkingv1.NetworkPolicy
	for i := range policies {
		ns := fmt.Sprintf("ns-%d", i%namespaces)
		name := fmt.Sprintf("pol-%d", i)
		switch i / namespaces % 4 {
		case 0:
			pols = append(pols, policy(ns, name, nil, typeBoth, nil, nil))
		case 1:
			pols = append(pols, policy(ns, name, sel(fmt.Sprintf("app=a%d", i%10)), typeIngress, []networkingv1.NetworkPolicyIngressRule{
				{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel(fmt.Sprintf("app=a%d", (i+1)%10))}},
					Ports: []networkingv1.NetworkPolicyPort{tcp(intstr.FromInt32(8080))}},
			}, nil))
		case 2:
			pols = append(pols, policy(ns, name, sel(fmt.Sprintf("app=a%d", i%10)), typeIngress, []networkingv1.NetworkPolicyIngressRule{
				{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel(fmt.Sprintf("team=t%d", i%10)),
					PodSelector: sel("tier=web")}},
					Ports: []networkingv1.NetworkPolicyPort{tcp(intstr.FromString("http"))}},
			}, nil))
		default:
			pols = append(pols, policy(ns, name, sel(fmt.Sprintf("app=a%d", i%10)), typeEgress, nil, []networkingv1.NetworkPolicyEgressRule{
				{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}},
				{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0",
					Except: []string{"10.0.0.0/8", "192.168.0.0/16"}}}}},
			}))
		}
	}
	return ps, nss, pols
}

func benchSettings(t testing.TB) *Settings {
	st, err := Config{NodeName: testNode, Table: "skiff-bench", ClusterCIDR: "10.42.0.0/16"}.Settings(nft.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// BenchmarkModel times computing the table of 3,000 pods and 1,000
// policies from scratch.
func BenchmarkModel(b *testing.B) {
	st := benchSettings(b)
	pods, nss, pols := benchCluster(3000, 1000)
	var rs *nft.Ruleset
	for b.Loop() {
		rs = Build(st, pods, nss, pols)
	}
	n := 0
	for _, u := range rs.Units {
		n += len(u.Members) + len(u.Elements)
	}
	b.ReportMetric(float64(len(rs.Units)), "units")
	b.ReportMetric(float64(n), "elements")
}

// BenchmarkModelIncremental times computing the table after one pod got
// its address, with the previous build's units at hand.
func BenchmarkModelIncremental(b *testing.B) {
	benchChange(b, func(p *v1.Pod, i int) {
		p.Status.PodIP = fmt.Sprintf("10.42.%d.%d", 100+i/250%100, i%250+1)
		p.Status.PodIPs = []v1.PodIP{{IP: p.Status.PodIP}}
	})
}

// BenchmarkModelStatus times computing the table after a pod's status
// changed in a way policies do not see (it became ready).
func BenchmarkModelStatus(b *testing.B) {
	benchChange(b, func(p *v1.Pod, _ int) {
		p.Status.Conditions = append(p.Status.Conditions, v1.PodCondition{Type: v1.PodReady, Status: v1.ConditionTrue})
	})
}

// benchChange times a build after change made a new version of one pod.
func benchChange(b *testing.B, change func(p *v1.Pod, i int)) {
	st := benchSettings(b)
	pods, nss, pols := benchCluster(3000, 1000)
	var cache modelCache
	build(st, pods, nss, pols, &cache)
	i := 0
	for b.Loop() {
		k := (i * 7) % len(pods)
		p := pods[k].DeepCopy()
		change(p, i)
		pods[k] = p
		i++
		build(st, pods, nss, pols, &cache)
	}
}

// BenchmarkFullSync times a sync that writes the whole table of 3,000
// pods and 1,000 policies into a kernel (a throwaway namespace), replacing
// the previous one.
func BenchmarkFullSync(b *testing.B) {
	fd := netnstest.New(b)
	pods, nss, pols := benchCluster(3000, 1000)
	for b.Loop() {
		s := NewSyncer(Config{NodeName: testNode, Table: "skiff-bench", ClusterCIDR: "10.42.0.0/16"}, fd)
		if err := s.Sync(nil, pods, nss, pols); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPolicyAdded times the sync that enforces one new policy in
// that table: what a policy's creation costs the node once its watch event
// came.
func BenchmarkPolicyAdded(b *testing.B) {
	fd := netnstest.New(b)
	pods, nss, pols := benchCluster(3000, 1000)
	s := NewSyncer(Config{NodeName: testNode, Table: "skiff-bench", ClusterCIDR: "10.42.0.0/16"}, fd)
	if err := s.Sync(nil, pods, nss, pols); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		p := policy(fmt.Sprintf("ns-%d", i%100), fmt.Sprintf("added-%d", i), sel("app=a1"), typeIngress,
			[]networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app=a2")}}}}, nil)
		i++
		if err := s.Sync(nil, pods, nss, append(pols, p)); err != nil {
			b.Fatal(err)
		}
		if s.Last.Full {
			b.Fatal("a full sync")
		}
	}
}
