package servicelb

import (
	"slices"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func node(name, ip string, ready bool, labels map[string]string) *v1.Node {
	status := v1.ConditionFalse
	if ready {
		status = v1.ConditionTrue
	}
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Status: v1.NodeStatus{
			Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: status}},
			Addresses:  []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: ip}},
		},
	}
}

func lb(name string, age int, ports ...int32) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name,
			CreationTimestamp: metav1.NewTime(time.Unix(1000+int64(age), 0))},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer},
	}
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Port: p, Protocol: v1.ProtocolTCP})
	}
	return s
}

func ips(in []v1.LoadBalancerIngress) []string {
	var out []string
	for _, i := range in {
		out = append(out, i.IP)
	}
	return out
}

func TestPlanAddresses(t *testing.T) {
	nodes := []*v1.Node{node("b", "10.0.0.2", true, nil), node("a", "10.0.0.10", true, nil), node("c", "10.0.0.3", false, nil)}
	got, _ := Plan(nil, nodes, nil)
	if want := []string{"10.0.0.2", "10.0.0.10"}; !slices.Equal(ips(got), want) {
		t.Fatalf("all ready nodes: got %v, want %v", ips(got), want)
	}
	nodes[1].Labels = map[string]string{NodeLabel: "true"}
	got, _ = Plan(nil, nodes, nil)
	if want := []string{"10.0.0.10"}; !slices.Equal(ips(got), want) {
		t.Fatalf("labelled node only: got %v, want %v", ips(got), want)
	}
}

func TestPlanConflicts(t *testing.T) {
	older, newer, other := lb("older", 0, 80, 443), lb("newer", 5, 8080, 80), lb("other", 9, 8443)
	udp := lb("udp", 10, 80)
	udp.Spec.Ports[0].Protocol = v1.ProtocolUDP
	cluster := lb("cluster", 1, 80)
	cluster.Spec.Type = v1.ServiceTypeClusterIP
	_, conflicts := Plan([]*v1.Service{newer, other, older, udp, cluster}, nil, nil)
	if len(conflicts) != 1 || conflicts["default/newer"] == "" {
		t.Fatalf("want one conflict for default/newer, got %v", conflicts)
	}
}

// The ports the nodes listen on themselves are not for LoadBalancers: a
// Service on the API port would take the API from every other node.
func TestPlanReservedPorts(t *testing.T) {
	api, kubelet, free := lb("api", 0, 6443), lb("kubelet", 1, 10250), lb("free", 2, 8080)
	n := &v1.Node{}
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = 10250
	_, conflicts := Plan([]*v1.Service{api, kubelet, free}, []*v1.Node{n}, map[string]string{"6443/TCP": "the API server"})
	if got := conflicts["default/api"]; got != "6443/TCP is where the API server listens on the nodes' addresses: pick another port" {
		t.Errorf("api: %q", got)
	}
	if got := conflicts["default/kubelet"]; got != "10250/TCP is where the kubelet listens on the nodes' addresses: pick another port" {
		t.Errorf("kubelet: %q", got)
	}
	if _, bad := conflicts["default/free"]; bad || len(conflicts) != 2 {
		t.Errorf("conflicts %v, want only api and kubelet", conflicts)
	}
}
