package node

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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

// TestPodSandboxReapsOrphans: in a pod that shares its PID namespace, PID 1
// is the sandbox's pause program, and the processes orphaned in the pod are
// handed to it and reaped when they end: none is left a zombie.
func TestPodSandboxReapsOrphans(t *testing.T) {
	ns := srv.Namespace(t)
	srv.KubectlT(t, fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: shared}\nspec:\n  terminationGracePeriodSeconds: 0\n  shareProcessNamespace: true\n  containers: [{name: c, image: %s, command: [sleep, '3600']}]\n", image), "apply", "-n", ns, "-f", "-")
	waitPod(t, ns, "shared", "running", running)
	if out := inPod(t, ns, "shared", "cat", "/proc/1/cmdline"); strings.TrimRight(out, "\x00") != "/pause" {
		t.Fatalf("PID 1 of a pod sharing its PID namespace runs %q, want /pause", out)
	}
	// pause's children in the pod, from each process's stat: "pid (comm)
	// state ppid ...". The container's own process has a parent outside
	// the pod (0).
	orphans := func(stats string) []string {
		var out []string
		for _, line := range strings.Split(stats, "\n") {
			i := strings.LastIndexByte(line, ')')
			if i < 0 {
				continue
			}
			if f := strings.Fields(line[i+1:]); len(f) >= 2 && f[1] == "1" {
				out = append(out, line[:i+1]+" "+f[0])
			}
		}
		return out
	}
	const list = "cat /proc/[0-9]*/stat 2>/dev/null; true"
	// Two subshells each leave a sleep behind and exit.
	if got := orphans(inPod(t, ns, "shared", "sh", "-c", "(sleep 2 >/dev/null 2>&1 &); (sleep 2 >/dev/null 2>&1 &); "+list)); len(got) != 2 {
		t.Fatalf("pause's children right after two subshells left a sleep each: %q, want the two sleeps", got)
	}
	var left []string
	err := wait.PollUntilContextTimeout(cluster.Context(t), time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
		out, err := inPodErr(ns, "shared", "sh", "-c", list)
		left = orphans(out)
		return err == nil && len(left) == 0, nil
	})
	if err != nil {
		t.Fatalf("the orphans were not reaped a minute after they ended: pause's children %q", left)
	}
}

// TestStaticPod: a pod manifest dropped into <data-dir>/agent/pod-manifests
// runs on the node, with a mirror pod in the API, and stops when the file
// is removed.
func TestStaticPod(t *testing.T) {
	ns := srv.Namespace(t)
	cs := srv.ClientT(t)
	nodes, err := cs.CoreV1().Nodes().List(cluster.Context(t), metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 {
		t.Fatalf("the node: %v (%d nodes)", err, len(nodes.Items))
	}
	manifest := filepath.Join(srv.DataDir, "agent", "pod-manifests", "static-"+ns+".yaml")
	if err := os.WriteFile(manifest, []byte(fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: static, namespace: %s}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers: [{name: c, image: %s, imagePullPolicy: Never, command: [sleep, '3600']}]\n", ns, image)), 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(manifest)
	mirror := "static-" + nodes.Items[0].Name
	p := waitPod(t, ns, mirror, "running as the mirror of the static pod", running)
	if _, ok := p.Annotations["kubernetes.io/config.mirror"]; !ok {
		t.Errorf("pod %s has no kubernetes.io/config.mirror annotation: %v", mirror, p.Annotations)
	}
	if err := os.Remove(manifest); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(cluster.Context(t), 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Pods(ns).Get(ctx, mirror, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("the mirror pod %s stayed after its manifest was removed", mirror)
	}
}
