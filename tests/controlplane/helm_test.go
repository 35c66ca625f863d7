package controlplane

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/skiff-dev/skiff/tests/cluster"
)

var helmCharts = schema.GroupVersionResource{Group: "helm.cattle.io", Version: "v1", Resource: "helmcharts"}

// chartRepo serves a chart repository on loopback: index.yaml and the
// demo chart's versions.
func chartRepo(t *testing.T, versions ...string) string {
	t.Helper()
	charts := map[string][]byte{}
	for _, v := range versions {
		charts["/demo-"+v+".tgz"] = cluster.DemoChart(v)
	}
	var repo *httptest.Server
	repo = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/index.yaml" {
			var idx strings.Builder
			idx.WriteString("apiVersion: v1\nentries:\n  demo:\n")
			for _, v := range versions {
				fmt.Fprintf(&idx, "  - apiVersion: v2\n    name: demo\n    version: %s\n    created: %q\n    urls: [%s/demo-%s.tgz]\n", v, time.Now().Format(time.RFC3339), repo.URL, v)
			}
			w.Write([]byte(idx.String()))
			return
		}
		if c, ok := charts[r.URL.Path]; ok {
			w.Write(c)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(repo.Close)
	return repo.URL
}

// chartState is a HelmChart's release state: the Installed condition's
// reason and message, and the revision.
type chartState struct {
	reason, message string
	revision        int64
}

func helmChartState(ctx context.Context, dyn dynamic.Interface, ns, name string) (chartState, error) {
	u, err := dyn.Resource(helmCharts).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return chartState{}, err
	}
	var s chartState
	s.revision, _, _ = unstructured.NestedInt64(u.Object, "status", "revision")
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Installed" {
			s.reason, _ = m["reason"].(string)
			s.message, _ = m["message"].(string)
		}
	}
	return s, nil
}

// TestHelmChart: HelmCharts from a chart repository, from chartContent and
// from the static charts dir are installed, upgraded with their values and
// their HelmChartConfig's, seen by the helm CLI, and uninstalled on delete;
// charts that cannot be had say why in their status.
func TestHelmChart(t *testing.T) {
	cs := srv.ClientT(t)
	rc, err := srv.Config()
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	ns := srv.Namespace(t)
	target := ns + "-target"
	t.Cleanup(func() { cs.CoreV1().Namespaces().Delete(context.Background(), target, metav1.DeleteOptions{}) })
	repo := chartRepo(t, "0.1.0", "0.2.0")
	apply := func(doc string) {
		t.Helper()
		srv.KubectlT(t, doc, "apply", "-n", ns, "-f", "-")
	}
	waitRevision := func(name string, revision int64) {
		t.Helper()
		var last chartState
		cluster.WaitFor(t, fmt.Sprintf("HelmChart %s at revision %d", name, revision), func(ctx context.Context) (bool, error) {
			s, err := helmChartState(ctx, dyn, ns, name)
			if err != nil {
				return false, nil
			}
			if s.reason == "Failed" && s != last {
				t.Logf("HelmChart %s: %s", name, s.message)
			}
			last = s
			return s.reason == "Deployed" && s.revision == revision, nil
		})
	}
	configMap := func(ns, name string, want map[string]string) {
		t.Helper()
		var got map[string]string
		cluster.WaitFor(t, fmt.Sprintf("ConfigMap %s/%s with %v (last %v)", ns, name, want, got), func(ctx context.Context) (bool, error) {
			cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			got = cm.Data
			for k, v := range want {
				if cm.Data[k] != v {
					return false, nil
				}
			}
			return true, nil
		})
	}
	demo := func(values string) string {
		return fmt.Sprintf(`apiVersion: helm.cattle.io/v1
kind: HelmChart
metadata:
  name: demo
spec:
  repo: %s
  chart: demo
  version: 0.1.0
  targetNamespace: %s
  createNamespace: true
  set:
    size.width: 3
  valuesContent: |-
%s
`, repo, target, indent(values))
	}

	// From a repository: installed.
	apply(demo("greeting: hi"))
	waitRevision("demo", 1)
	configMap(target, "demo-cm", map[string]string{"greeting": "hi", "color": "none", "size": "3x1", "chart": "0.1.0"})
	if out := srv.KubectlT(t, "", "get", "helmcharts", "-n", ns); !strings.Contains(out, "demo") || !strings.Contains(out, "0.1.0") || !strings.Contains(out, "Deployed") {
		t.Errorf("kubectl get helmcharts shows no chart, version and status:\n%s", out)
	}

	// New values: upgraded.
	apply(demo("greeting: hello again\nsize: {height: 2}"))
	waitRevision("demo", 2)
	configMap(target, "demo-cm", map[string]string{"greeting": "hello again", "size": "3x2"})

	// A HelmChartConfig: upgraded with its values merged over the chart's.
	apply("apiVersion: helm.cattle.io/v1\nkind: HelmChartConfig\nmetadata: {name: demo}\nspec:\n  valuesContent: |-\n    color: blue\n    size: {height: 5}\n")
	waitRevision("demo", 3)
	configMap(target, "demo-cm", map[string]string{"greeting": "hello again", "color": "blue", "size": "3x5"})

	// The helm CLI sees an ordinary release, with the merged values.
	helm := helmCLI(t)
	var list []struct{ Name, Namespace, Status, Revision string }
	if err := json.Unmarshal([]byte(helm("list", "-A", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range list {
		if r.Name == "demo" && r.Namespace == target {
			found = true
			if r.Status != "deployed" || r.Revision != "3" {
				t.Errorf("helm list: release demo is %s at revision %s, want deployed at 3", r.Status, r.Revision)
			}
		}
	}
	if !found {
		t.Errorf("helm list -A does not list demo in %s: %+v", target, list)
	}
	if out := helm("history", "demo", "-n", target); strings.Count(out, "\n") < 4 {
		t.Errorf("helm history demo shows fewer than 3 revisions:\n%s", out)
	}
	var values map[string]any
	if err := json.Unmarshal([]byte(helm("get", "values", "demo", "-n", target, "-o", "json")), &values); err != nil {
		t.Fatal(err)
	}
	if values["greeting"] != "hello again" || values["color"] != "blue" {
		t.Errorf("helm get values: %v, want the HelmChart's and its config's merged", values)
	}

	// Deleted: uninstalled; the namespace stays.
	if err := dyn.Resource(helmCharts).Namespace(ns).Delete(context.Background(), "demo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	cluster.WaitFor(t, "the release's ConfigMap and the HelmChart to go", func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ConfigMaps(target).Get(ctx, "demo-cm", metav1.GetOptions{})
		_, errChart := dyn.Resource(helmCharts).Namespace(ns).Get(ctx, "demo", metav1.GetOptions{})
		return apierrors.IsNotFound(err) && apierrors.IsNotFound(errChart), nil
	})
	if out := helm("list", "-n", target, "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("helm list after the delete: %q", out)
	}
	if n, err := cs.CoreV1().Namespaces().Get(context.Background(), target, metav1.GetOptions{}); err != nil || n.DeletionTimestamp != nil {
		t.Errorf("the target namespace went with the release: %v", err)
	}

	// From chartContent, and from the static charts dir, with no
	// repository at all.
	apply(fmt.Sprintf("apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata: {name: inline}\nspec:\n  chartContent: %s\n  set: {color: green}\n",
		base64.StdEncoding.EncodeToString(cluster.DemoChart("0.3.0"))))
	static := filepath.Join(srv.DataDir, "server", "static", "charts")
	if err := os.WriteFile(filepath.Join(static, "demo-0.4.0.tgz"), cluster.DemoChart("0.4.0"), 0o600); err != nil {
		t.Fatal(err)
	}
	apply("apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata: {name: static}\nspec:\n  chart: https://%{KUBERNETES_API}%/static/charts/demo-0.4.0.tgz\n")
	waitRevision("inline", 1)
	waitRevision("static", 1)
	configMap(ns, "inline-cm", map[string]string{"chart": "0.3.0", "color": "green"})
	configMap(ns, "static-cm", map[string]string{"chart": "0.4.0"})

	// Bad input: each says why in its status; the others stay as they are.
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	for _, bad := range []struct{ name, spec, says string }{
		{"unreachable", "repo: " + closed.URL + "\n  chart: demo", "fetching chart demo from " + closed.URL},
		{"garbled", "chartContent: not-base64!", "spec.chartContent is not base64"},
		{"missing", "chart: nothing-here.tgz", "put the chart in " + static},
		{"badvalues", "chart: demo-0.4.0.tgz\n  valuesContent: '[a, b'", "spec.valuesContent"},
	} {
		apply(fmt.Sprintf("apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata: {name: %s}\nspec:\n  %s\n", bad.name, bad.spec))
		cluster.WaitFor(t, fmt.Sprintf("HelmChart %s to fail saying %q", bad.name, bad.says), func(ctx context.Context) (bool, error) {
			s, err := helmChartState(ctx, dyn, ns, bad.name)
			return err == nil && s.reason == "Failed" && strings.Contains(s.message, bad.says), nil
		})
	}
	if s, err := helmChartState(context.Background(), dyn, ns, "inline"); err != nil || s.reason != "Deployed" || s.revision != 1 {
		t.Errorf("HelmChart inline after the bad ones: %+v, %v", s, err)
	}
}

// helmCLI builds the real helm CLI from the module and returns a runner
// for it against the server, with its own config and cache dirs.
func helmCLI(t *testing.T) func(args ...string) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "helm")
	build := exec.Command("go", "build", "-o", bin, "helm.sh/helm/v4/cmd/helm")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the helm CLI: %v\n%s", err, out)
	}
	return func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--kubeconfig", srv.Kubeconfig}, args...)...)
		cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+filepath.Join(dir, "config"), "HELM_CACHE_HOME="+filepath.Join(dir, "cache"), "HELM_DATA_HOME="+filepath.Join(dir, "data"))
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
