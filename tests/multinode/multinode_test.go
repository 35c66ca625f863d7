package multinode

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// The tests run in file order: the last ones restart the server and delete
// a node.

func TestNodesHaveDistinctPodCIDRsAndOverlay(t *testing.T) {
	seen := map[string]string{}
	for i, name := range nodes {
		n, err := srv.ClientT(t).CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n.Spec.PodCIDR == "" || seen[n.Spec.PodCIDR] != "" {
			t.Errorf("node %s has pod CIDR %q (already taken by %q)", name, n.Spec.PodCIDR, seen[n.Spec.PodCIDR])
		}
		seen[n.Spec.PodCIDR] = name
		h := lan.Hosts[i]
		if got := n.Annotations["flannel.alpha.coreos.com/public-ip"]; got != h.IP {
			t.Errorf("node %s publishes VTEP IP %q, want %s", name, got, h.IP)
		}
		if !strings.Contains(n.Annotations["flannel.alpha.coreos.com/backend-data"], "VtepMAC") {
			t.Errorf("node %s publishes no VTEP MAC: %v", name, n.Annotations)
		}
		out, err := h.Run("ip", "-d", "link", "show", overlay(i))
		if err != nil || !strings.Contains(out, "vxlan id 1 ") || !strings.Contains(out, "dstport 8472") || !strings.Contains(out, "mtu 1450") {
			t.Errorf("%s on %s is not VXLAN VNI 1, port 8472, MTU 1450 (%v):\n%s", overlay(i), name, err, out)
		}
	}
}

// echoService runs the tool's echo server on node behind a Service.
func echoService(t *testing.T, ns, node string, spec string) *corev1.Pod {
	t.Helper()
	p := pod(t, ns, "echo", node, "app: echo", "tool", "serve", "-port", "8080")
	srv.KubectlT(t, fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: echo}\nspec:\n  selector: {app: echo}\n  ports: [{port: 80, targetPort: 8080}]\n%s", spec),
		"apply", "-n", ns, "-f", "-")
	return p
}

func TestPodsReachPodsAndServicesOnOtherNodes(t *testing.T) {
	ns := srv.Namespace(t)
	echo := echoService(t, ns, nodes[2], "")
	for _, from := range nodes[:2] {
		name := "client-" + from
		pod(t, ns, name, from, "app: client", "sleep", "3600")
		// By pod IP, across the overlay.
		inPod(t, ns, name, "host=echo ", "tool", "get", fmt.Sprintf("http://%s:8080/", echo.Status.PodIP))
		// By Service name: DNS on the client's node, then the Service proxy.
		inPod(t, ns, name, "host=echo ", "tool", "get", "http://echo/")
		inPod(t, ns, name, "host=echo ", "tool", "get", fmt.Sprintf("http://echo.%s.svc.cluster.local/", ns))
	}
}

func TestNodePortOnEveryNode(t *testing.T) {
	ns := srv.Namespace(t)
	echoService(t, ns, nodes[2], "  type: NodePort\n")
	svc, err := srv.ClientT(t).CoreV1().Services(ns).Get(context.Background(), "echo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	port := svc.Spec.Ports[0].NodePort
	for i, h := range lan.Hosts {
		url := fmt.Sprintf("http://%s:%d/", h.IP, port)
		cluster.WaitFor(t, "NodePort on "+nodes[i], func(ctx context.Context) (bool, error) {
			body, err := httpGet(ctx, url)
			return err == nil && strings.HasPrefix(body, "host=echo "), nil
		})
	}
}

func httpGet(ctx context.Context, url string) (string, error) {
	return hostGet(ctx, url, "")
}

// TestServerDownAndBack: the agents and their pods carry on while the
// server is down for 30 s, and the cluster works again once it is back,

// TestBadNodeObjectsStayOffTheOverlay: Node objects that claim the LAN's
// range, or a range another node already has, or a VTEP address they do
// not hold, change no host's routes.
func TestBadNodeObjectsStayOffTheOverlay(t *testing.T) {
	ctx := context.Background()
	victim, err := srv.ClientT(t).CoreV1().Nodes().Get(ctx, nodes[1], metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := make([]string, len(lan.Hosts))
	for i, h := range lan.Hosts {
		before[i], _ = h.Run("ip", "route", "show")
	}
	rogue := func(name, cidr, ip, address string) *corev1.Node {
		return &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{
				"flannel.alpha.coreos.com/backend-type": "vxlan",
				"flannel.alpha.coreos.com/backend-data": `{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}`,
				"flannel.alpha.coreos.com/public-ip":    ip,
			}},
			Spec:   corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: address}}},
		}
	}
	for _, n := range []*corev1.Node{
		rogue("rogue-lan", "172.30.0.0/24", "172.30.0.99", "172.30.0.99"),
		rogue("rogue-steal", victim.Spec.PodCIDR, "172.30.0.98", "172.30.0.98"),
		rogue("rogue-vtep", "10.42.200.0/24", lan.Hosts[1].IP, "172.30.0.97"),
	} {
		if _, err := srv.ClientT(t).CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer srv.ClientT(t).CoreV1().Nodes().Delete(ctx, n.Name, metav1.DeleteOptions{})
	}
	for i, n := range append([]*cluster.Server{srv}, agents...) {
		cluster.WaitFor(t, nodes[i]+" to ignore the rogue nodes", func(context.Context) (bool, error) {
			log, err := os.ReadFile(n.Log)
			return err == nil && strings.Contains(string(log), `node="rogue-lan" reason="pod CIDR 172.30.0.0/24 is not a range inside the cluster's 10.42.0.0/16"`) &&
				strings.Contains(string(log), `node="rogue-steal" reason="pod CIDR `+victim.Spec.PodCIDR+` overlaps another node's`) &&
				strings.Contains(string(log), `node="rogue-vtep" reason="public IP `+lan.Hosts[1].IP+` is not one of the node's addresses"`), nil
		})
		if after, _ := lan.Hosts[i].Run("ip", "route", "show"); after != before[i] {
			t.Errorf("%s's routes changed:\nbefore:\n%s\nafter:\n%s", nodes[i], before[i], after)
		}
	}
}

// without touching the agents.
func TestServerDownAndBack(t *testing.T) {
	ns := srv.Namespace(t)
	echo := echoService(t, ns, nodes[2], "")
	pod(t, ns, "client", nodes[1], "app: client", "sleep", "3600")
	inPod(t, ns, "client", "host=echo ", "tool", "get", "http://echo/")

	if err := srv.Stop(); err != nil {
		t.Fatalf("stopping the server: %v", err)
	}
	down := time.Now()
	// While the server is down, the pods' containers keep running on the
	// agents, and the overlay still carries their traffic (checked from
	// the agent host, which routes to pods on other nodes).
	for time.Since(down) < 30*time.Second {
		out, err := agents[1].Crictl("ps")
		if err != nil || !runningIn(out, "echo") {
			t.Fatalf("the echo container on %s is not running while the server is down: %v %s", nodes[2], err, out)
		}
		if out, err := lan.Hosts[1].Run(toolPath(t), "get", fmt.Sprintf("http://%s:8080/", echo.Status.PodIP)); err != nil || !strings.HasPrefix(out, "host=echo ") {
			t.Fatalf("from %s's host to the echo pod on %s while the server is down: %v %s", nodes[1], nodes[2], err, out)
		}
		time.Sleep(5 * time.Second) // the outage's length is the scenario, not a wait for a condition
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatalf("restarting the server: %v", err)
	}
	for _, name := range nodes {
		cluster.WaitFor(t, name+" Ready again", func(ctx context.Context) (bool, error) { return cluster.NodeReady(ctx, srv.ClientT(t), name), nil })
	}
	for _, a := range agents {
		if a.Exited() {
			t.Fatalf("agent %s exited while the server was down:\n%s", a.Dir, a.LogTail(20))
		}
	}
	inPod(t, ns, "client", "host=echo ", "tool", "get", "http://echo/")
	// A new pod on an agent: the agent's kubelet is back in business.
	pod(t, ns, "after", nodes[2], "app: after", "sleep", "3600")
}

func toolPath(t *testing.T) string {
	t.Helper()
	p, err := cluster.ToolPath()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDeletedNodeLeavesNoRoutes runs last: it takes agent-2 out of the
// cluster.
func TestDeletedNodeLeavesNoRoutes(t *testing.T) {
	gone := nodes[2]
	n, err := srv.ClientT(t).CoreV1().Nodes().Get(context.Background(), gone, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cidr := n.Spec.PodCIDR
	for i := range 2 {
		out, _ := lan.Hosts[i].Run("ip", "route", "show", "dev", overlay(i))
		if !strings.Contains(out, cidr) {
			t.Fatalf("%s has no route to %s's pods (%s) before the deletion:\n%s", nodes[i], gone, cidr, out)
		}
	}
	password := gone + ".node-password.skiff"
	if _, err := srv.ClientT(t).CoreV1().Secrets("kube-system").Get(context.Background(), password, metav1.GetOptions{}); err != nil {
		t.Fatalf("%s's password Secret before the deletion: %v", gone, err)
	}
	if err := agents[1].Stop(); err != nil {
		t.Errorf("stopping %s: %v", gone, err)
	}
	if err := srv.ClientT(t).CoreV1().Nodes().Delete(context.Background(), gone, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Its name is free again: the password went with the Node.
	cluster.WaitFor(t, gone+"'s password Secret to go", func(ctx context.Context) (bool, error) {
		_, err := srv.ClientT(t).CoreV1().Secrets("kube-system").Get(ctx, password, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	mac := vtepMAC(n.Annotations["flannel.alpha.coreos.com/backend-data"])
	for i := range 2 {
		h := lan.Hosts[i]
		var left []string
		defer func() {
			if t.Failed() {
				t.Logf("%s still holds of %s (%s, %s):\n%s", nodes[i], gone, cidr, mac, strings.Join(left, "\n"))
			}
		}()
		cluster.WaitFor(t, fmt.Sprintf("%s to forget %s", nodes[i], gone), func(ctx context.Context) (bool, error) {
			left = nil
			for _, cmd := range [][]string{
				{"ip", "route", "show", "dev", overlay(i)},
				{"bridge", "fdb", "show", "dev", overlay(i)},
				{"ip", "neigh", "show", "dev", overlay(i)},
			} {
				out, _ := h.Run(cmd...)
				for _, line := range strings.Split(out, "\n") {
					if strings.Contains(line, cidr) || strings.Contains(strings.ToLower(line), mac) {
						left = append(left, strings.Join(cmd[:2], " ")+": "+line)
					}
				}
			}
			return len(left) == 0, nil
		})
	}
}

// overlay is the VXLAN device of host i's node, named after its data dir.
func overlay(i int) string {
	return cluster.NamesOf(append([]*cluster.Server{srv}, agents...)[i].DataDir).Overlay
}

// vtepMAC reads the MAC from flannel's backend-data annotation.
func vtepMAC(backendData string) string {
	_, rest, _ := strings.Cut(backendData, `"VtepMAC":"`)
	mac, _, _ := strings.Cut(rest, `"`)
	return strings.ToLower(mac)
}

// runningIn says whether `crictl ps` output lists a running container of pod.
func runningIn(ps, pod string) bool {
	for _, line := range strings.Split(ps, "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[len(f)-1] == pod && strings.Contains(line, "RUNNING") {
			return true
		}
	}
	return false
}
