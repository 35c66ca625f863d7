// Package upgrade tests an upgrade in place: a node made by the previous
// release, stopped, and started again from the same data dir by this one.
package upgrade

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// previous is the previous release: the commit before the second wave of
// features (trust, storage, deploys, datastore, registries, metrics), whose
// data dirs have no kubelet CA, no node password for the server's own node
// and pods whose runc shim is the skiff binary itself.
const previous = "afa1876"

// previousBinary is the previous release's binary: $SKIFF_PREVIOUS_BIN,
// else built once from this checkout's history into a dir next to the
// binary under test.
func previousBinary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("SKIFF_PREVIOUS_BIN"); b != "" {
		return b
	}
	// Named skiff, as the multicall binary needs to be to run containerd.
	out := filepath.Join(filepath.Dir(cluster.Binary()), "skiff-"+previous, "skiff")
	if _, err := os.Stat(out); err == nil {
		return out
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("git", "-C", root, "cat-file", "-e", previous+"^{commit}").Run(); err != nil {
		t.Skipf("the previous release %s is not in this checkout's history (a shallow clone?): give its binary with SKIFF_PREVIOUS_BIN", previous)
	}
	src := t.TempDir()
	archive := exec.Command("sh", "-c", fmt.Sprintf("git -C %q archive %s | tar -x -C %q", root, previous, src))
	if msg, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("unpacking %s: %v: %s", previous, err, msg)
	}
	t.Logf("building the previous release %s (once: it stays as %s)", previous, out)
	build := exec.Command("make", "-C", src, "build", "BIN="+out+".tmp", "VERSION="+previous, "COMMIT="+previous)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v: %s", previous, err, msg)
	}
	if err := os.Rename(out+".tmp", out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestUpgradeKeepsNodeAndPods: a node of the previous release with a pod
// running, upgraded in place with no manual step. The node is Ready again,
// the pod runs on in the same container (its shim, the old binary, lives
// on), exec and logs reach it through the kubelet, whose serving
// certificate now comes from the kubelet CA, the server's node is bound to
// a node password, and new pods start.
func TestUpgradeKeepsNodeAndPods(t *testing.T) {
	old := previousBinary(t)
	s, err := cluster.NewNode(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s.Bin = old
	s.StopAtEnd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatalf("the previous release: %v", err)
	}
	if err := s.WaitNodesReady(ctx); err != nil {
		t.Fatalf("the previous release's node: %v", err)
	}
	ns := s.Namespace(t)
	cs := s.ClientT(t)
	before := runPod(t, s, ns, "kept")

	if err := s.Stop(); err != nil {
		t.Fatalf("stopping the previous release: %v", err)
	}
	s.Bin = "" // this release, on the same data dir and flags
	if err := s.Start(ctx); err != nil {
		t.Fatalf("this release on the previous release's data dir: %v", err)
	}
	if err := s.WaitNodesReady(ctx); err != nil {
		t.Fatalf("the node after the upgrade: %v", err)
	}
	podKept(t, s, ns, before)
	runPod(t, s, ns, "new")

	code, out := cluster.Run(ctx, nil, "certificate", "check", "--data-dir", s.DataDir)
	if code != 0 || !regexp.MustCompile(`(?m)^server/tls/kubelet-ca\.crt\s.*\[CA\]`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^agent/serving-kubelet\.crt\s+\S+\s+skiff-kubelet-ca@`).MatchString(out) {
		t.Errorf("skiff certificate check after the upgrade: exit %d, want a kubelet CA that signed the kubelet's serving certificate:\n%s", code, out)
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 {
		t.Fatalf("nodes: %v %v", nodes, err)
	}
	node := nodes.Items[0].Name
	if _, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, node+".node-password.skiff", metav1.GetOptions{}); err != nil {
		t.Errorf("the server's node %s has no node password binding after the upgrade: %v", node, err)
	}
}

// TestUpgradeKeepsAgentAndPods: a control plane and an agent of the
// previous release, the agent with a pod, upgraded in place, the server
// first. The agent is Ready again with its pod running on, and its next
// renewal (at its start) gives it a serving certificate from the kubelet CA.
func TestUpgradeKeepsAgentAndPods(t *testing.T) {
	old := previousBinary(t)
	s := cluster.New(t.TempDir())
	s.Bin = old
	s.StopAtEnd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatalf("the previous release: %v", err)
	}
	a, err := cluster.NewAgent(t.TempDir(), s, "--node-name", "upgraded")
	if err != nil {
		t.Fatal(err)
	}
	a.Bin = old
	a.StopAtEnd(t) // stopped before the server
	if err := a.StartProcess(); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitNodesReady(ctx); err != nil {
		t.Fatalf("the previous release's agent: %v", err)
	}
	ns := s.Namespace(t)
	before := runPod(t, s, ns, "kept")

	for _, n := range []*cluster.Server{a, s} {
		if err := n.Stop(); err != nil {
			t.Fatalf("stopping the previous release's %s: %v", n.Dir, err)
		}
		n.Bin = ""
	}
	if err := s.Start(ctx); err != nil {
		t.Fatalf("this release's server on the previous release's data dir: %v", err)
	}
	if err := a.StartProcess(); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitNodesReady(ctx); err != nil {
		t.Fatalf("the agent after the upgrade: %v", err)
	}
	podKept(t, s, ns, before)
	runPod(t, s, ns, "new")
	code, out := cluster.Run(ctx, nil, "certificate", "check", "--data-dir", a.DataDir)
	if code != 0 || !regexp.MustCompile(`(?m)^agent/serving-kubelet\.crt\s+\S+\s+skiff-kubelet-ca@`).MatchString(out) {
		t.Errorf("skiff certificate check of the agent after the upgrade: exit %d, want its serving certificate from the kubelet CA:\n%s", code, out)
	}
}

// runPod runs the test image as pod name in ns, printing a line and
// sleeping, and waits until it is Ready.
func runPod(t *testing.T, s *cluster.Server, ns, name string) *corev1.Pod {
	t.Helper()
	s.KubectlT(t, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: %s}
spec:
  terminationGracePeriodSeconds: 0
  containers: [{name: c, image: %s, command: [sh, -c, 'echo started; sleep 3600']}]
`, name, cluster.BusyboxImage), "apply", "-n", ns, "-f", "-")
	return readyPod(t, s, ns, name)
}

func readyPod(t *testing.T, s *cluster.Server, ns, name string) *corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	cs := s.ClientT(t)
	cluster.WaitFor(t, "pod "+name+" Ready", func(ctx context.Context) (bool, error) {
		var err error
		p, err = cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].Ready, nil
	})
	return p
}

// podKept checks that the pod before the upgrade runs on in the same
// container at the same address, and that exec and logs reach it: the API
// server verifies the kubelet with the kubelet CA bundle.
func podKept(t *testing.T, s *cluster.Server, ns string, before *corev1.Pod) {
	t.Helper()
	after := readyPod(t, s, ns, before.Name)
	b, a := before.Status.ContainerStatuses[0], after.Status.ContainerStatuses[0]
	if a.ContainerID != b.ContainerID || a.RestartCount != 0 || after.Status.PodIP != before.Status.PodIP {
		t.Errorf("after the upgrade the pod runs container %s (%d restarts) at %s, want %s with no restart at %s",
			a.ContainerID, a.RestartCount, after.Status.PodIP, b.ContainerID, before.Status.PodIP)
	}
	// Once the kubelet has published its new port.
	cluster.WaitFor(t, "exec into the pod after the upgrade", func(ctx context.Context) (bool, error) {
		out, err := s.Kubectl(ctx, "", "exec", "-n", ns, before.Name, "--", "echo", "still here")
		return err == nil && strings.Contains(out, "still here"), nil
	})
	if out := s.KubectlT(t, "", "logs", "-n", ns, before.Name); !strings.Contains(out, "started") {
		t.Errorf("kubectl logs after the upgrade: %q", out)
	}
}
