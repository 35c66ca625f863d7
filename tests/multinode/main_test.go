// Package multinode tests a cluster of three machines: a server and two
// agents that join it by token, each in its own network namespace on one
// bridge, with its own data dir, containerd, kubelet root and cgroup root.
// Pods reach each other across the VXLAN overlay.
package multinode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/skiff-dev/skiff/tests/cluster"
)

var (
	lan    *cluster.LAN
	srv    *cluster.Server
	agents []*cluster.Server
	// nodes are the node names, in host order: server, agent-1, agent-2.
	nodes = []string{"server", "agent-1", "agent-2"}
)

func TestMain(m *testing.M) {
	os.Exit(cluster.LANMain(m, "multinode", 3, start, func() []*cluster.Server { return append(slices.Clone(agents), srv) }))
}

// start starts the server, then the agents: the first with the server's
// token, the second with a token made by `skiff token create`.
func start(dir string, l *cluster.LAN) error {
	lan = l
	var err error
	if srv, err = cluster.NewLANServer(filepath.Join(dir, "server"), lan.Hosts[0], "--node-name", nodes[0]); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		return err
	}
	kc, err := srv.HostKubeconfig()
	if err != nil {
		return err
	}
	code, extra := cluster.Run(ctx, nil, "token", "create", "--kubeconfig", kc, "--ttl", "1h")
	if code != 0 {
		return fmt.Errorf("skiff token create: %s", extra)
	}
	for i, name := range nodes[1:] {
		a, err := cluster.NewLANAgent(filepath.Join(dir, name), lan.Hosts[i+1], srv, "--node-name", name)
		if err != nil {
			return err
		}
		if i == 1 {
			a.Token = strings.TrimSpace(extra)
		}
		agents = append(agents, a)
		if err := a.StartProcess(); err != nil {
			return err
		}
	}
	cs, err := srv.Client()
	if err != nil {
		return err
	}
	return wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		for _, a := range agents {
			if a.Exited() {
				return false, fmt.Errorf("agent %s exited:\n%s", a.Dir, a.LogTail(30))
			}
		}
		for _, n := range nodes {
			if !cluster.NodeReady(ctx, cs, n) {
				return false, nil
			}
		}
		return true, nil
	})
}

// pod runs the test image on node with command, and waits until it runs.
func pod(t *testing.T, ns, name, node string, labels string, command ...string) *corev1.Pod {
	t.Helper()
	var quoted []string
	for _, c := range command {
		quoted = append(quoted, fmt.Sprintf("%q", c))
	}
	srv.KubectlT(t, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: %s, labels: {%s}}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: %s
    command: [%s]
    readinessProbe: {exec: {command: ["true"]}, periodSeconds: 1}
`, name, labels, node, cluster.BusyboxImage, strings.Join(quoted, ", ")), "apply", "-n", ns, "-f", "-")
	var p *corev1.Pod
	cluster.WaitFor(t, "pod "+name+" running on "+node, func(ctx context.Context) (bool, error) {
		var err error
		p, err = srv.ClientT(t).CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "", nil
	})
	return p
}

// inPod runs a command in a pod, retrying until it succeeds and its output
// contains want (a route or a rule may still be on its way), and returns
// the output.
func inPod(t *testing.T, ns, pod, want string, cmd ...string) string {
	t.Helper()
	var out string
	var err error
	cluster.WaitFor(t, fmt.Sprintf("%q in pod %s to print %q", strings.Join(cmd, " "), pod, want), func(ctx context.Context) (bool, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		out, err = srv.Kubectl(ctx, "", append([]string{"exec", "-n", ns, pod, "--"}, cmd...)...)
		return err == nil && strings.Contains(out, want), nil
	})
	return out
}
