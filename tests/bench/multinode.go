package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// benchMultinode measures joining and the overlay on a LAN of two network
// namespaces: a server that is a node, and an agent: seconds from the
// agent's exec to its node Ready, and TCP throughput from a pod on one node
// to a pod on the other across the VXLAN, next to the same two hosts over
// their own link.
func benchMultinode() error {
	dir, err := os.MkdirTemp("", "skiff-bench-multinode-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	lan, err := cluster.NewLAN(2)
	if err != nil {
		return err
	}
	defer lan.Delete()
	s, err := cluster.NewLANServer(filepath.Join(dir, "server"), lan.Hosts[0], "--node-name", "server")
	if err != nil {
		return err
	}
	defer s.Teardown()
	defer s.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		return err
	}
	a, err := cluster.NewLANAgent(filepath.Join(dir, "agent"), lan.Hosts[1], s, "--node-name", "agent")
	if err != nil {
		return err
	}
	defer a.Teardown()
	defer a.Stop()
	cs, err := s.Client()
	if err != nil {
		return err
	}
	start := time.Now()
	if err := a.StartProcess(); err != nil {
		return err
	}
	if err := poll(ctx, func(ctx context.Context) bool {
		n, err := cs.CoreV1().Nodes().Get(ctx, "agent", metav1.GetOptions{})
		return err == nil && nodeReady(n)
	}); err != nil {
		return fmt.Errorf("agent never Ready: %w\n%s", err, a.LogTail(20))
	}
	fmt.Printf("agent exec to node Ready (joins by token): %.2f s (goal < 10 s)\n", time.Since(start).Seconds())

	sinkIP, err := benchPod(ctx, cs, "sink", "agent", "tool", "sink")
	if err != nil {
		return err
	}
	if _, err := benchPod(ctx, cs, "blast", "server", "sleep", "3600"); err != nil {
		return err
	}
	var overlay float64
	for range 2 { // the first run warms up the path; the second counts
		out, err := s.Kubectl(ctx, "", "exec", "-n", "default", "blast", "--", "tool", "blast", "-d", "5s", sinkIP+":5201")
		if err != nil {
			return fmt.Errorf("pod to pod throughput: %v: %s", err, out)
		}
		if overlay, err = mbits(out); err != nil {
			return err
		}
	}

	tool, err := cluster.ToolPath()
	if err != nil {
		return err
	}
	sink := exec.Command("ip", "netns", "exec", lan.Hosts[1].Netns, tool, "sink", "-port", "5202")
	if err := sink.Start(); err != nil {
		return err
	}
	defer func() { sink.Process.Kill(); sink.Wait() }()
	var host float64
	for range 2 {
		out, err := pollOutput(ctx, func() (string, error) {
			return lan.Hosts[0].Run(tool, "blast", "-d", "5s", lan.Hosts[1].IP+":5202")
		})
		if err != nil {
			return fmt.Errorf("host to host throughput: %v: %s", err, out)
		}
		if host, err = mbits(out); err != nil {
			return err
		}
	}
	fmt.Printf("TCP throughput, pod to pod across the VXLAN: %.0f Mbit/s; the same hosts over their link: %.0f Mbit/s; ratio %.0f%% (goal >= 80%%)\n",
		overlay, host, 100*overlay/host)
	return benchPolicies(ctx, s, a, lan, cs, sinkIP, overlay)
}

// benchPolicies measures what NetworkPolicies cost the pod-to-pod path:
// new TCP connections (one after another) and throughput from the blast
// pod to the sink pod with none, then with 100 policies selecting the
// sink (each allowing another port or peer; the last one allowing the
// blast pod's namespace), and the agent's memory before and after.
func benchPolicies(ctx context.Context, s, a *cluster.Server, lan *cluster.LAN, cs kubernetes.Interface, sinkIP string, overlay float64) error {
	conns := func() (string, error) {
		out, err := s.Kubectl(ctx, "", "exec", "-n", "default", "blast", "--", "tool", "connbench", "-n", "2000", sinkIP+":5201")
		if err != nil {
			return "", fmt.Errorf("new connections: %v: %s", err, out)
		}
		return strings.TrimSpace(out), nil
	}
	before, err := conns()
	if err != nil {
		return err
	}
	pssBefore, err := pssMB(a.Pid())
	if err != nil {
		return err
	}
	for i := range 100 {
		from := fmt.Sprintf("{podSelector: {matchLabels: {peer: p%d}}}", i)
		port := 6000 + i
		if i == 99 {
			from, port = "{podSelector: {}}", 5201
		}
		if _, err := s.Kubectl(ctx, fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bench-%d, namespace: default}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
  - from: [%s, {ipBlock: {cidr: 192.0.2.%d/32}}]
    ports: [{port: %d, protocol: TCP}]
`, i, from, i, port), "apply", "-f", "-"); err != nil {
			return err
		}
	}
	// Enforced once the server's host, which no policy allows, is refused.
	tool, err := cluster.ToolPath()
	if err != nil {
		return err
	}
	if err := poll(ctx, func(context.Context) bool {
		out, _ := lan.Hosts[0].Run(tool, "dial", "-timeout", "1s", sinkIP+":5201")
		return strings.HasPrefix(out, "refused")
	}); err != nil {
		return fmt.Errorf("the policies never took effect: %w", err)
	}
	after, err := conns()
	if err != nil {
		return err
	}
	var with float64
	for range 2 {
		out, err := s.Kubectl(ctx, "", "exec", "-n", "default", "blast", "--", "tool", "blast", "-d", "5s", sinkIP+":5201")
		if err != nil {
			return fmt.Errorf("pod to pod throughput under policies: %v: %s", err, out)
		}
		if with, err = mbits(out); err != nil {
			return err
		}
	}
	pssAfter, err := pssMB(a.Pid())
	if err != nil {
		return err
	}
	fmt.Printf("new TCP connection, pod to pod across the VXLAN: %s with no NetworkPolicy; %s with 100 selecting the server pod\n", before, after)
	fmt.Printf("TCP throughput, pod to pod, with 100 NetworkPolicies: %.0f Mbit/s (%.0f%% of %.0f without)\n", with, 100*with/overlay, overlay)
	fmt.Printf("agent PSS: %d MB before the policies, %d MB with them\n", pssBefore, pssAfter)
	return nil
}

// benchPod runs the test image on node and returns the pod's IP.
func benchPod(ctx context.Context, cs kubernetes.Interface, name, node string, command ...string) (string, error) {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "c", Image: cluster.BusyboxImage, Command: command}},
		},
	}
	// Until the controller manager has made the default ServiceAccount, a
	// pod is refused.
	var cerr error
	if err := poll(ctx, func(ctx context.Context) bool {
		_, cerr = cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})
		return cerr == nil
	}); err != nil {
		return "", fmt.Errorf("creating pod %s: %v", name, cerr)
	}
	var ip string
	err := poll(ctx, func(ctx context.Context) bool {
		p, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning {
			ip = p.Status.PodIP
		}
		return ip != ""
	})
	return ip, err
}

// pollOutput retries f until it succeeds (a listener may still be starting).
func pollOutput(ctx context.Context, f func() (string, error)) (string, error) {
	var out string
	var err error
	perr := poll(ctx, func(context.Context) bool {
		out, err = f()
		return err == nil
	})
	if perr != nil && err == nil {
		err = perr
	}
	return out, err
}

func mbits(out string) (float64, error) {
	f := strings.Fields(out)
	if len(f) < 2 || f[1] != "Mbit/s" {
		return 0, fmt.Errorf("unexpected tool output %q", out)
	}
	return strconv.ParseFloat(f[0], 64)
}
