package netpol

import (
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiff-dev/skiff/internal/netnstest"
	"github.com/skiff-dev/skiff/internal/nft"
)

// These tests program a real kernel and send real packets, always in
// throwaway network namespaces: a "node" that routes between "pods", each
// a namespace of its own with a /32 address and the node as its gateway,
// as calico wires them. The node's forward hook sees the pods' traffic, as
// a node's bridge (with bridge netfilter) or overlay does.

// lab is a node and its pods.
type lab struct {
	node int
	pods map[string]int // by address
}

func newLab(t *testing.T, addrs ...string) *lab {
	t.Helper()
	l := &lab{node: netnstest.New(t), pods: map[string]int{}}
	h, err := vnl.NewHandleAt(netns.NsHandle(l.node))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, _ := h.LinkByName("lo")
	h.LinkSetUp(lo)
	if err := netnstest.Run(l.node, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	gw := &net.IPNet{IP: net.ParseIP("10.42.0.1").To4(), Mask: net.CIDRMask(32, 32)}
	for i, a := range addrs {
		fd := netnstest.New(t)
		l.pods[a] = fd
		attrs := vnl.NewLinkAttrs()
		attrs.Name = "veth" + string(rune('a'+i))
		if err := h.LinkAdd(&vnl.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: vnl.NsFd(fd)}); err != nil {
			t.Skipf("no veth: %v", err)
		}
		host, err := h.LinkByName(attrs.Name)
		if err != nil {
			t.Fatal(err)
		}
		ip := &net.IPNet{IP: net.ParseIP(a).To4(), Mask: net.CIDRMask(32, 32)}
		if err := h.AddrAdd(host, &vnl.Addr{IPNet: gw}); err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(host); err != nil {
			t.Fatal(err)
		}
		if err := h.RouteAdd(&vnl.Route{LinkIndex: host.Attrs().Index, Dst: ip, Scope: vnl.SCOPE_LINK}); err != nil {
			t.Fatal(err)
		}
		ph, err := vnl.NewHandleAt(netns.NsHandle(fd))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"lo", "eth0"} {
			link, err := ph.LinkByName(name)
			if err != nil {
				t.Fatal(err)
			}
			if err := ph.LinkSetUp(link); err != nil {
				t.Fatal(err)
			}
			if name == "eth0" {
				if err := ph.AddrAdd(link, &vnl.Addr{IPNet: ip}); err != nil {
					t.Fatal(err)
				}
				if err := ph.RouteAdd(&vnl.Route{LinkIndex: link.Attrs().Index, Dst: gw, Scope: vnl.SCOPE_LINK}); err != nil {
					t.Fatal(err)
				}
				if err := ph.RouteAdd(&vnl.Route{LinkIndex: link.Attrs().Index, Gw: gw.IP}); err != nil {
					t.Fatal(err)
				}
			}
		}
		ph.Close()
	}
	return l
}

// serve answers on port (TCP and UDP) of the pod at addr: TCP connections
// get "hello" and then an echo of what they send, datagrams an echo.
func (l *lab) serve(t *testing.T, addr string, port string) {
	t.Helper()
	err := netnstest.Run(l.pods[addr], func() error {
		ln, err := net.Listen("tcp4", net.JoinHostPort(addr, port))
		if err != nil {
			return err
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					c.Write([]byte("hello"))
					io.Copy(c, c)
				}()
			}
		}()
		pc, err := net.ListenPacket("udp4", net.JoinHostPort(addr, port))
		if err != nil {
			return err
		}
		t.Cleanup(func() { pc.Close() })
		go func() {
			buf := make([]byte, 512)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(buf[:n], from)
			}
		}()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// dial opens a connection from the pod at from.
func (l *lab) dial(from, network, to string) (net.Conn, error) {
	var c net.Conn
	err := netnstest.Run(l.pods[from], func() error {
		var err error
		c, err = net.DialTimeout(network, to, 2*time.Second)
		return err
	})
	return c, err
}

// try connects from the pod at from to to, and says what happened: "ok",
// "refused" (a TCP reset, or an ICMP error for UDP), or the error.
func (l *lab) try(from, network, to string) string {
	c, err := l.dial(from, network, to)
	if err != nil {
		return outcome(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 5)
	if network == "udp4" {
		if _, err := c.Write([]byte("hello")); err != nil {
			return outcome(err)
		}
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		return outcome(err)
	}
	return "ok"
}

func outcome(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ECONNRESET):
		return "refused"
	case os.IsTimeout(err):
		return "timeout"
	}
	return err.Error()
}

func kernelSyncer(t *testing.T, fd int) *Syncer {
	return NewSyncer(Config{NodeName: testNode, Table: "skiff-netpol", ClusterCIDR: "10.42.0.0/16"}, fd)
}

// TestKernel programs policies into a real kernel and sends real
// connections through them.
func TestKernel(t *testing.T) {
	const client, server, other, fresh = "10.42.0.10", "10.42.0.11", "10.42.0.12", "10.42.0.13"
	l := newLab(t, client, server, other, fresh)
	for _, a := range []string{client, server, other, fresh} {
		l.serve(t, a, "8080")
		l.serve(t, a, "9090")
	}
	s := kernelSyncer(t, l.node)
	if err := s.Probe(); err != nil {
		t.Fatal(err)
	}
	cidrs := []string{"10.42.0.0/24"}
	nss := []*v1.Namespace{namespace("default"), namespace("prod", "env=prod")}
	// fresh is not in the API yet: its address is unknown.
	pods := []*v1.Pod{
		newPod("default", "client", testNode, client, podLabels("app=client")),
		newPod("default", "server", testNode, server, podLabels("app=web"), cport("http", v1.ProtocolTCP, 8080)),
		newPod("prod", "other", testNode, other, podLabels("app=other")),
	}
	sync := func(step string, pols ...*networkingv1.NetworkPolicy) {
		t.Helper()
		if err := s.Sync(cidrs, pods, nss, pols); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}
	expect := func(step string, cases ...[4]string) {
		t.Helper()
		for _, c := range cases {
			if got := l.try(c[0], c[1], c[2]); got != c[3] {
				t.Errorf("%s: %s -> %s %s: %s, want %s", step, c[0], c[1], c[2], got, c[3])
			}
		}
	}
	tcp := func(from, to, want string) [4]string { return [4]string{from, "tcp4", to, want} }
	udp := func(from, to, want string) [4]string { return [4]string{from, "udp4", to, want} }

	sync("no policies")
	expect("no policies", tcp(client, server+":8080", "ok"), udp(client, server+":9090", "ok"),
		tcp(fresh, server+":8080", "ok"), tcp(client, fresh+":8080", "ok"))

	// Web takes TCP 8080 from the client pods only (by the port's name),
	// UDP 9090 from prod.
	webIn := policy("default", "web-in", sel("app=web"), typeIngress, []networkingv1.NetworkPolicyIngressRule{
		{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app=client")}},
			Ports: []networkingv1.NetworkPolicyPort{tcp8080named()}},
		{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("env=prod")}},
			Ports: []networkingv1.NetworkPolicyPort{portOf(v1.ProtocolUDP, intstr.FromInt32(9000), 9100)}},
	}, nil)
	sync("web-in", webIn)
	expect("web-in",
		tcp(client, server+":8080", "ok"),
		tcp(client, server+":9090", "refused"),
		udp(client, server+":9090", "refused"),
		tcp(other, server+":8080", "refused"),
		udp(other, server+":9090", "ok"),
		// An ingress policy exists: the unknown address is reached by
		// nothing, and reaches what does not restrict it.
		tcp(client, fresh+":8080", "refused"),
		tcp(fresh, server+":8080", "refused"),
		tcp(fresh, client+":8080", "ok"),
	)

	// The client's egress: anywhere but the server (an ipBlock with an
	// except: interval set ranges before and after the hole, the last one
	// open-ended), and the server by its named port. The egress chain
	// is jumped to, so it returns to the forward chain, where the
	// server's ingress policy still judges.
	clientOut := policy("default", "client-out", sel("app=client"), typeEgress, nil, []networkingv1.NetworkPolicyEgressRule{
		{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{server + "/32"}}}}},
		{To: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app=web")}}, Ports: []networkingv1.NetworkPolicyPort{tcp8080named()}},
	})
	otherIn := policy("prod", "other-in", sel(), typeIngress, []networkingv1.NetworkPolicyIngressRule{
		{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.42.0.0/24", Except: []string{"10.42.0.0/28"}}}}},
	}, nil)
	sync("client-out", webIn, clientOut, otherIn)
	if s.Last.Full {
		t.Error("adding policies was a full sync")
	}
	expect("client-out",
		tcp(client, server+":8080", "ok"),
		tcp(client, server+":9090", "refused"),
		tcp(client, other+":8080", "refused"), // other's ipBlock starts after the client
		// The server, allowed by the client's egress to any address but
		// its own, is refused by its own ingress (the egress chain returned).
		udp(client, server+":9090", "refused"),
	)
	checkIntervals(t, l.node, s)

	// An established connection survives a policy change; a new one is
	// refused.
	c, err := l.dial(client, "tcp4", server+":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo := func(msg string) error {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != msg {
			return errors.New("echo: " + string(buf))
		}
		return nil
	}
	hello := make([]byte, 5)
	if _, err := io.ReadFull(c, hello); err != nil {
		t.Fatal(err)
	}
	if err := echo("one"); err != nil {
		t.Fatal(err)
	}
	// Policies add up: only without those that allow it is the client
	// refused.
	denyAll := policy("default", "deny-all", nil, typeBoth, nil, nil)
	sync("deny-all", otherIn, denyAll)
	if err := echo("two"); err != nil {
		t.Errorf("the established connection did not survive the new policy: %v", err)
	}
	expect("deny-all", tcp(client, server+":8080", "refused"), tcp(other, server+":8080", "refused"))

	// The new pod gets known: its namespace has no policy for it, so it is
	// reached again.
	pods = append(pods, newPod("prod", "fresh", testNode, fresh, podLabels("app=fresh")))
	sync("fresh known", otherIn, denyAll)
	expect("fresh known", tcp(other, fresh+":8080", "refused"), tcp(fresh, fresh+":8080", "ok"))
	pods = pods[:3]

	// Deleting the policies restores everything.
	sync("none again")
	expect("none again", tcp(client, server+":8080", "ok"), tcp(other, server+":9090", "ok"),
		udp(client, server+":9090", "ok"), tcp(client, fresh+":8080", "ok"))
}

func tcp8080named() networkingv1.NetworkPolicyPort {
	return portOf(v1.ProtocolTCP, intstr.FromString("http"), 0)
}

// checkIntervals reads the interval sets back from the kernel: it keeps a
// range as the start key and the key past its end (flagged as an interval
// end), adds nothing before the first range, and an open-ended last range
// is its start key alone.
func checkIntervals(t *testing.T, fd int, s *Syncer) {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	tb := &nftables.Table{Name: s.cfg.Table, Family: nftables.TableFamilyIPv4}
	for _, u := range s.applied.Units {
		for _, set := range u.Sets {
			if !set.Interval {
				continue
			}
			ks, err := conn.GetSetByName(tb, set.Name)
			if err != nil {
				t.Fatal(err)
			}
			elems, err := conn.GetSetElements(ks)
			if err != nil {
				t.Fatal(err)
			}
			var got, want []string
			for _, e := range elems {
				k := net.IP(e.Key).String()
				if e.IntervalEnd {
					k = "end " + k
				}
				got = append(got, k)
			}
			for _, m := range u.Members {
				if m.Set != set.Name {
					continue
				}
				want = append(want, net.IP(m.Key).String())
				if m.End != "" {
					want = append(want, "end "+net.IP(m.End).String())
				}
			}
			slices.Sort(got)
			slices.Sort(want)
			t.Logf("interval set %s (%s) in the kernel: %v", set.Name, u.Key, got)
			if !slices.Equal(got, want) {
				t.Errorf("interval set %s in the kernel: %v, want %v", set.Name, got, want)
			}
		}
	}
}

func TestProbe(t *testing.T) {
	fd := netnstest.New(t)
	s := kernelSyncer(t, fd)
	if err := s.Probe(); err != nil {
		t.Fatal(err)
	}
	for _, f := range features {
		b := nft.NewBatch(nft.IPv4, "skiff-probe-feature")
		rs := f.use(nft.IPv4)
		rs.Table = "skiff-probe-feature"
		nft.WriteFull(b, rs)
		b.DeleteTable()
		if err := b.Send(fd); err != nil {
			t.Errorf("%s: %v", f.name, err)
		}
	}
	conn, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	if tables, err := conn.ListTables(); err != nil || len(tables) != 0 {
		t.Errorf("the probe left %d tables behind (%v)", len(tables), err)
	}

	t.Setenv(ProbeFailEnv, "1")
	err = s.Probe()
	if err == nil || !strings.Contains(err.Error(), "reject") || !strings.Contains(err.Error(), "--disable-network-policy") ||
		strings.Contains(err.Error(), "\n") {
		t.Errorf("probe with %s=1: %v; want one line naming the reject expression and --disable-network-policy", ProbeFailEnv, err)
	}
}

// TestCleanup checks that Cleanup's deletion works with and without the
// table.
func TestCleanup(t *testing.T) {
	fd := netnstest.New(t)
	if err := cleanup("skiff-netpol", fd); err != nil {
		t.Fatalf("without the table: %v", err)
	}
	s := kernelSyncer(t, fd)
	if err := s.Sync(nil, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := cleanup("skiff-netpol", fd); err != nil {
		t.Fatal(err)
	}
	conn, _ := nftables.New(nftables.WithNetNSFd(fd))
	if tables, err := conn.ListTables(); err != nil || len(tables) != 0 {
		t.Errorf("%d tables left (%v)", len(tables), err)
	}
}
