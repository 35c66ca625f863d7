package hostport

import (
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/skiff-dev/skiff/internal/golden"
	"github.com/skiff-dev/skiff/internal/nft"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// pod is a running pod created age seconds after epoch, with ports.
func pod(name, ip string, age int, ports ...v1.ContainerPort) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name),
			CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(age) * time.Second))},
		Spec:   v1.PodSpec{Containers: []v1.Container{{Name: "c", Ports: ports}}},
		Status: v1.PodStatus{Phase: v1.PodRunning, PodIP: ip, PodIPs: []v1.PodIP{{IP: ip}}},
	}
}

func port(host, container int32, proto v1.Protocol, hostIP string) v1.ContainerPort {
	return v1.ContainerPort{HostPort: host, ContainerPort: container, Protocol: proto, HostIP: hostIP}
}

func TestGolden(t *testing.T) {
	hostNet := pod("host-network", "10.0.0.1", 0, port(9100, 9100, "", ""))
	hostNet.Spec.HostNetwork = true
	done := pod("done", "10.42.0.9", 0, port(8443, 443, "", ""))
	done.Status.Phase = v1.PodSucceeded
	pending := pod("pending", "", 0, port(8444, 443, "", ""))
	pods := []*v1.Pod{
		pod("web", "10.42.0.5", 1, port(18081, 80, v1.ProtocolTCP, ""), port(18081, 53, v1.ProtocolUDP, "")),
		// The same port on one address of the node, and an address of
		// the other family: not this table's.
		pod("admin", "10.42.0.6", 2, port(18082, 80, "", "192.168.1.10"), port(18083, 80, "", "fd00::1")),
		// Younger than web: the wildcard overlaps web's; the address
		// overlaps admin's.
		pod("late", "10.42.0.7", 3, port(18081, 8080, "", "0.0.0.0"), port(18082, 8080, "", "192.168.1.10"), port(18084, 8080, v1.ProtocolSCTP, "")),
		hostNet, done, pending,
	}
	rs, conflicts := ruleset(nft.IPv4, "skiff-hostports", pods)
	out := nft.Render(rs)
	for _, c := range conflicts {
		out += "# conflict: " + c.Pod.Name + " " + c.Port + " held by " + c.Holder + "\n"
	}
	golden.Check(t, "table", out)
	if len(conflicts) != 2 {
		t.Errorf("conflicts: %v; want late's 18081 and 18082", conflicts)
	}
	if !strings.Contains(out, "dnat to 10.42.0.7:8080") {
		t.Error("late's free hostPort 18084 is not served")
	}
}

// TestPartial: a pod that goes changes only its own mappings.
func TestPartial(t *testing.T) {
	a := pod("a", "10.42.0.5", 1, port(18081, 80, "", ""))
	b := pod("b", "10.42.0.6", 2, port(18082, 80, "", ""))
	before, _ := ruleset(nft.IPv4, "t", []*v1.Pod{a, b})
	after, _ := ruleset(nft.IPv4, "t", []*v1.Pod{b})
	batch := nft.NewBatch(nft.IPv4, "t")
	n, ok := nft.WritePartial(batch, before, after)
	if !ok || n != 1 {
		t.Fatalf("partial sync: %d units, %v; want one", n, ok)
	}
	msgs, err := batch.Describe()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(msgs, "\n")
	if !strings.Contains(got, "delete elements from set hostports") || !strings.Contains(got, "delete chain hp-") || strings.Contains(got, "add") {
		t.Errorf("removing a pod's hostPort:\n%s", got)
	}
}
