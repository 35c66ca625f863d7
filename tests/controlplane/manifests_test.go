package controlplane

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-dev/skiff/tests/cluster"
)

const webManifest = `# a user's app
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: %NS%
spec:
  replicas: %N%
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: skiff.test/busybox:1}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: %NS%
spec:
  selector: {app: web}
  ports: [{port: 80}]
`

// TestManifestsDir: files dropped into <data-dir>/server/manifests are
// applied, kept applied as they change, and deleted with them.
func TestManifestsDir(t *testing.T) {
	cs := srv.ClientT(t)
	ns := srv.Namespace(t)
	dir := filepath.Join(srv.DataDir, "server", "manifests")
	write := func(name, content string) {
		t.Helper()
		// Written beside and renamed in, as an editor or `cp` then `mv` would.
		tmp := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	web := func(n string) string {
		return strings.NewReplacer("%NS%", ns, "%N%", n).Replace(webManifest)
	}
	replicas := func(want int32) func(ctx context.Context) (bool, error) {
		return func(ctx context.Context) (bool, error) {
			d, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			_, serr := cs.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{})
			return serr == nil && d.Spec.Replicas != nil && *d.Spec.Replicas == want, nil
		}
	}
	logHas := func(what string, parts ...string) {
		t.Helper()
		cluster.WaitFor(t, what, func(context.Context) (bool, error) {
			for _, l := range strings.Split(srv.LogTail(400), "\n") {
				all := true
				for _, p := range parts {
					all = all && strings.Contains(l, p)
				}
				if all {
					return true, nil
				}
			}
			return false, nil
		})
	}
	t.Cleanup(func() {
		for _, f := range []string{"web.yaml", "skipped.yaml", "skipped.yaml.skip", "broken.yaml", "unknown.yaml"} {
			os.Remove(filepath.Join(dir, f))
		}
	})

	cluster.Steps(t,
		cluster.Step{Name: "dropped file applied", Run: func(t *testing.T) {
			write("web.yaml", web("2"))
			cluster.WaitFor(t, "the Deployment (2 replicas) and Service of web.yaml", replicas(2))
			out := srv.KubectlT(t, "", "get", "addons.skiff.dev", "-n", "kube-system", "web", "-o", "jsonpath={.spec.source} {.status.count}")
			if out != "web.yaml 2" {
				t.Fatalf("the Addon of web.yaml: %q", out)
			}
		}},
		cluster.Step{Name: "edit applied", Run: func(t *testing.T) {
			write("web.yaml", web("3"))
			cluster.WaitFor(t, "the Deployment at 3 replicas", replicas(3))
		}},
		cluster.Step{Name: "edit prunes", Run: func(t *testing.T) {
			// The file without its Service: the Service goes.
			write("web.yaml", web("3")[:strings.Index(web("3"), "---")])
			cluster.WaitFor(t, "the Service to be deleted with its part of the file", func(ctx context.Context) (bool, error) {
				_, err := cs.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{})
				return apierrors.IsNotFound(err), nil
			})
		}},
		cluster.Step{Name: "skip file", Run: func(t *testing.T) {
			write("skipped.yaml.skip", "")
			write("skipped.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: skipped, namespace: "+ns+"}\n")
			// A file written after: applied, so the skipped one had its chance.
			write("later.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: later, namespace: "+ns+"}\n")
			t.Cleanup(func() { os.Remove(filepath.Join(dir, "later.yaml")) })
			cluster.WaitFor(t, "later.yaml applied", func(ctx context.Context) (bool, error) {
				_, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "later", metav1.GetOptions{})
				return err == nil, nil
			})
			if _, err := cs.CoreV1().ConfigMaps(ns).Get(cluster.Context(t), "skipped", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Fatalf("skipped.yaml was applied despite skipped.yaml.skip: %v", err)
			}
		}},
		cluster.Step{Name: "bad files", Run: func(t *testing.T) {
			write("broken.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [broken\n")
			logHas("the log to name broken.yaml and its line", `file="`+filepath.Join(dir, "broken.yaml")+`"`, "line 4: not valid YAML")
			write("unknown.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fine, namespace: "+ns+"}\n---\napiVersion: example.com/v1\nkind: NoSuchKind\nmetadata: {name: x}\n")
			logHas("the log to name unknown.yaml's unknown kind", `file="`+filepath.Join(dir, "unknown.yaml")+`"`, "line 5: unknown kind example.com/v1 NoSuchKind")
			// The rest of the dir still applies: web.yaml edited again.
			write("web.yaml", web("4"))
			cluster.WaitFor(t, "the Deployment at 4 replicas beside the bad files", func(ctx context.Context) (bool, error) {
				d, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
				return err == nil && *d.Spec.Replicas == 4, nil
			})
			events := srv.KubectlT(t, "", "get", "events", "-n", "kube-system", "--field-selector", "involvedObject.kind=Addon,involvedObject.name=broken", "-o", "jsonpath={.items[*].message}")
			if !strings.Contains(events, "broken.yaml: line 4: not valid YAML") {
				t.Errorf("no event on the Addon broken says why: %q", events)
			}
		}},
		cluster.Step{Name: "removed file deleted", Run: func(t *testing.T) {
			os.Remove(filepath.Join(dir, "web.yaml"))
			cluster.WaitFor(t, "web.yaml's Deployment to be deleted", func(ctx context.Context) (bool, error) {
				_, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
				return apierrors.IsNotFound(err), nil
			})
			cluster.WaitFor(t, "the Addon of the removed file to be deleted", func(ctx context.Context) (bool, error) {
				_, err := srv.Kubectl(ctx, "", "get", "addons.skiff.dev", "-n", "kube-system", "web")
				return err != nil && strings.Contains(err.Error(), "NotFound"), nil
			})
		}},
	)
}
