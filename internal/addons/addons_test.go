package addons

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/skiff-dev/skiff/manifests"
)

func TestRender(t *testing.T) {
	v := manifests.Values{ClusterDNS: "10.43.0.10", ClusterDomain: "cluster.local"}
	all, err := Render(v, nil)
	if err != nil {
		t.Fatal(err)
	}
	var dnsIP string
	for _, u := range all {
		if u.GetKind() == "Service" && u.GetName() == "kube-dns" {
			dnsIP, _, _ = unstructured.NestedString(u.Object, "spec", "clusterIP")
		}
	}
	if dnsIP != "10.43.0.10" {
		t.Fatalf("kube-dns clusterIP = %q, want 10.43.0.10", dnsIP)
	}
	some, err := Render(v, []string{"dns"})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range some {
		if u.GetName() == "kube-dns" {
			t.Fatal("kube-dns rendered with dns disabled")
		}
	}
	if len(some) == 0 || len(some) >= len(all) {
		t.Fatalf("disabling dns left %d of %d objects", len(some), len(all))
	}
}

func TestCheckDisable(t *testing.T) {
	if err := CheckDisable([]string{"dns", "servicelb"}); err != nil {
		t.Fatal(err)
	}
	if err := CheckDisable([]string{"traefik"}); err == nil {
		t.Fatal("unknown name accepted")
	}
}
