package multinode

import (
	"context"
	"fmt"
	"os/exec"
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
// its Service no longer has (TCP changed to UDP on the same port) is
// refused at once, from a pod and from the node, and one to an address of
// the Service range that no Service holds is dropped, as kube-proxy does.
// The node's default route leads to a sink on the LAN that forwards
// nothing and answers on that unallocated address: what the node let out
// would be answered there, and nothing goes past the LAN.
func TestServiceRangeStaysOnTheNode(t *testing.T) {
	sink, remove, err := lan.Sink(lan.Hosts[1])
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	const unallocated = "10.43.255.254"
	if out, err := exec.Command("ip", "-n", sink.Netns, "addr", "add", unallocated+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	tool, err := cluster.ToolPath()
	if err != nil {
		t.Fatal(err)
	}
	leak := exec.Command("nsenter", "--net=/run/netns/"+sink.Netns, tool, "serve", "-port", "80")
	if err := leak.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { leak.Process.Kill(); leak.Wait() }()

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
	inPod(t, ns, "client", "refused", "tool", "dial", addr)
	cluster.WaitFor(t, addr+" refused on the node", func(ctx context.Context) (bool, error) {
		return strings.HasPrefix(onHost(t, lan.Hosts[1], "dial", addr), "refused"), nil
	})
	for what, out := range map[string]string{
		"a pod":    inPod(t, ns, "client", "", "tool", "dial", "-timeout", "2s", unallocated+":80"),
		"the node": onHost(t, lan.Hosts[1], "dial", "-timeout", "2s", unallocated+":80"),
	} {
		if !strings.HasPrefix(out, "timeout") {
			t.Errorf("the unallocated %s:80 from %s: %q, want a timeout (dropped on the node)", unallocated, what, out)
		}
	}
}
