package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiff-dev/skiff/internal/netnstest"
)

// inNetns runs f on a thread in the network namespace fd.
var inNetns = netnstest.Run

// nodeNetwork gives the namespace a "node" address, 10.0.0.1/24 on a veth,
// and a default route through it, like a node's uplink.
func nodeNetwork(t *testing.T, fd int) {
	t.Helper()
	h, err := vnl.NewHandleAt(netns.NsHandle(fd))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	attrs := vnl.NewLinkAttrs()
	attrs.Name = "veth0"
	if err := h.LinkAdd(&vnl.Veth{LinkAttrs: attrs, PeerName: "veth1"}); err != nil {
		t.Skipf("no veth: %v", err)
	}
	for _, name := range []string{"lo", "veth0", "veth1"} {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		if name == "veth0" {
			addr, _ := vnl.ParseAddr("10.0.0.1/24")
			if err := h.AddrAdd(l, addr); err != nil {
				t.Fatal(err)
			}
			if err := h.RouteAdd(&vnl.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("10.0.0.2")}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// serveTCP answers every connection on addr with what, or if what is
// empty, with the client's address as the server sees it.
func serveTCP(t *testing.T, fd int, addr, what string) {
	t.Helper()
	err := inNetns(fd, func() error {
		l, err := net.Listen("tcp4", addr)
		if err != nil {
			return err
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				reply := what
				if reply == "" {
					reply = c.RemoteAddr().(*net.TCPAddr).IP.String()
				}
				c.Write([]byte(reply))
				c.Close()
			}
		}()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// serveUDP answers every datagram on addr with what.
func serveUDP(t *testing.T, fd int, addr, what string) {
	t.Helper()
	err := inNetns(fd, func() error {
		c, err := net.ListenPacket("udp4", addr)
		if err != nil {
			return err
		}
		t.Cleanup(func() { c.Close() })
		go func() {
			buf := make([]byte, 512)
			for {
				_, from, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				c.WriteTo([]byte(what), from)
			}
		}()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// ask connects from the node to addr and returns what the server said.
func ask(fd int, network, addr string) (string, error) {
	var got string
	err := inNetns(fd, func() error {
		c, err := net.DialTimeout(network, addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if network == "udp4" {
			if _, err := c.Write([]byte("?")); err != nil {
				return err
			}
			buf := make([]byte, 512)
			n, err := c.Read(buf)
			got = string(buf[:n])
			return err
		}
		b, err := io.ReadAll(c)
		got = string(b)
		return err
	})
	return got, err
}

// TestTraffic sends real connections through the table, from the node
// itself (the output path), in a namespace with one node address.
func TestTraffic(t *testing.T) {
	fd := testNetns(t)
	nodeNetwork(t, fd)
	serveTCP(t, fd, "10.0.0.1:8080", "web")
	serveTCP(t, fd, "10.0.0.1:8081", "a")
	serveTCP(t, fd, "10.0.0.1:8082", "b")
	serveUDP(t, fd, "10.0.0.1:5353", "dns")

	two := func(svc string) []*discoveryv1.EndpointSlice {
		return []*discoveryv1.EndpointSlice{
			slice("default", svc, svc+"-a", []slicePort{{"http", v1.ProtocolTCP, 8081}}, readyEP("10.0.0.1", testNode)),
			slice("default", svc, svc+"-b", []slicePort{{"http", v1.ProtocolTCP, 8082}}, readyEP("10.0.0.1", testNode)),
		}
	}
	svcs := []*v1.Service{
		service("default", "web", "10.43.0.20", loadBalancer(30080, "10.0.0.1"), externalIPs("10.0.0.50")),
		service("default", "empty", "10.43.0.24", nodePort(30082)),
		service("default", "empty-udp", "10.43.0.25", ports(v1.ServicePort{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53})),
		service("default", "sticky", "10.43.0.30", affinity(60)),
		service("default", "spread", "10.43.0.31"),
		service("kube-system", "kube-dns", "10.43.0.10", ports(
			v1.ServicePort{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(5353)})),
	}
	eps := append([]*discoveryv1.EndpointSlice{
		slice("default", "web", "web-1", httpPort, readyEP("10.0.0.1", testNode)),
	}, append(two("sticky"), two("spread")...)...)

	s := testSyncer(t, fd, "skiff")
	s.SetDNSAddress(net.ParseIP("10.0.0.1"))
	if err := s.Sync(svcs, eps); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct{ what, network, addr, want string }{
		{"ClusterIP", "tcp4", "10.43.0.20:80", "web"},
		{"NodePort", "tcp4", "10.0.0.1:30080", "web"},
		{"load balancer IP", "tcp4", "10.0.0.1:80", "web"},
		{"external IP", "tcp4", "10.0.0.50:80", "web"},
		{"DNS Service to the node's DNS", "udp4", "10.43.0.10:53", "dns"},
	} {
		got, err := ask(fd, tc.network, tc.addr)
		if err != nil || got != tc.want {
			t.Errorf("%s %s: got %q, %v; want %q", tc.what, tc.addr, got, err, tc.want)
		}
	}

	for _, tc := range []struct{ what, network, addr string }{
		{"TCP without endpoints", "tcp4", "10.43.0.24:80"},
		{"UDP without endpoints", "udp4", "10.43.0.25:53"},
	} {
		start := time.Now()
		_, err := ask(fd, tc.network, tc.addr)
		// A datagram the node itself sends is dropped on its way out,
		// so the sender gets EPERM rather than the ICMP error pods get.
		refused := errors.Is(err, syscall.ECONNREFUSED) || tc.network == "udp4" && errors.Is(err, syscall.EPERM)
		if !refused || time.Since(start) > time.Second {
			t.Errorf("%s %s: %v after %s; want connection refused at once", tc.what, tc.addr, err, time.Since(start))
		}
	}

	seen := map[string]int{}
	for range 10 {
		got, err := ask(fd, "tcp4", "10.43.0.30:80")
		if err != nil {
			t.Fatal(err)
		}
		seen[got]++
	}
	if len(seen) != 1 {
		t.Errorf("session affinity: connections went to %v, want one endpoint", seen)
	}
	seen = map[string]int{}
	for range 40 {
		got, err := ask(fd, "tcp4", "10.43.0.31:80")
		if err != nil {
			t.Fatal(err)
		}
		seen[got]++
	}
	if len(seen) != 2 {
		t.Errorf("random choice: connections went to %v, want both endpoints", seen)
	}

	// A partial sync that removes web: its ClusterIP no longer leads anywhere.
	if err := s.Sync(without(svcs, "web"), eps); err != nil {
		t.Fatal(err)
	}
	if s.last.full {
		t.Error("removing a Service was a full sync")
	}
	if got, err := ask(fd, "tcp4", "10.43.0.20:80"); err == nil || strings.Contains(got, "web") {
		t.Errorf("deleted Service still answers: %q, %v", got, err)
	}
	if got, err := ask(fd, "tcp4", "10.43.0.31:80"); err != nil || (got != "a" && got != "b") {
		t.Errorf("other Service after a partial sync: %q, %v", got, err)
	}
}

// newNetns is another throwaway namespace (a client or a pod).
func newNetns(t *testing.T) int { return testNetns(t) }

// link makes a veth pair between namespaces a and b, with addresses, and
// a default route in b through a.
func link(t *testing.T, a, b int, nameA, addrA, nameB, addrB string) {
	t.Helper()
	ha, err := vnl.NewHandleAt(netns.NsHandle(a))
	if err != nil {
		t.Fatal(err)
	}
	defer ha.Close()
	hb, err := vnl.NewHandleAt(netns.NsHandle(b))
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Close()
	attrs := vnl.NewLinkAttrs()
	attrs.Name = nameA
	if err := ha.LinkAdd(&vnl.Veth{LinkAttrs: attrs, PeerName: nameB, PeerNamespace: vnl.NsFd(b)}); err != nil {
		t.Skipf("no veth: %v", err)
	}
	up := func(h *vnl.Handle, name, addr string) *vnl.Route {
		for _, n := range []string{"lo", name} {
			l, err := h.LinkByName(n)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
		}
		l, _ := h.LinkByName(name)
		a, _ := vnl.ParseAddr(addr)
		if err := h.AddrAdd(l, a); err != nil {
			t.Fatal(err)
		}
		return &vnl.Route{LinkIndex: l.Attrs().Index}
	}
	up(ha, nameA, addrA)
	r := up(hb, nameB, addrB)
	r.Gw = net.ParseIP(strings.Split(addrA, "/")[0])
	if err := hb.RouteAdd(r); err != nil {
		t.Fatal(err)
	}
}

func askFrom(fd int, network, addr string) (string, error) { return ask(fd, network, addr) }

// TestTrafficThroughNode sends connections through the node from a client
// outside (prerouting, forward, input) and from a pod, with the endpoint in
// the pod: masquerading, source preservation, rejects and drops.
func TestTrafficThroughNode(t *testing.T) {
	node, client, pod := testNetns(t), newNetns(t), newNetns(t)
	link(t, node, client, "uplink", "10.0.0.1/24", "eth0", "10.0.0.2/24")
	link(t, node, pod, "vethpod", "10.42.0.1/24", "eth0", "10.42.0.5/24")
	// Forwarding on. Redirects off: the hairpin case forwards a packet
	// back where it came from, and the redirect that would earn the pod
	// would use up the node's ICMP allowance for it, starving the port
	// unreachable errors tested below.
	if err := inNetns(node, func() error {
		for f, v := range map[string]string{
			"ipv4/ip_forward": "1", "ipv4/conf/all/send_redirects": "0",
			"ipv4/conf/uplink/send_redirects": "0", "ipv4/conf/vethpod/send_redirects": "0",
		} {
			if err := os.WriteFile("/proc/sys/net/"+f, []byte(v), 0o644); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The node's default route: ClusterIPs without endpoints are routed,
	// and meet the forward hook.
	h, err := vnl.NewHandleAt(netns.NsHandle(node))
	if err != nil {
		t.Fatal(err)
	}
	uplink, err := h.LinkByName("uplink")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&vnl.Route{LinkIndex: uplink.Attrs().Index, Gw: net.ParseIP("10.0.0.2")}); err != nil {
		t.Fatal(err)
	}
	h.Close()
	serveTCP(t, pod, "10.42.0.5:8080", "")
	serveTCP(t, client, "10.0.0.2:9000", "")
	// The next hop of the node's default route also holds addresses of the
	// Service range, a ClusterIP's among them, and answers there: what the
	// node lets out for the range would reach it.
	ch, err := vnl.NewHandleAt(netns.NsHandle(client))
	if err != nil {
		t.Fatal(err)
	}
	lo, err := ch.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"10.43.0.26/32", "10.43.0.99/32"} {
		addr, _ := vnl.ParseAddr(a)
		if err := ch.AddrAdd(lo, addr); err != nil {
			t.Fatal(err)
		}
	}
	ch.Close()
	serveTCP(t, client, "10.43.0.26:443", "leaked")
	serveTCP(t, client, "10.43.0.99:80", "leaked")
	serveUDP(t, client, "10.43.0.26:8081", "leaked")

	svcs := []*v1.Service{
		service("default", "web", "10.43.0.20", nodePort(30080)),
		service("default", "local", "10.43.0.21", nodePort(30081), externalLocal),
		service("default", "remote", "10.43.0.22", nodePort(30083), externalLocal),
		service("default", "empty", "10.43.0.24", nodePort(30082)),
		service("default", "empty-udp", "10.43.0.25", ports(v1.ServicePort{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53})),
		service("default", "open", "10.43.0.26", ports(v1.ServicePort{Name: "http", Port: 8081, TargetPort: intstr.FromInt32(8080)}),
			loadBalancer(30084, "10.0.0.1"), sourceRanges("192.0.2.0/24", " 10.0.0.0/24")),
		service("default", "fenced", "10.43.0.27", ports(v1.ServicePort{Name: "http", Port: 8082, TargetPort: intstr.FromInt32(8080)}),
			loadBalancer(30085, "10.0.0.1"), sourceRanges("192.0.2.0/24")),
	}
	eps := []*discoveryv1.EndpointSlice{
		slice("default", "open", "open-1", httpPort, readyEP("10.42.0.5", testNode)),
		slice("default", "fenced", "fenced-1", httpPort, readyEP("10.42.0.5", testNode)),
		slice("default", "web", "web-1", httpPort, readyEP("10.42.0.5", testNode)),
		slice("default", "local", "local-1", httpPort, readyEP("10.42.0.5", testNode)),
		slice("default", "remote", "remote-1", httpPort, readyEP("10.42.1.9", "node-b")),
	}
	s := testSyncer(t, node, "skiff")
	if err := s.Sync(svcs, eps); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		what    string
		from    int
		network string
		addr    string
		want    string
		wantErr error
	}{
		{"NodePort, Cluster policy: masqueraded", client, "tcp4", "10.0.0.1:30080", "10.42.0.1", nil},
		{"NodePort, Local policy: client address kept", client, "tcp4", "10.0.0.1:30081", "10.0.0.2", nil},
		{"ClusterIP from outside the cluster network: masqueraded", client, "tcp4", "10.43.0.20:80", "10.42.0.1", nil},
		{"hairpin: a pod reaching itself through its Service", pod, "tcp4", "10.43.0.20:80", "10.42.0.1", nil},
		{"pod egress: masqueraded", pod, "tcp4", "10.0.0.2:9000", "10.0.0.1", nil},
		{"ClusterIP without endpoints, from a pod", pod, "tcp4", "10.43.0.24:80", "", syscall.ECONNREFUSED},
		{"UDP ClusterIP without endpoints, from a pod", pod, "udp4", "10.43.0.25:53", "", syscall.ECONNREFUSED},
		{"NodePort without endpoints, from outside", client, "tcp4", "10.0.0.1:30082", "", syscall.ECONNREFUSED},
		{"ClusterIP without endpoints, from outside", client, "tcp4", "10.43.0.24:80", "", syscall.ECONNREFUSED},
		{"ClusterIP on a port no Service port has, from a pod", pod, "tcp4", "10.43.0.26:443", "", syscall.ECONNREFUSED},
		{"ClusterIP on a protocol its port does not have, from a pod", pod, "udp4", "10.43.0.26:8081", "", syscall.ECONNREFUSED},
		{"ClusterIP on a port no Service port has, from the node", node, "tcp4", "10.43.0.26:443", "", syscall.ECONNREFUSED},
		{"load balancer address, client in its source ranges", client, "tcp4", "10.0.0.1:8081", "10.42.0.1", nil},
		{"NodePort of a load balancer whose source ranges leave the client out", client, "tcp4", "10.0.0.1:30085", "10.42.0.1", nil},
	} {
		got, err := askFrom(tc.from, tc.network, tc.addr)
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("%s (%s): %q, %v; want %v", tc.what, tc.addr, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s (%s): %q, %v; want %q", tc.what, tc.addr, got, err, tc.want)
		}
	}
	// An unallocated address of the Service range: dropped (the dial times
	// out), never answered by the next hop, which holds it.
	for what, from := range map[string]int{"a pod": pod, "the node": node} {
		if got, err := askFrom(from, "tcp4", "10.43.0.99:80"); !isTimeout(err) {
			t.Errorf("unallocated address of the Service range, from %s: %q, %v; want a timeout", what, got, err)
		}
	}
	// Local policy without a local endpoint: outside clients are dropped
	// (the dial times out).
	if got, err := askFrom(client, "tcp4", "10.0.0.1:30083"); !errors.Is(err, os.ErrDeadlineExceeded) && !isTimeout(err) {
		t.Errorf("NodePort, Local policy, no local endpoint: %q, %v; want a timeout", got, err)
	}
	// A client outside a load balancer's source ranges: dropped.
	if got, err := askFrom(client, "tcp4", "10.0.0.1:8082"); !errors.Is(err, os.ErrDeadlineExceeded) && !isTimeout(err) {
		t.Errorf("load balancer address, client outside its source ranges: %q, %v; want a timeout", got, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
