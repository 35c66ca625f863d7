package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// hostPortPod runs the tool's echo server (HTTP and UDP on 8080) with
// hostPort port of protocol proto (on hostIP, if given), and waits until
// it runs.
func hostPortPod(t *testing.T, ns, name string, port int, proto string, hostIP ...string) {
	t.Helper()
	ip := ""
	if len(hostIP) > 0 {
		ip = ", hostIP: " + hostIP[0]
	}
	srv.KubectlT(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: echo
    image: %s
    command: [tool, serve, -port, "8080"]
    ports: [{containerPort: 8080, hostPort: %d, protocol: %s%s}]
`, name, image, port, proto, ip), "apply", "-n", ns, "-f", "-")
	waitPod(t, ns, name, "running", running)
}

// TestHostPort: a pod's hostPort answers on the node's address from the
// host, from another pod and from the pod itself, with no nft program on
// the node's PATH; a second pod has the same port for another protocol;
// the port goes with the pod.
func TestHostPort(t *testing.T) {
	t.Parallel()
	ns := srv.Namespace(t)
	node := nodeIP(t)
	hostPortPod(t, ns, "hp-tcp", 18081, "TCP")
	hostPortPod(t, ns, "hp-udp", 18081, "UDP")
	client := clientPod(t, ns)
	url := fmt.Sprintf("http://%s:18081/", node)

	cluster.WaitFor(t, "the hostPort from the host", func(ctx context.Context) (bool, error) {
		body, err := httpGet(url)
		return err == nil && strings.HasPrefix(body, "host=hp-tcp "), nil
	})
	if out := inPod(t, ns, client, "tool", "get", url); !strings.HasPrefix(out, "host=hp-tcp ") {
		t.Errorf("hostPort from another pod: %q", out)
	}
	if out := inPod(t, ns, "hp-tcp", "tool", "get", url); !strings.HasPrefix(out, "host=hp-tcp ") {
		t.Errorf("hostPort from the pod itself: %q", out)
	}
	if out := inPod(t, ns, client, "tool", "udp", node+":18081"); !strings.HasPrefix(out, "host=hp-udp ") {
		t.Errorf("UDP hostPort from another pod: %q", out)
	}

	// The same port on two addresses of the node, loopback one of them,
	// as the upstream conformance suite's HostPort test has it.
	hostPortPod(t, ns, "hp-loopback", 18083, "TCP", "127.0.0.1")
	hostPortPod(t, ns, "hp-node", 18083, "TCP", node)
	for addr, want := range map[string]string{"127.0.0.1": "host=hp-loopback ", node: "host=hp-node "} {
		cluster.WaitFor(t, "the hostPort on "+addr, func(ctx context.Context) (bool, error) {
			body, err := httpGet("http://" + addr + ":18083/")
			return err == nil && strings.HasPrefix(body, want), nil
		})
	}

	srv.KubectlT(t, "", "delete", "pod", "-n", ns, "hp-tcp", "--wait=true")
	var err error
	cluster.WaitFor(t, "the deleted pod's hostPort to refuse connections", func(ctx context.Context) (bool, error) {
		_, err = httpGet(url)
		return errors.Is(err, syscall.ECONNREFUSED), nil
	})
	if out := inPod(t, ns, client, "tool", "udp", node+":18081"); !strings.HasPrefix(out, "host=hp-udp ") {
		t.Errorf("UDP hostPort after the TCP one's pod went: %q", out)
	}
}
