package node

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-dev/skiff/tests/cluster"
)

func readyEndpoints(t *testing.T, ns, svc string) []string {
	t.Helper()
	return endpoints(t, ns, svc, false)
}

// endpoints lists a Service's endpoint addresses: the ready ones, or all of
// them (terminating ones too).
func endpoints(t *testing.T, ns, svc string, all bool) []string {
	t.Helper()
	slices, err := srv.ClientT(t).DiscoveryV1().EndpointSlices(ns).List(context.Background(),
		metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			if all || e.Conditions.Ready == nil || *e.Conditions.Ready {
				out = append(out, e.Addresses...)
			}
		}
	}
	return out
}

// clientPod starts a pod to run commands from, and returns its name.
func clientPod(t *testing.T, ns string) string {
	t.Helper()
	srv.KubectlT(t, fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: client}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers: [{name: c, image: %s, command: [sleep, '3600']}]\n", image), "apply", "-n", ns, "-f", "-")
	waitPod(t, ns, "client", "running", running)
	return "client"
}

// inPod runs a command in a pod and returns its output, failing the test if
// it fails.
func inPod(t *testing.T, ns, pod string, cmd ...string) string {
	t.Helper()
	out, err := inPodErr(ns, pod, cmd...)
	if err != nil {
		t.Fatalf("%s in pod %s: %v: %s", strings.Join(cmd, " "), pod, err, out)
	}
	return out
}

func inPodErr(ns, pod string, cmd ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return srv.Kubectl(ctx, "", append([]string{"exec", "-n", ns, pod, "--"}, cmd...)...)
}

func service(t *testing.T, ns, name string) *corev1.Service {
	t.Helper()
	s, err := srv.ClientT(t).CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// hostsSeen makes n HTTP requests from a pod and returns the count per
// answering pod.
func hostsSeen(t *testing.T, ns, pod, url string, n int) map[string]int {
	t.Helper()
	out := inPod(t, ns, pod, "sh", "-c", fmt.Sprintf("for i in $(seq %d); do tool get %s || echo FAILED; done", n, url))
	seen := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], "host=") {
			t.Fatalf("request to %s failed: %q", url, line)
		}
		seen[strings.TrimPrefix(f[0], "host=")]++
	}
	return seen
}

func scale(t *testing.T, ns, name string, n int) {
	t.Helper()
	srv.KubectlT(t, "", "scale", "-n", ns, "deployment/"+name, fmt.Sprintf("--replicas=%d", n))
}

func TestClusterIPBalancesAndRejectsWithoutEndpoints(t *testing.T) {
	t.Parallel()
	ns := srv.Namespace(t)
	srv.EchoDeployment(t, ns, "web", 2, "  ports: [{port: 80, targetPort: 8080}]\n")
	c := clientPod(t, ns)
	ip := service(t, ns, "web").Spec.ClusterIP
	url := "http://" + ip + "/"

	seen := hostsSeen(t, ns, c, url, 50)
	if len(seen) != 2 {
		t.Fatalf("50 requests to %s reached %v, want both replicas", url, seen)
	}

	scale(t, ns, "web", 0)
	// Terminating endpoints still get connections while no ready one
	// exists: wait until the pods are gone.
	cluster.WaitFor(t, "no endpoints, terminating ones included", func(ctx context.Context) (bool, error) {
		return len(endpoints(t, ns, "web", true)) == 0, nil
	})
	// The proxy syncs right after the EndpointSlice changes: wait for the
	// rejection, then check that it is fast.
	cluster.WaitFor(t, "connections to a Service without endpoints refused", func(ctx context.Context) (bool, error) {
		out, _ := inPodErr(ns, c, "tool", "dial", "-timeout", "3s", ip+":80")
		return strings.HasPrefix(out, "refused"), nil
	})
	out := inPod(t, ns, c, "tool", "dial", "-timeout", "5s", ip+":80")
	var took time.Duration
	if f := strings.Fields(out); len(f) == 2 {
		took, _ = time.ParseDuration(f[1])
	}
	if !strings.HasPrefix(out, "refused") || took > time.Second {
		t.Fatalf("dialing a Service without endpoints: %q, want refused within 1s", out)
	}

	scale(t, ns, "web", 2)
	cluster.WaitFor(t, "2 endpoints again", func(ctx context.Context) (bool, error) {
		return len(readyEndpoints(t, ns, "web")) == 2, nil
	})
	cluster.WaitFor(t, "the Service answering again", func(ctx context.Context) (bool, error) {
		out, err := inPodErr(ns, c, "tool", "get", url)
		return err == nil && strings.HasPrefix(out, "host="), nil
	})
}

func TestServiceUDPAffinityAndHairpin(t *testing.T) {
	t.Parallel()
	ns := srv.Namespace(t)
	srv.EchoDeployment(t, ns, "multi", 2, `  sessionAffinity: ClientIP
  ports:
  - {name: http, port: 80, targetPort: 8080, protocol: TCP}
  - {name: echo, port: 5353, targetPort: 8080, protocol: UDP}
`)
	c := clientPod(t, ns)
	ip := service(t, ns, "multi").Spec.ClusterIP
	if seen := hostsSeen(t, ns, c, "http://"+ip+"/", 20); len(seen) != 1 {
		t.Fatalf("with ClientIP affinity 20 requests reached %v, want one replica", seen)
	}
	if out := inPod(t, ns, c, "tool", "udp", ip+":5353"); !strings.HasPrefix(out, "host=") {
		t.Fatalf("UDP through the Service: %q", out)
	}
	// A pod reaching itself through its own Service (hairpin).
	pods := runningPods(t, ns, "app=multi")
	for _, p := range pods {
		srv.KubectlT(t, "", "label", "-n", ns, "pod", p.Name, "only=me")
	}
	srv.KubectlT(t, "apiVersion: v1\nkind: Service\nmetadata: {name: self}\nspec:\n  selector: {only: me, app: multi}\n  ports: [{port: 80, targetPort: 8080}]\n", "apply", "-n", ns, "-f", "-")
	cluster.WaitFor(t, "endpoints of self", func(ctx context.Context) (bool, error) {
		return len(readyEndpoints(t, ns, "self")) == 2, nil
	})
	self := service(t, ns, "self").Spec.ClusterIP
	// The endpoints are in the API; the node's rules follow them a moment
	// later.
	cluster.WaitFor(t, "the proxy to have the endpoints of self", func(ctx context.Context) (bool, error) {
		out, err := inPodErr(ns, pods[0].Name, "tool", "get", "http://"+self+"/")
		return err == nil && strings.HasPrefix(out, "host="), nil
	})
	for i := 0; i < 5; i++ {
		if out := inPod(t, ns, pods[0].Name, "tool", "get", "http://"+self+"/"); !strings.HasPrefix(out, "host=") {
			t.Fatalf("hairpin request: %q", out)
		}
	}
}

func TestReadinessFailureRemovesEndpoint(t *testing.T) {
	t.Parallel()
	ns := srv.Namespace(t)
	srv.KubectlT(t, fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: flaky}
spec:
  replicas: 2
  selector: {matchLabels: {app: flaky}}
  template:
    metadata: {labels: {app: flaky}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: echo
        image: %s
        command: [sh, -c, 'touch /tmp/ready; exec tool serve -port 8080']
        readinessProbe: {exec: {command: [cat, /tmp/ready]}, periodSeconds: 1, failureThreshold: 1}
---
apiVersion: v1
kind: Service
metadata: {name: flaky}
spec:
  selector: {app: flaky}
  ports: [{port: 80, targetPort: 8080}]
`, image), "apply", "-n", ns, "-f", "-")
	cluster.WaitFor(t, "2 ready endpoints", func(ctx context.Context) (bool, error) {
		return len(readyEndpoints(t, ns, "flaky")) == 2, nil
	})
	c := clientPod(t, ns)
	pods := runningPods(t, ns, "app=flaky")
	sick, healthy := pods[0], pods[1]
	inPod(t, ns, sick.Name, "rm", "/tmp/ready")
	start := time.Now()
	cluster.WaitFor(t, "the unready endpoint removed", func(ctx context.Context) (bool, error) {
		eps := readyEndpoints(t, ns, "flaky")
		return len(eps) == 1 && eps[0] == healthy.Status.PodIP, nil
	})
	t.Logf("endpoint removed %s after the probe started failing", time.Since(start).Round(100*time.Millisecond))
	url := "http://" + service(t, ns, "flaky").Spec.ClusterIP + "/"
	cluster.WaitFor(t, "traffic only to the ready pod", func(ctx context.Context) (bool, error) {
		seen := hostsSeen(t, ns, c, url, 10)
		return len(seen) == 1 && seen[healthy.Name] == 10, nil
	})
}

func TestServiceDNS(t *testing.T) {
	t.Parallel()
	ns := srv.Namespace(t)
	srv.EchoDeployment(t, ns, "web", 1, "  ports: [{port: 80, targetPort: 8080}]\n")
	srv.KubectlT(t, fmt.Sprintf(`
apiVersion: v1
kind: Service
metadata: {name: headless}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: alias}
spec:
  type: ExternalName
  externalName: www.example.test
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: pod}
spec:
  serviceName: svc
  replicas: 1
  selector: {matchLabels: {app: sts}}
  template:
    metadata: {labels: {app: sts}}
    spec:
      terminationGracePeriodSeconds: 0
      containers: [{name: c, image: %s, command: [sleep, '3600']}]
---
apiVersion: v1
kind: Service
metadata: {name: svc}
spec:
  clusterIP: None
  selector: {app: sts}
  ports: [{port: 80}]
`, image), "apply", "-n", ns, "-f", "-")
	c := clientPod(t, ns)
	web := service(t, ns, "web").Spec.ClusterIP
	webPod := runningPods(t, ns, "app=web")[0].Status.PodIP
	stsPod := waitPod(t, ns, "pod-0", "running", running).Status.PodIP
	domain := ns + ".svc.cluster.local"

	lookup := func(args ...string) string {
		t.Helper()
		var out string
		cluster.WaitFor(t, "resolving "+strings.Join(args, " "), func(ctx context.Context) (bool, error) {
			var err error
			out, err = inPodErr(ns, c, append([]string{"tool", "lookup"}, args...)...)
			return err == nil, nil
		})
		return strings.TrimSpace(out)
	}
	for _, tc := range []struct{ name, want string }{
		{"web." + domain, web},
		{"web", web},
		{"headless." + domain, webPod},
		{"pod-0.svc." + domain, stsPod},
		{"kubernetes.default", service(t, "default", "kubernetes").Spec.ClusterIP},
		{"www." + strings.TrimSuffix(cluster.UpstreamDomain, "."), cluster.UpstreamAnswer},
	} {
		if got := lookup(tc.name); got != tc.want {
			t.Errorf("%s resolves to %q, want %s", tc.name, got, tc.want)
		}
	}
	if got := lookup("-cname", "alias."+domain); got != "www.example.test." {
		t.Errorf("ExternalName alias: CNAME %q, want www.example.test.", got)
	}
	// busybox's own resolver, as a user would try first.
	if out := inPod(t, ns, c, "nslookup", "web."+domain); !strings.Contains(out, web) {
		t.Errorf("nslookup web.%s: %s", domain, out)
	}
	// The API through the kubernetes Service, with the pod's own token.
	const sa = "/var/run/secrets/kubernetes.io/serviceaccount"
	out := inPod(t, ns, c, "tool", "get", "-ca", sa+"/ca.crt", "-token", sa+"/token", "https://kubernetes.default.svc/api")
	if !strings.Contains(out, `"kind":"APIVersions"`) {
		t.Errorf("GET https://kubernetes.default.svc/api from a pod: %s", out)
	}
}

func TestCustomDNSConfigIsLoaded(t *testing.T) {
	t.Parallel()
	ns := srv.Namespace(t)
	c := clientPod(t, ns)
	srv.KubectlT(t, `apiVersion: v1
kind: ConfigMap
metadata: {name: coredns-custom, namespace: kube-system}
data:
  extra.override: |
    hosts {
      198.51.100.55 custom.skiff.test
      fallthrough
    }
`, "apply", "-f", "-")
	t.Cleanup(func() {
		srv.Kubectl(context.Background(), "", "delete", "-n", "kube-system", "configmap", "coredns-custom")
	})
	cluster.WaitFor(t, "the custom hosts entry answering", func(ctx context.Context) (bool, error) {
		out, err := inPodErr(ns, c, "tool", "lookup", "custom.skiff.test")
		return err == nil && strings.TrimSpace(out) == "198.51.100.55", nil
	})
}

// httpGet makes one request from the test process.
func httpGet(url string) (string, error) {
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func nodeIP(t *testing.T) string {
	t.Helper()
	nodes, err := srv.ClientT(t).CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		t.Fatalf("listing nodes: %v", err)
	}
	for _, a := range nodes.Items[0].Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	t.Fatal("the node has no InternalIP")
	return ""
}

func TestNodePortLoadBalancerAndSourceIP(t *testing.T) {
	t.Parallel()
	ns := srv.Namespace(t)
	srv.EchoDeployment(t, ns, "np", 1, "  type: NodePort\n  ports: [{port: 80, targetPort: 8080}]\n")
	srv.EchoDeployment(t, ns, "lb", 1, "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  ports: [{port: 18080, targetPort: 8080}]\n")
	node := nodeIP(t)

	port := service(t, ns, "np").Spec.Ports[0].NodePort
	npURL := fmt.Sprintf("http://%s:%d/", node, port)
	cluster.WaitFor(t, "NodePort answering on the node IP", func(ctx context.Context) (bool, error) {
		out, err := httpGet(npURL)
		return err == nil && strings.HasPrefix(out, "host=np-"), nil
	})

	var ingress string
	cluster.WaitFor(t, "a load balancer address", func(ctx context.Context) (bool, error) {
		if in := service(t, ns, "lb").Status.LoadBalancer.Ingress; len(in) > 0 {
			ingress = in[0].IP
		}
		return ingress != "", nil
	})
	if ingress != node {
		t.Errorf("load balancer address %s, want the node's %s", ingress, node)
	}
	lbURL := fmt.Sprintf("http://%s/", net.JoinHostPort(ingress, "18080"))
	cluster.WaitFor(t, "LoadBalancer answering on its address", func(ctx context.Context) (bool, error) {
		out, err := httpGet(lbURL)
		return err == nil && strings.HasPrefix(out, "host=lb-"), nil
	})

	// A client outside the cluster keeps its source address with
	// externalTrafficPolicy Local.
	host, err := cluster.NewHost(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(host.Delete)
	tool, err := cluster.ToolPath()
	if err != nil {
		t.Fatal(err)
	}
	var out string
	cluster.WaitFor(t, "the LoadBalancer answering a client outside the node", func(ctx context.Context) (bool, error) {
		out, err = host.Run(ctx, tool, "get", lbURL)
		return err == nil, nil
	})
	if !strings.Contains(out, "peer="+host.IP+":") {
		t.Errorf("with externalTrafficPolicy Local the pod saw %q, want the client's address %s", strings.TrimSpace(out), host.IP)
	}

	// loadBalancerSourceRanges: a client outside them cannot connect, one
	// inside can.
	lbAddr := net.JoinHostPort(ingress, "18080")
	srv.KubectlT(t, "", "patch", "-n", ns, "service", "lb", "-p", `{"spec":{"loadBalancerSourceRanges":["192.0.2.250/32"]}}`)
	cluster.WaitFor(t, "the load balancer to turn away a client outside its source ranges", func(ctx context.Context) (bool, error) {
		out, err := host.Run(ctx, tool, "dial", "-timeout", "2s", lbAddr)
		return err == nil && strings.HasPrefix(out, "timeout"), nil
	})
	srv.KubectlT(t, "", "patch", "-n", ns, "service", "lb", "-p", `{"spec":{"loadBalancerSourceRanges":["192.0.2.250/32","`+host.IP+`/32"]}}`)
	cluster.WaitFor(t, "the load balancer to answer a client inside its source ranges", func(ctx context.Context) (bool, error) {
		_, err := host.Run(ctx, tool, "get", lbURL)
		return err == nil, nil
	})

	// The health check port of an externalTrafficPolicy Local load
	// balancer says whether this node has endpoints, as kube-proxy's does.
	hcURL := fmt.Sprintf("http://%s/", net.JoinHostPort(node, fmt.Sprint(service(t, ns, "lb").Spec.HealthCheckNodePort)))
	health := func(code int, endpoints string) func(context.Context) (bool, error) {
		return func(ctx context.Context) (bool, error) {
			resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(hcURL)
			if err != nil {
				return false, nil
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return resp.StatusCode == code && strings.Contains(string(body), `"localEndpoints":`+endpoints), nil
		}
	}
	cluster.WaitFor(t, "the health check port answering 200 with one local endpoint", health(http.StatusOK, "1"))
	scale(t, ns, "lb", 0)
	cluster.WaitFor(t, "the health check port answering 503 without local endpoints", health(http.StatusServiceUnavailable, "0"))
	scale(t, ns, "lb", 1)

	// A second LoadBalancer on the same port gets no address, and an event.
	srv.KubectlT(t, "apiVersion: v1\nkind: Service\nmetadata: {name: clash}\nspec:\n  type: LoadBalancer\n  selector: {app: lb}\n  ports: [{port: 18080, targetPort: 8080}]\n", "apply", "-n", ns, "-f", "-")
	cluster.WaitFor(t, "a PortInUse event on the clashing Service", func(ctx context.Context) (bool, error) {
		evs, err := srv.ClientT(t).CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=clash"})
		if err != nil {
			return false, nil
		}
		for _, e := range evs.Items {
			if e.Reason == "PortInUse" {
				return true, nil
			}
		}
		return false, nil
	})
	if in := service(t, ns, "clash").Status.LoadBalancer.Ingress; len(in) != 0 {
		t.Errorf("clashing Service got addresses %v", in)
	}
}

func TestDeletedServiceLeavesNoRules(t *testing.T) {
	t.Parallel()
	ns := srv.Namespace(t)
	srv.EchoDeployment(t, ns, "gone", 1, "  type: NodePort\n  ports: [{port: 80, targetPort: 8080}]\n")
	svc := service(t, ns, "gone")
	ip, nodePort := svc.Spec.ClusterIP, svc.Spec.Ports[0].NodePort
	cluster.WaitFor(t, "rules for the Service", func(ctx context.Context) (bool, error) {
		return cluster.TableMentions(cluster.NamesOf(srv.DataDir).Table, net.ParseIP(ip), uint16(nodePort))
	})
	srv.KubectlT(t, "", "delete", "-n", ns, "service", "gone")
	cluster.WaitFor(t, "no rules for the deleted Service", func(ctx context.Context) (bool, error) {
		found, err := cluster.TableMentions(cluster.NamesOf(srv.DataDir).Table, net.ParseIP(ip), uint16(nodePort))
		return !found, err
	})
}
