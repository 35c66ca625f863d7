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

// TestSplitByCRD: the objects of a kind the add-ons' own CRDs define come
// after everything else, and every object is in one batch.
func TestSplitByCRD(t *testing.T) {
	all, err := Render(manifests.Values{ClusterDNS: "10.43.0.10", ClusterDomain: "cluster.local"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	batches := splitByCRD(all)
	if len(batches) != 2 || len(batches[0])+len(batches[1]) != len(all) {
		t.Fatalf("split %d objects into %d batches", len(all), len(batches))
	}
	crds := map[string]bool{}
	for _, u := range batches[0] {
		if u.GetKind() == "CustomResourceDefinition" {
			crds[u.GetName()] = true
		}
	}
	for _, u := range batches[1] {
		if u.GetKind() == "CustomResourceDefinition" {
			t.Fatalf("CRD %s in the second batch", u.GetName())
		}
	}
	var gatewayClass bool
	for _, u := range batches[1] {
		gatewayClass = gatewayClass || u.GetKind() == "GatewayClass"
	}
	if len(crds) > 0 && !gatewayClass {
		t.Fatalf("the GatewayClass is not after the CRDs: %v", batches[1])
	}
}
