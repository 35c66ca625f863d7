package ingress

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestParseAddressPool(t *testing.T) {
	got, err := ParseAddressPool("192.0.2.9, 192.0.2.8/30,192.0.2.9")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("192.0.2.8"), netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11")}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"192.0.2.300", "10.0.0.0/8", "2001:db8::/64", "x/24"} {
		if _, err := ParseAddressPool(bad); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: want a one-line error, got %v", bad, err)
		}
	}
}

// TestConformanceMultipleGatewaysPool: the pool gives the suite's
// Gateways addresses of their own, and they route apart.
func TestConformanceMultipleGatewaysPool(t *testing.T) {
	in, _ := conformanceInput(t, "tests/httproute-multiple-gateways.yaml")
	cfg := testConfig
	cfg.AddressPool, _ = ParseAddressPool("192.0.2.32/28")
	res := Build(cfg, in)
	addr := func(ns, name string) string {
		st := res.Gateways[types.NamespacedName{Namespace: ns, Name: name}]
		if st == nil || len(st.Addresses) != 1 {
			t.Fatalf("%s/%s: addresses %v", ns, name, st)
		}
		return st.Addresses[0].Value
	}
	same, all := addr("gateway-conformance-infra", "same-namespace"), addr("gateway-conformance-infra", "all-namespaces")
	if same == all {
		t.Fatalf("both Gateways have %s", same)
	}
	for _, c := range []struct{ addr, path, backend string }{
		{same, "/", "infra-backend-v2"}, {all, "/", "infra-backend-v3"}, {same, "/shared", "infra-backend-v1"},
	} {
		l := res.Table.ListenerFor(c.addr, 80)
		if l == nil {
			t.Fatalf("nothing listens on %s:80", c.addr)
		}
		if r := l.Match(&Request{Host: c.addr, Method: "GET", Path: c.path}); r == nil || r.Backends[0].Service.Name != c.backend {
			t.Errorf("%s%s: want %s, got %v", c.addr, c.path, c.backend, r)
		}
	}
	if l := res.Table.ListenerFor(testConfig.Addresses[0], 80); l != nil {
		if r := l.Match(&Request{Host: testConfig.Addresses[0], Method: "GET", Path: "/"}); r != nil {
			t.Errorf("the node's own address routes a pooled Gateway's route: %v", r)
		}
	}
}

func poolGateway(name string, age int, status string, asked ...string) *gatewayv1.Gateway {
	gw := &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Generation: 1, CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 1, 0, age, 0, 0, time.UTC))},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "skiff", Listeners: []gatewayv1.Listener{{
			Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}}},
	}
	for _, a := range asked {
		gw.Spec.Addresses = append(gw.Spec.Addresses, gatewayv1.GatewaySpecAddress{Value: a})
	}
	if status != "" {
		gw.Status.Addresses = []gatewayv1.GatewayStatusAddress{{Value: status}}
	}
	return gw
}

// TestAddressPoolAssignment: asked-for addresses first, then kept ones,
// then the lowest free; a Gateway left without one is not programmed
// and says why.
func TestAddressPoolAssignment(t *testing.T) {
	cfg := testConfig
	cfg.AddressPool, _ = ParseAddressPool("192.0.2.1,192.0.2.2,192.0.2.3")
	in := &Input{
		GatewayClasses: []*gatewayv1.GatewayClass{{ObjectMeta: metav1.ObjectMeta{Name: "skiff"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: DefaultGatewayController}}},
		Gateways: []*gatewayv1.Gateway{
			poolGateway("a", 1, ""),
			poolGateway("b", 2, "192.0.2.1"), // keeps its address though older a has none yet
			poolGateway("c", 3, "", "192.0.2.3"),
			poolGateway("d", 4, ""),
			poolGateway("e", 5, "", "198.51.100.1"),
		},
	}
	res := Build(cfg, in)
	want := map[string]string{"a": "192.0.2.2", "b": "192.0.2.1", "c": "192.0.2.3", "d": "", "e": ""}
	for name, w := range want {
		st := res.Gateways[types.NamespacedName{Namespace: "ns", Name: name}]
		got := ""
		if len(st.Addresses) > 0 {
			got = st.Addresses[0].Value
		}
		if got != w {
			t.Errorf("%s: address %q, want %q", name, got, w)
		}
		programmed := false
		for _, c := range st.Conditions {
			if c.Type == string(gatewayv1.GatewayConditionProgrammed) {
				programmed = c.Status == metav1.ConditionTrue
				if !programmed && (c.Reason != string(gatewayv1.GatewayReasonAddressNotAssigned) || c.Message == "") {
					t.Errorf("%s: %s %s", name, c.Reason, c.Message)
				}
			}
		}
		if programmed != (w != "") {
			t.Errorf("%s: programmed %v", name, programmed)
		}
	}
	// Every node computes the same from the same objects, whatever the
	// order of its lists.
	slices.Reverse(in.Gateways)
	if again := Build(cfg, in); renderResult(again) != renderResult(res) {
		t.Error("the assignment depends on the order of the Gateways")
	}
}

// TestAddressPoolUnavailablePort: a port the node could not open is
// reported on a Gateway of its own address as on the others.
func TestAddressPoolUnavailablePort(t *testing.T) {
	cfg := testConfig
	cfg.AddressPool, _ = ParseAddressPool("192.0.2.1")
	cfg.UnavailablePorts = map[int32]string{80: "another program holds it"}
	in := &Input{
		GatewayClasses: []*gatewayv1.GatewayClass{{ObjectMeta: metav1.ObjectMeta{Name: "skiff"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: DefaultGatewayController}}},
		Gateways:       []*gatewayv1.Gateway{poolGateway("a", 1, "")},
	}
	st := Build(cfg, in).Gateways[types.NamespacedName{Namespace: "ns", Name: "a"}]
	c := st.Listeners[0].Conditions[0]
	if c.Type != string(gatewayv1.ListenerConditionAccepted) || c.Status != metav1.ConditionFalse || c.Reason != string(gatewayv1.ListenerReasonPortUnavailable) {
		t.Errorf("listener on an unavailable port: %+v", c)
	}
}
