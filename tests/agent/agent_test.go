// Package agent tests `skiff agent`: the node half alone, joined to a server
// that runs only the control plane.
package agent

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/skiff-dev/skiff/tests/cluster"
)

func TestAgentJoinsAndRunsPods(t *testing.T) {
	server := cluster.StartT(t) // control plane only
	a, err := cluster.NewAgent(t.TempDir(), server, "--node-name", "edge-1", "--node-label", "skiff.test/role=edge")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Stop(); err != nil {
			t.Errorf("stopping the agent: %v", err)
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", a.LogTail(40))
		}
		if err := a.Teardown(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	if err := a.StartProcess(); err != nil {
		t.Fatal(err)
	}
	ctx := cluster.Context(t)
	cs := server.ClientT(t)
	err = wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if a.Exited() {
			return false, fmt.Errorf("agent exited:\n%s", a.LogTail(20))
		}
		n, err := cs.CoreV1().Nodes().Get(ctx, "edge-1", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return n.Labels["skiff.test/role"] == "edge", nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("node edge-1 never Ready with its label: %v", err)
	}

	ns := server.Namespace(t)
	if _, err := server.Kubectl(ctx, fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: hello}\nspec:\n  containers: [{name: c, image: %s, command: [sh, -c, 'echo hello from the agent; exec sleep 3600']}]\n", cluster.BusyboxImage), "apply", "-n", ns, "-f", "-"); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "hello", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning && p.Spec.NodeName == "edge-1", nil
	})
	if err != nil {
		t.Fatalf("pod never ran on the agent: %v", err)
	}
	// Logs come from the agent's kubelet over TLS that the API server
	// verifies against the cluster CA.
	var out string
	err = wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		out, err = server.Kubectl(ctx, "", "logs", "-n", ns, "hello")
		return err == nil && strings.Contains(out, "hello from the agent"), nil
	})
	if err != nil {
		t.Fatalf("kubectl logs: %q, %v", out, err)
	}
}

func TestAgentBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--server", "https://127.0.0.1:1"}, "needs credentials: give a kubeconfig"},
		{[]string{"--token", "K10abc::server:secret"}, "--token is not available"},
		{[]string{"--kubeconfig", dir + "/absent.yaml"}, "--kubeconfig: stat"},
	} {
		code, out := cluster.Run(context.Background(), nil, append([]string{"agent", "--data-dir", dir + "/data"}, tc.args...)...)
		if code == 0 || !strings.Contains(out, tc.want) || strings.Count(strings.TrimSpace(out), "\n") > 0 {
			t.Errorf("skiff agent %v: exit %d, want one line with %q:\n%s", tc.args, code, tc.want, out)
		}
	}
}
