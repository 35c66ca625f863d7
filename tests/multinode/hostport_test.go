package multinode

import (
	"context"
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// This file's tests run before multinode_test.go's, which end by restarting
// the server and deleting a node.

// onHost runs the test image's tool on host h of the LAN and returns its
// output.
func onHost(t *testing.T, h *cluster.LANHost, args ...string) string {
	t.Helper()
	tool, err := cluster.ToolPath()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := h.Run(append([]string{tool}, args...)...)
	return out
}

// TestHostPortFromEveryWhere: a pod's hostPort on an agent answers on the
// agent's address from this machine (a host of the LAN), from another
// node, from the agent itself and from a pod on another node.
func TestHostPortFromEveryWhere(t *testing.T) {
	ns := srv.Namespace(t)
	srv.KubectlT(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: hp}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: %s
    command: [tool, serve, -port, "8080"]
    ports: [{containerPort: 8080, hostPort: 18081}]
`, nodes[1], cluster.BusyboxImage), "apply", "-n", ns, "-f", "-")
	pod(t, ns, "client", nodes[0], "app: client", "sleep", "3600")
	url := fmt.Sprintf("http://%s:18081/", lan.Hosts[1].IP)
	cluster.WaitFor(t, "the hostPort from a host of the LAN", func(ctx context.Context) (bool, error) {
		body, err := httpGet(ctx, url)
		return err == nil && strings.HasPrefix(body, "host=hp "), nil
	})
	for i, what := range map[int]string{0: "another node", 1: "the node itself"} {
		if out := onHost(t, lan.Hosts[i], "get", url); !strings.HasPrefix(out, "host=hp ") {
			t.Errorf("hostPort from %s: %q", what, out)
		}
	}
	inPod(t, ns, "client", "host=hp ", "tool", "get", url)
}

// TestServiceRangeStaysOnTheNode: a connection to a ClusterIP on a port
// its Service no longer has (TCP changed to UDP on the same port), or to an
// address of the Service range that no Service holds, is refused at once,
// from a pod and from the node. The LAN's hosts have no default route, so
// a failing check cannot send anything past the LAN: it would say
// "unreachable" instead.
func TestServiceRangeStaysOnTheNode(t *testing.T) {
	ns := srv.Namespace(t)
	echoService(t, ns, nodes[2], "")
	pod(t, ns, "client", nodes[1], "app: client", "sleep", "3600")
	svc, err := srv.ClientT(t).CoreV1().Services(ns).Get(context.Background(), "echo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	addr := svc.Spec.ClusterIP + ":80"
	inPod(t, ns, "client", "connected", "tool", "dial", addr)
	srv.KubectlT(t, "", "patch", "service", "-n", ns, "echo", "--type=json",
		`-p=[{"op":"replace","path":"/spec/ports/0/protocol","value":"UDP"}]`)
	for _, a := range []string{addr, "10.43.255.254:80"} {
		inPod(t, ns, "client", "refused", "tool", "dial", a)
		cluster.WaitFor(t, a+" refused on the node", func(ctx context.Context) (bool, error) {
			return strings.HasPrefix(onHost(t, lan.Hosts[1], "dial", a), "refused"), nil
		})
	}
}
