package node

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// waitPod waits until cond holds for the pod.
func waitPod(t *testing.T, ns, name string, what string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	cs := srv.ClientT(t)
	var last *corev1.Pod
	err := wait.PollUntilContextCancel(cluster.Context(t), 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = p
		return cond(p), nil
	})
	if err != nil {
		t.Fatalf("pod %s/%s never %s: last status %+v", ns, name, what, last.Status)
	}
	return last
}

func running(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func TestNodeReadyWithDetails(t *testing.T) {
	out := srv.KubectlT(t, "", "get", "nodes", "-o", "wide", "--no-headers")
	fields := strings.Fields(out)
	if len(fields) < 10 || fields[1] != "Ready" {
		t.Fatalf("kubectl get nodes -o wide: %q", out)
	}
	if net.ParseIP(fields[5]) == nil {
		t.Errorf("INTERNAL-IP %q is not an IP", fields[5])
	}
	for _, want := range []string{"Debian", "containerd://"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl get nodes -o wide: %q lacks %q", out, want)
		}
	}
	kernel, _ := exec.Command("uname", "-r").Output()
	if !strings.Contains(out, strings.TrimSpace(string(kernel))) {
		t.Errorf("kubectl get nodes -o wide: %q lacks the kernel %s", out, kernel)
	}
}

const webPod = `
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers:
  - name: web
    image: ` + cluster.BusyboxImage + `
    command: [sh, -c, 'echo hello from skiff; mkdir -p /www; echo served > /www/index.html; exec httpd -f -p 8080 -h /www']
    ports: [{containerPort: 8080}]
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
`

func TestPodLogsExecPortForward(t *testing.T) {
	ns := srv.Namespace(t)
	srv.KubectlT(t, webPod, "apply", "-n", ns, "-f", "-")
	waitPod(t, ns, "web", "running and ready", running)

	if out := srv.KubectlT(t, "", "logs", "-n", ns, "web"); !strings.Contains(out, "hello from skiff") {
		t.Errorf("kubectl logs: %q", out)
	}
	if out := srv.KubectlT(t, "", "exec", "-n", ns, "web", "--", "cat", "/www/index.html"); out != "served\n" {
		t.Errorf("kubectl exec: %q", out)
	}
	// The pod's own lo is up: it reaches its server on 127.0.0.1.
	if out := srv.KubectlT(t, "", "exec", "-n", ns, "web", "--", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/index.html"); out != "served\n" {
		t.Errorf("wget 127.0.0.1 in the pod: %q", out)
	}

	port := cluster.FreePort()
	ctx, cancel := context.WithCancel(cluster.Context(t))
	defer cancel()
	pf := exec.CommandContext(ctx, cluster.Binary(), "kubectl", "--kubeconfig", srv.Kubeconfig, "port-forward", "-n", ns, "pod/web", fmt.Sprintf("%d:8080", port))
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	defer pf.Wait()
	defer cancel()
	var body string
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		var err error
		body, err = httpGet(fmt.Sprintf("http://127.0.0.1:%d/index.html", port))
		return err == nil, nil
	})
	if err != nil || body != "served\n" {
		t.Fatalf("port-forward: %q, %v", body, err)
	}
}
