package cluster

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// Context is a context for one test, bounded so that a hang fails the test.
func Context(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// ClientT is an admin clientset; it fails the test when there is none.
func (s *Server) ClientT(t *testing.T) *kubernetes.Clientset {
	t.Helper()
	cs, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// Namespace creates a namespace named after the test and deletes it when the
// test ends.
func (s *Server) Namespace(t *testing.T) string {
	t.Helper()
	cs := s.ClientT(t)
	name := strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	if len(name) > 50 {
		name = name[:50]
	}
	if _, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)})
	})
	// Pods are refused until the controller manager gave the namespace its
	// default ServiceAccount.
	err := wait.PollUntilContextCancel(Context(t), 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("namespace %s has no default ServiceAccount: %v", name, err)
	}
	return name
}

// WaitFor polls cond until it holds, failing the test after three minutes.
func WaitFor(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// NodeReady says whether the node is registered and Ready.
func NodeReady(ctx context.Context, cs kubernetes.Interface, name string) bool {
	n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// KubectlT runs `skiff kubectl` and fails the test if it fails.
func (s *Server) KubectlT(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := s.Kubectl(ctx, stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out
}

// Step is one step of a test whose steps run in order.
type Step struct {
	Name string
	Run  func(*testing.T)
}

// Steps runs steps in order as subtests, each on the cluster as the one
// before left it, and stops at the first that fails.
func Steps(t *testing.T, steps ...Step) {
	for _, s := range steps {
		if !t.Run(s.Name, s.Run) {
			return
		}
	}
}

// Main runs a test package against one shared server and returns the exit
// code for TestMain. It makes a temp dir named after the package, where
// prepare describes the server (and writes what it needs beside it); it
// starts the server and waits until it is ready, a node until its Node is
// Ready; then it runs the tests, and stops the server and tears the node
// down whether they failed or not, with the log printed when anything
// failed.
func Main(m *testing.M, name string, prepare func(dir string) (*Server, error)) int {
	dir, err := os.MkdirTemp("", "skiff-"+name+"-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	s, err := prepare(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := s.Teardown(); err != nil {
			fmt.Fprintln(os.Stderr, "teardown:", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	code := 1
	if err := s.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else if err := s.WaitNodesReady(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "node not ready: %v\n%s\n", err, s.LogTail(60))
	} else {
		code = m.Run()
	}
	if err := s.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping the server: %v\n", err)
		code = 1
	}
	if code != 0 {
		fmt.Fprintf(os.Stderr, "server log:\n%s\n", s.LogTail(60))
	}
	return code
}

// WaitNodesReady waits, for a node, until its cluster has Nodes and every
// one is Ready.
func (s *Server) WaitNodesReady(ctx context.Context) error {
	if !s.Node {
		return nil
	}
	cs, err := s.Client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	return wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if s.Exited() {
			return false, fmt.Errorf("the server exited")
		}
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil || len(nodes.Items) == 0 {
			return false, nil
		}
		for _, n := range nodes.Items {
			if !NodeReady(ctx, cs, n.Name) {
				return false, nil
			}
		}
		return true, nil
	})
}

// EchoDeployment runs replicas of the test tool's echo server (HTTP and UDP
// on 8080, answering "host=<pod> peer=<client>"; an HTTP Upgrade echoes
// bytes) behind a Service whose spec continues with service, and waits for
// their endpoints to be ready.
func (s *Server) EchoDeployment(t *testing.T, ns, name string, replicas int, service string) {
	t.Helper()
	s.KubectlT(t, fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s}
spec:
  replicas: %[2]d
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: echo
        image: %[3]s
        command: [tool, serve, -port, "8080"]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: %[1]s}
spec:
  selector: {app: %[1]s}
%[4]s`, name, replicas, BusyboxImage, service), "apply", "-n", ns, "-f", "-")
	s.WaitReadyEndpoints(t, ns, name, replicas)
}

// WaitReadyEndpoints waits until a Service has n ready endpoint addresses.
func (s *Server) WaitReadyEndpoints(t *testing.T, ns, svc string, n int) {
	t.Helper()
	WaitFor(t, fmt.Sprintf("%d ready endpoints of %s", n, svc), func(ctx context.Context) (bool, error) {
		slices, err := s.ClientT(t).DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
		if err != nil {
			return false, nil
		}
		ready := 0
		for _, sl := range slices.Items {
			for _, e := range sl.Endpoints {
				if e.Conditions.Ready == nil || *e.Conditions.Ready {
					ready += len(e.Addresses)
				}
			}
		}
		return ready == n, nil
	})
}
