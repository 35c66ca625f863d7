package helmchart

import (
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestValuesMergeAndSet(t *testing.T) {
	values := map[string]any{}
	for _, doc := range []string{
		"greeting: hi\nsize: {width: 1, height: 1}\nlist: [a]",
		"size: {height: 5}\nlist: [b, c]\ncolor: blue",
	} {
		if err := mergeYAML(values, doc, "test"); err != nil {
			t.Fatal(err)
		}
	}
	err := set(values, map[string]intstr.IntOrString{
		"size.width": intstr.FromInt32(3),
		"enabled":    intstr.FromString("true"),
		"tag":        intstr.FromString("1.10"),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"greeting": "hi",
		"size":     map[string]any{"width": int64(3), "height": float64(5)},
		"list":     []any{"b", "c"},
		"color":    "blue",
		"enabled":  true,
		"tag":      "1.10",
	}
	if !reflect.DeepEqual(values, want) {
		t.Errorf("merged values\n%#v\nwant\n%#v", values, want)
	}
	if err := mergeYAML(values, "[not, a, map]", "spec.valuesContent"); err == nil {
		t.Error("a YAML list was taken for values")
	}
}

func TestStaticName(t *testing.T) {
	for _, c := range []struct {
		spec   Spec
		name   string
		static bool
	}{
		{Spec{Chart: "https://%{KUBERNETES_API}%/static/charts/traefik-1.0.tgz"}, "traefik-1.0.tgz", true},
		{Spec{Chart: "demo-0.1.0.tgz"}, "demo-0.1.0.tgz", true},
		{Spec{Chart: "demo-0.1.0.tgz", Repo: "https://charts.example"}, "", false},
		{Spec{Chart: "https://charts.example/demo-0.1.0.tgz"}, "", false},
		{Spec{Chart: "oci://registry.example/demo"}, "", false},
		{Spec{Chart: "https://%{KUBERNETES_API}%/static/charts/../../tls/server.key"}, "../../tls/server.key", true},
	} {
		name, static := staticName(c.spec)
		if name != c.name || static != c.static {
			t.Errorf("staticName(%q) = %q, %v; want %q, %v", c.spec.Chart, name, static, c.name, c.static)
		}
	}
}
