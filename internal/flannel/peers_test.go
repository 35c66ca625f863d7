package flannel

import (
	"net"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func node(name, cidr, mac, ip string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{}}, Spec: corev1.NodeSpec{PodCIDR: cidr}}
	if mac != "" {
		n.Annotations[annBackendType] = "vxlan"
		n.Annotations[annBackendData] = `{"VNI":1,"VtepMAC":"` + mac + `"}`
		n.Annotations[annPublicIP] = ip
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	}
	return n
}

var cluster = func() *net.IPNet { _, c, _ := net.ParseCIDR("10.42.0.0/16"); return c }()

func peers(self string, vni int, nodes []*corev1.Node) []Peer {
	p, _ := Peers(self, vni, cluster, nodes)
	return p
}

func keys(m map[string]Peer) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestDesired(t *testing.T) {
	nodes := []*corev1.Node{
		node("self", "10.42.0.0/24", "aa:aa:aa:aa:aa:aa", "192.168.1.10"),
		node("b", "10.42.1.0/24", "BB:bb:bb:bb:bb:bb", "192.168.1.11"),
		node("c", "10.42.2.0/24", "cc:cc:cc:cc:cc:cc", "192.168.1.12"),
		node("no-cidr", "", "dd:dd:dd:dd:dd:dd", "192.168.1.13"),         // not assigned a range yet
		node("no-vtep", "10.42.4.0/24", "", ""),                          // overlay not up yet
		node("bad-mac", "10.42.5.0/24", "not-a-mac", "192.168.1.15"),     // ignored, logged
		node("bad-ip", "10.42.6.0/24", "ee:ee:ee:ee:ee:ee", "somewhere"), // ignored, logged
		node("v6", "fd00::/64", "ff:ff:ff:ff:ff:ff", "192.168.1.17"),     // IPv4 only
	}
	s := Desired(peers("self", 1, nodes))
	if got, want := keys(s.Routes), []string{"10.42.1.0/24|10.42.1.0", "10.42.2.0/24|10.42.2.0"}; !reflect.DeepEqual(got, want) {
		t.Errorf("routes = %v, want %v", got, want)
	}
	if got, want := keys(s.Neigh), []string{"10.42.1.0|bb:bb:bb:bb:bb:bb", "10.42.2.0|cc:cc:cc:cc:cc:cc"}; !reflect.DeepEqual(got, want) {
		t.Errorf("neighbour entries = %v, want %v", got, want)
	}
	if got, want := keys(s.FDB), []string{"192.168.1.11|bb:bb:bb:bb:bb:bb", "192.168.1.12|cc:cc:cc:cc:cc:cc"}; !reflect.DeepEqual(got, want) {
		t.Errorf("forwarding entries = %v, want %v", got, want)
	}
}

// A node that comes back with a new MAC (its device was recreated) or moves
// to another IP gets new entries; the old ones are no longer wanted, and a
// deleted node leaves nothing.
func TestDesiredFollowsChanges(t *testing.T) {
	before := Desired(peers("self", 1, []*corev1.Node{
		node("b", "10.42.1.0/24", "bb:bb:bb:bb:bb:bb", "192.168.1.11"),
		node("c", "10.42.2.0/24", "cc:cc:cc:cc:cc:cc", "192.168.1.12"),
	}))
	after := Desired(peers("self", 1, []*corev1.Node{
		node("b", "10.42.1.0/24", "b2:bb:bb:bb:bb:bb", "192.168.1.21"),
	}))
	if _, ok := after.FDB["192.168.1.11|bb:bb:bb:bb:bb:bb"]; ok {
		t.Error("b's old forwarding entry is still wanted")
	}
	if _, ok := after.FDB["192.168.1.21|b2:bb:bb:bb:bb:bb"]; !ok {
		t.Errorf("b's new forwarding entry is missing: %v", keys(after.FDB))
	}
	if _, ok := after.Neigh["10.42.1.0|b2:bb:bb:bb:bb:bb"]; !ok {
		t.Errorf("b's new neighbour entry is missing: %v", keys(after.Neigh))
	}
	for _, m := range []map[string]Peer{after.Routes, after.Neigh, after.FDB} {
		for k, p := range m {
			if p.Node == "c" {
				t.Errorf("deleted node c still has %s", k)
			}
		}
	}
	if len(before.Routes) != 2 || len(after.Routes) != 1 {
		t.Errorf("routes before %v, after %v", keys(before.Routes), keys(after.Routes))
	}
}

func TestVNI(t *testing.T) {
	for cidr, want := range map[string]int{
		"10.42.0.0/16":   1, // flannel's, k3s's
		"10.142.0.0/16":  0x0a8e00,
		"10.42.0.0/17":   0x0a2a00, // not the default range: not 1
		"10.42.128.0/17": 0x0a2a80,
		"192.168.0.0/16": 0xc0a800,
	} {
		if got, err := VNI(cidr); err != nil || got != want {
			t.Errorf("VNI(%s) = %d, %v; want %d", cidr, got, err, want)
		}
	}
	if _, err := VNI("fd00::/48"); err == nil {
		t.Error("VNI of an IPv6 range: no error")
	}
}

func TestPeersOnAnotherVNI(t *testing.T) {
	nodes := []*corev1.Node{node("b", "10.42.1.0/24", "bb:bb:bb:bb:bb:bb", "192.168.1.11")}
	if got := peers("self", 2, nodes); len(got) != 0 {
		t.Errorf("a node on VNI 1 is a peer on VNI 2: %v", got)
	}
}

// What one bad Node object may not do: route a LAN or another node's pods to
// itself, or send the overlay's traffic to an address it does not have.
func TestPeersTrustOnlyTheClusterRange(t *testing.T) {
	lan := node("lan", "192.168.1.0/24", "a1:aa:aa:aa:aa:aa", "192.168.1.30")
	wide := node("wide", "10.42.0.0/16", "a2:aa:aa:aa:aa:aa", "192.168.1.31")
	over := node("over", "0.0.0.0/0", "a3:aa:aa:aa:aa:aa", "192.168.1.32")
	early := node("z-early", "10.42.1.0/24", "a4:aa:aa:aa:aa:aa", "192.168.1.33")
	late := node("a-late", "10.42.1.0/25", "a5:aa:aa:aa:aa:aa", "192.168.1.34")
	late.CreationTimestamp = metav1.NewTime(early.CreationTimestamp.Add(time.Minute))
	mine := node("mine", "10.42.0.0/24", "a6:aa:aa:aa:aa:aa", "192.168.1.35")
	self := node("self", "10.42.0.0/24", "", "")
	elsewhere := node("elsewhere", "10.42.7.0/24", "a7:aa:aa:aa:aa:aa", "192.168.1.36")
	elsewhere.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.1.99"}}
	got, ignored := Peers("self", 1, cluster, []*corev1.Node{lan, wide, over, late, early, mine, self, elsewhere})
	if len(got) != 1 || got[0].Node != "z-early" {
		t.Errorf("peers %v, want only z-early", got)
	}
	for n, want := range map[string]string{
		"lan":       "pod CIDR 192.168.1.0/24 is not a range inside the cluster's 10.42.0.0/16",
		"wide":      "pod CIDR 10.42.0.0/16 is not a range inside the cluster's 10.42.0.0/16",
		"over":      "not a range inside the cluster",
		"a-late":    "overlaps another node's 10.42.1.0/24",
		"mine":      "overlaps another node's 10.42.0.0/24",
		"elsewhere": "public IP 192.168.1.36 is not one of the node's addresses",
	} {
		if !strings.Contains(ignored[n], want) {
			t.Errorf("node %s ignored for %q, want %q", n, ignored[n], want)
		}
	}
}
