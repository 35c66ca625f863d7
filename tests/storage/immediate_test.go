package storage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// immediateClasses: a local-path class that binds at once (Immediate) gets
// its claims provisioned on the node its allowedTopologies name, with no pod
// yet; one that names no single node, or a node the cluster lacks, leaves
// its claims Pending with one event from one node saying what to do.
func immediateClasses(t *testing.T) {
	ns := srv.Namespace(t)
	class := func(name, topology string) string {
		return fmt.Sprintf(`
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: %s}
provisioner: skiff.dev/local-path
volumeBindingMode: Immediate
%s---
`, name, topology)
	}
	on := func(nodes ...string) string {
		return fmt.Sprintf("allowedTopologies:\n- matchLabelExpressions:\n  - {key: kubernetes.io/hostname, values: [%s]}\n", strings.Join(nodes, ", "))
	}
	srv.KubectlT(t, class("on-server", on(nodes[0]))+class("on-agent", on(nodes[1]))+class("anywhere", "")+
		class("two-nodes", on(nodes...))+class("no-such-node", on("nowhere")), "apply", "-f", "-")
	t.Cleanup(func() {
		srv.Kubectl(context.Background(), "", "delete", "storageclass", "on-server", "on-agent", "anywhere", "two-nodes", "no-such-node")
	})
	claim := func(name, class string) string {
		return fmt.Sprintf(`
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: %s}
spec:
  storageClassName: %s
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
---
`, name, class)
	}
	// The claims no node can take first: each node's provisioner has
	// dealt with them by the time it provisions the claims after them.
	srv.KubectlT(t, claim("anywhere", "anywhere")+claim("two-nodes", "two-nodes")+claim("no-such-node", "no-such-node"), "apply", "-n", ns, "-f", "-")
	srv.KubectlT(t, claim("on-server", "on-server")+claim("on-agent", "on-agent"), "apply", "-n", ns, "-f", "-")

	cs := srv.ClientT(t)
	for i, name := range []string{"on-server", "on-agent"} {
		node := nodes[i]
		var c *corev1.PersistentVolumeClaim
		cluster.WaitFor(t, "claim "+name+" Bound with no pod", func(ctx context.Context) (bool, error) {
			var err error
			c, err = cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
			return err == nil && c.Status.Phase == corev1.ClaimBound, nil
		})
		pv, err := cs.CoreV1().PersistentVolumes().Get(context.Background(), c.Spec.VolumeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := pinnedTo(pv); got != node {
			t.Errorf("volume %s of claim %s is pinned to %q, want %s, the node its class names", pv.Name, name, got, node)
		}
		dir := filepath.Join(dataDir(node), "storage", fmt.Sprintf("%s_%s_%s", pv.Name, ns, name))
		if pv.Spec.Local == nil || pv.Spec.Local.Path != dir {
			t.Errorf("volume %s is not a local volume at %s: %+v", pv.Name, dir, pv.Spec.PersistentVolumeSource)
		}
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			t.Errorf("volume dir %s on %s: %v", dir, node, err)
		}
	}
	// A pod of the claim goes where the volume is, with no node selector.
	srv.KubectlT(t, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: user}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {name: c, image: %s, command: [sleep, "3600"], volumeMounts: [{name: v, mountPath: /data}]}
  volumes: [{name: v, persistentVolumeClaim: {claimName: on-agent}}]
`, cluster.BusyboxImage), "apply", "-n", ns, "-f", "-")
	if pod := waitRunning(t, ns, "user"); pod.Spec.NodeName != nodes[1] {
		t.Errorf("the pod of claim on-agent runs on %s, its volume is on %s", pod.Spec.NodeName, nodes[1])
	}
	inPod(t, ns, "user", "sh", "-c", "echo ok > /data/f")

	// The node that refuses is the Ready node whose name sorts first.
	reporter := nodes[1]
	if nodes[0] < reporter {
		reporter = nodes[0]
	}
	for _, c := range []struct{ name, want string }{
		{"anywhere", "StorageClass anywhere binds claims at once (volumeBindingMode Immediate) and its allowedTopologies name no single node, but a local-path volume lives on one node: use volumeBindingMode WaitForFirstConsumer, or name exactly one node in allowedTopologies (key kubernetes.io/hostname, one value)"},
		{"two-nodes", "StorageClass two-nodes binds claims at once (volumeBindingMode Immediate) and its allowedTopologies name no single node"},
		{"no-such-node", "StorageClass no-such-node's allowedTopologies name node nowhere, which is not a node of this cluster: name one that is (kubectl get nodes)"},
	} {
		var failed []corev1.Event
		cluster.WaitFor(t, "an event on claim "+c.name+" saying "+c.want, func(ctx context.Context) (bool, error) {
			evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=PersistentVolumeClaim,involvedObject.name=" + c.name})
			if err != nil {
				return false, err
			}
			failed = nil
			found := false
			for _, e := range evs.Items {
				if e.Reason == "ProvisioningFailed" {
					failed = append(failed, e)
					found = found || (strings.Contains(e.Message, c.want) && !strings.Contains(e.Message, "\n"))
				}
			}
			return found, nil
		})
		for _, e := range failed {
			if by := provisionerNode(t, e.Source.Component); by != reporter {
				t.Errorf("claim %s: a ProvisioningFailed event came from node %q's provisioner (%s), want only %s's: %s", c.name, by, e.Source.Component, reporter, e.Message)
			}
		}
		got, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), c.name, metav1.GetOptions{})
		if err != nil || got.Status.Phase != corev1.ClaimPending {
			t.Errorf("claim %s: %v %v, want Pending", c.name, err, got.Status.Phase)
		}
	}
}

// provisionerNode is the node whose log shows the provisioner controller
// named component starting, or "" for none.
func provisionerNode(t *testing.T, component string) string {
	t.Helper()
	var found []string
	for _, n := range []*cluster.Server{srv, agent} {
		log, err := os.ReadFile(n.Log)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(log), "\n") {
			if strings.Contains(line, `"Starting provisioner controller"`) && strings.Contains(line, ` component="`+component+`"`) {
				found = append(found, n.Dir)
				break
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("provisioner %s started in the logs of %v, want one node's", component, found)
	}
	if found[0] == srv.Dir {
		return nodes[0]
	}
	return nodes[1]
}
