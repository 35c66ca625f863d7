package proxy

import (
	"context"
	"net"
	"reflect"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/skiff-dev/skiff/internal/golden"
	"github.com/skiff-dev/skiff/internal/nft"
)

const testNode = "node-a"

func testConfig() Config {
	return Config{
		NodeName:    testNode,
		ClusterCIDR: "10.42.0.0/16",
		ServiceCIDR: "10.43.0.0/16",
		Table:       "skiff",
		Bridge:      "cni0",
		DNSService:  types.NamespacedName{Namespace: "kube-system", Name: "kube-dns"},
		DNSAddress:  func(context.Context) (net.IP, error) { return nil, nil },
	}
}

// renderServices lists what the Services add to the table, and the
// addresses they lost to another.
func renderServices(rs *ruleset) string {
	out := nft.RenderUnits(&rs.Ruleset)
	for _, c := range rs.conflicts {
		out += "# dropped: " + c + "\n"
	}
	return out
}

// Fixture builders.

type svcOpt func(*v1.Service)

func service(ns, name, clusterIP string, opts ...svcOpt) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.ServiceSpec{
			Type: v1.ServiceTypeClusterIP, ClusterIP: clusterIP, ClusterIPs: []string{clusterIP},
			Ports: []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func ports(p ...v1.ServicePort) svcOpt { return func(s *v1.Service) { s.Spec.Ports = p } }

func nodePort(n int32) svcOpt {
	return func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeNodePort
		s.Spec.Ports[0].NodePort = n
	}
}

func loadBalancer(n int32, ingress ...string) svcOpt {
	return func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeLoadBalancer
		s.Spec.Ports[0].NodePort = n
		for _, ip := range ingress {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
		}
	}
}

func sourceRanges(cidrs ...string) svcOpt {
	return func(s *v1.Service) { s.Spec.LoadBalancerSourceRanges = cidrs }
}

func externalIPs(ips ...string) svcOpt { return func(s *v1.Service) { s.Spec.ExternalIPs = ips } }

func affinity(seconds int32) svcOpt {
	return func(s *v1.Service) {
		s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
		if seconds > 0 {
			s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: &seconds}}
		}
	}
}

func externalLocal(s *v1.Service) {
	s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
}

func internalLocal(s *v1.Service) {
	s.Spec.InternalTrafficPolicy = ptr.To(v1.ServiceInternalTrafficPolicyLocal)
}

type ep struct {
	ip                          string
	node                        string
	ready, serving, terminating *bool
}

func readyEP(ip, node string) ep { return ep{ip: ip, node: node} }

func terminatingEP(ip, node string, serving bool) ep {
	return ep{ip: ip, node: node, ready: ptr.To(false), serving: ptr.To(serving), terminating: ptr.To(true)}
}

type slicePort struct {
	name  string
	proto v1.Protocol
	port  int32
}

func slice(ns, svc, name string, sp []slicePort, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, p := range sp {
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: ptr.To(p.name), Protocol: ptr.To(p.proto), Port: ptr.To(p.port)})
	}
	for _, e := range eps {
		de := discoveryv1.Endpoint{Addresses: []string{e.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: e.serving, Terminating: e.terminating}}
		if e.node != "" {
			de.NodeName = ptr.To(e.node)
		}
		s.Endpoints = append(s.Endpoints, de)
	}
	return s
}

var httpPort = []slicePort{{"http", v1.ProtocolTCP, 8080}}

type fixture struct {
	name     string
	services []*v1.Service
	slices   []*discoveryv1.EndpointSlice
	dns      net.IP
}

func fixtures() []fixture {
	return []fixture{
		{name: "clusterip",
			services: []*v1.Service{service("default", "web", "10.43.0.20")},
			slices: []*discoveryv1.EndpointSlice{slice("default", "web", "web-1", httpPort,
				readyEP("10.42.0.5", testNode), readyEP("10.42.1.7", "node-b"))}},
		{name: "no-endpoints",
			services: []*v1.Service{service("default", "web", "10.43.0.20", nodePort(30080))},
			slices: []*discoveryv1.EndpointSlice{slice("default", "web", "web-1", httpPort,
				ep{ip: "10.42.0.5", node: testNode, ready: ptr.To(false)})}},
		{name: "terminating",
			services: []*v1.Service{service("default", "web", "10.43.0.20")},
			slices: []*discoveryv1.EndpointSlice{slice("default", "web", "web-1", httpPort,
				terminatingEP("10.42.0.5", testNode, true), terminatingEP("10.42.0.6", testNode, false))}},
		{name: "nodeport",
			services: []*v1.Service{service("default", "web", "10.43.0.20", nodePort(30080))},
			slices: []*discoveryv1.EndpointSlice{slice("default", "web", "web-1", httpPort,
				readyEP("10.42.0.5", testNode), readyEP("10.42.1.7", "node-b"))}},
		{name: "loadbalancer",
			services: []*v1.Service{service("default", "web", "10.43.0.20", loadBalancer(30080, "192.168.1.10", "192.168.1.11"))},
			slices: []*discoveryv1.EndpointSlice{slice("default", "web", "web-1", httpPort,
				readyEP("10.42.0.5", testNode))}},
		{name: "externalips",
			services: []*v1.Service{service("default", "web", "10.43.0.20", externalIPs("192.168.1.50"))},
			slices: []*discoveryv1.EndpointSlice{slice("default", "web", "web-1", httpPort,
				readyEP("10.42.0.5", testNode))}},
		{name: "affinity",
			services: []*v1.Service{service("default", "web", "10.43.0.20", affinity(0))},
			slices: []*discoveryv1.EndpointSlice{slice("default", "web", "web-1", httpPort,
				readyEP("10.42.0.5", testNode), readyEP("10.42.1.7", "node-b"))}},
		{name: "external-local",
			services: []*v1.Service{
				service("default", "web", "10.43.0.20", loadBalancer(30080, "192.168.1.10"), externalLocal),
				service("default", "remote", "10.43.0.21", nodePort(30081), externalLocal),
			},
			slices: []*discoveryv1.EndpointSlice{
				slice("default", "web", "web-1", httpPort, readyEP("10.42.0.5", testNode), readyEP("10.42.1.7", "node-b")),
				slice("default", "remote", "remote-1", httpPort, readyEP("10.42.1.8", "node-b")),
			}},
		{name: "internal-local",
			services: []*v1.Service{
				service("default", "web", "10.43.0.20", internalLocal),
				service("default", "remote", "10.43.0.21", internalLocal, nodePort(30081)),
			},
			slices: []*discoveryv1.EndpointSlice{
				slice("default", "web", "web-1", httpPort, readyEP("10.42.0.5", testNode), readyEP("10.42.1.7", "node-b")),
				slice("default", "remote", "remote-1", httpPort, readyEP("10.42.1.8", "node-b")),
			}},
		{name: "multiport",
			services: []*v1.Service{service("default", "multi", "10.43.0.30", ports(
				v1.ServicePort{Name: "web", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("web")},
				v1.ServicePort{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(5353)},
				v1.ServicePort{Name: "sig", Protocol: v1.ProtocolSCTP, Port: 9000, TargetPort: intstr.FromInt32(9000)},
			))},
			slices: []*discoveryv1.EndpointSlice{
				slice("default", "multi", "multi-1",
					[]slicePort{{"web", v1.ProtocolTCP, 8080}, {"dns", v1.ProtocolUDP, 5353}, {"sig", v1.ProtocolSCTP, 9000}},
					readyEP("10.42.0.5", testNode)),
				// The same endpoint listed again while slices are rewritten.
				slice("default", "multi", "multi-2", []slicePort{{"web", v1.ProtocolTCP, 8080}},
					readyEP("10.42.0.5", testNode)),
			}},
		{name: "dns", dns: net.ParseIP("10.42.0.1"),
			services: []*v1.Service{service("kube-system", "kube-dns", "10.43.0.10", ports(
				v1.ServicePort{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(53)},
				v1.ServicePort{Name: "dns-tcp", Protocol: v1.ProtocolTCP, Port: 53},
				v1.ServicePort{Name: "metrics", Protocol: v1.ProtocolTCP, Port: 9153, TargetPort: intstr.FromInt32(9253)},
			))},
			// Ignored: the node's own DNS is the endpoint.
			slices: []*discoveryv1.EndpointSlice{slice("kube-system", "kube-dns", "kube-dns-1",
				[]slicePort{{"dns", v1.ProtocolUDP, 53}}, readyEP("10.42.1.2", "node-b"))}},
		{name: "dns-pending",
			services: []*v1.Service{service("kube-system", "kube-dns", "10.43.0.10", ports(
				v1.ServicePort{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(53)},
			))}},
		{name: "conflict",
			services: []*v1.Service{
				service("default", "a", "10.43.0.20", externalIPs("192.168.1.50", "192.168.1.50")),
				service("default", "b", "10.43.0.21", externalIPs("192.168.1.50")), // the same IP and port
			},
			slices: []*discoveryv1.EndpointSlice{slice("default", "a", "a-1", httpPort, readyEP("10.42.0.5", testNode))}},
		{name: "headless",
			services: []*v1.Service{service("default", "db", v1.ClusterIPNone)},
			slices: []*discoveryv1.EndpointSlice{slice("default", "db", "db-1", httpPort,
				readyEP("10.42.0.5", testNode))}},
		{name: "externalname",
			services: []*v1.Service{{
				ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "ext"},
				Spec:       v1.ServiceSpec{Type: v1.ServiceTypeExternalName, ExternalName: "example.com"},
			}}},
	}
}

func testSettings(t testing.TB, cfg Config) *settings {
	t.Helper()
	st, err := cfg.settings()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestGolden(t *testing.T) {
	st := testSettings(t, testConfig())
	for _, f := range fixtures() {
		t.Run(f.name, func(t *testing.T) {
			rs := buildRuleset(st, f.services, f.slices, f.dns, nil)
			golden.Check(t, f.name, renderServices(rs))
		})
	}
}

// TestGoldenTable lists the fixed part of the table, with and without
// NodePort address ranges.
func TestGoldenTable(t *testing.T) {
	rs := buildRuleset(testSettings(t, testConfig()), nil, nil, nil, nil)
	golden.Check(t, "table", nft.Render(&rs.Ruleset))

	cfg := testConfig()
	cfg.NodePortAddresses = []string{"192.168.1.0/24", "fd00::/64"}
	rs = buildRuleset(testSettings(t, cfg), nil, nil, nil, nil)
	golden.Check(t, "table-nodeport-addresses", nft.Render(&rs.Ruleset))
}

func TestEmpty(t *testing.T) {
	st := testSettings(t, testConfig())
	for _, f := range fixtures() {
		if f.name != "headless" && f.name != "externalname" {
			continue
		}
		if rs := buildRuleset(st, f.services, f.slices, nil, nil); len(rs.Units) != 0 {
			t.Errorf("%s: %d service ports, want none", f.name, len(rs.Units))
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.ClusterCIDR = "10.42.0.0" }, "--cluster-cidr"},
		{func(c *Config) { c.ClusterCIDR = "fd00::/48" }, "--cluster-cidr"},
		{func(c *Config) { c.ClusterCIDR = "" }, "--cluster-cidr"},
		{func(c *Config) { c.NodePortAddresses = []string{"10.0.0.0/8", "bogus"} }, "--nodeport-addresses"},
		{func(c *Config) { c.NodeName = "" }, "node name"},
	} {
		cfg := testConfig()
		tc.mod(&cfg)
		_, err := New(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New: error %v, want one naming %s", err, tc.want)
		}
	}
	cfg := testConfig()
	cfg.ClusterCIDR = "fd00::/48, 10.42.0.0/16"
	if _, err := New(cfg); err != nil {
		t.Errorf("dual-stack --cluster-cidr: %v", err)
	}
}

// TestPartialBatch lists the messages of partial syncs: only the changed
// Service's chains and elements, in an order the kernel accepts.
func TestPartialBatch(t *testing.T) {
	st := testSettings(t, testConfig())
	web := service("default", "web", "10.43.0.20", nodePort(30080), affinity(60))
	other := service("default", "other", "10.43.0.21")
	two := slice("default", "web", "web-1", httpPort, readyEP("10.42.0.5", testNode), readyEP("10.42.1.7", "node-b"))
	one := slice("default", "web", "web-1", httpPort, readyEP("10.42.0.5", testNode))
	otherEPs := slice("default", "other", "other-1", httpPort, readyEP("10.42.0.9", testNode))

	steps := []struct {
		name     string
		services []*v1.Service
		slices   []*discoveryv1.EndpointSlice
	}{
		{"start", []*v1.Service{web, other}, []*discoveryv1.EndpointSlice{two, otherEPs}},
		{"nothing changed", []*v1.Service{web, other}, []*discoveryv1.EndpointSlice{two, otherEPs}},
		{"web loses an endpoint", []*v1.Service{web, other}, []*discoveryv1.EndpointSlice{one, otherEPs}},
		{"web loses all endpoints", []*v1.Service{web, other}, []*discoveryv1.EndpointSlice{otherEPs}},
		{"web gets one back", []*v1.Service{web, other}, []*discoveryv1.EndpointSlice{one, otherEPs}},
		{"web is deleted", []*v1.Service{other}, []*discoveryv1.EndpointSlice{one, otherEPs}},
	}
	var out strings.Builder
	var prev *ruleset
	for _, s := range steps {
		rs := buildRuleset(st, s.services, s.slices, nil, nil)
		out.WriteString("# " + s.name + "\n")
		if prev != nil {
			b := nft.NewBatch(st.fam, st.table)
			if _, ok := nft.WritePartial(b, &prev.Ruleset, &rs.Ruleset); !ok {
				t.Fatalf("%s: no partial sync", s.name)
			}
			msgs, err := b.Describe()
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) == 0 {
				out.WriteString("(no transaction)\n")
			}
			for _, m := range msgs {
				out.WriteString(m + "\n")
			}
		}
		prev = rs
	}
	golden.Check(t, "partial", out.String())
}

func TestLocalEndpoints(t *testing.T) {
	web := slice("default", "web", "web-1", httpPort, readyEP("10.42.0.5", testNode), readyEP("10.42.1.9", "node-b"),
		terminatingEP("10.42.0.6", testNode, true))
	web2 := slice("default", "web", "web-2", []slicePort{{"other", v1.ProtocolTCP, 9090}}, readyEP("10.42.0.5", testNode))
	other := slice("default", "other", "other-1", httpPort, readyEP("10.42.0.7", testNode))
	asked := map[int32]types.NamespacedName{31000: {Namespace: "default", Name: "web"}}
	got := localEndpoints(testNode, asked, []*discoveryv1.EndpointSlice{web, web2, other})
	if want := map[types.NamespacedName]int{{Namespace: "default", Name: "web"}: 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("localEndpoints = %v, want %v (ready, on this node, each address once, of the wanted Services)", got, want)
	}
}
