package netpol

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// spec is a pod to run.
type spec struct {
	name, node string
	labels     map[string]string
	command    []string
	// ports are the container's ports: name=number.
	ports       map[string]int
	hostNetwork bool
	restart     corev1.RestartPolicy
	// probes: the kubelet probes the first port every second, and one
	// failure counts.
	probes    bool
	firstPort int
}

// run creates pods and waits until they run with an address, Ready.
func run(t *testing.T, ns string, specs ...spec) map[string]*corev1.Pod {
	t.Helper()
	createPods(t, ns, specs...)
	cs := srv.ClientT(t)
	out := map[string]*corev1.Pod{}
	for _, s := range specs {
		cluster.WaitFor(t, "pod "+s.name+" running on "+s.node, func(ctx context.Context) (bool, error) {
			p, err := cs.CoreV1().Pods(ns).Get(ctx, s.name, metav1.GetOptions{})
			out[s.name] = p
			return err == nil && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" && ready(p), nil
		})
	}
	return out
}

// createPods creates pods.
func createPods(t *testing.T, ns string, specs ...spec) {
	t.Helper()
	cs := srv.ClientT(t)
	for _, s := range specs {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: s.name, Namespace: ns, Labels: s.labels},
			Spec: corev1.PodSpec{
				NodeName:                      s.node,
				HostNetwork:                   s.hostNetwork,
				TerminationGracePeriodSeconds: ptr.To(int64(0)),
				RestartPolicy:                 s.restart,
				Containers:                    []corev1.Container{{Name: "c", Image: cluster.BusyboxImage, Command: s.command}},
			},
		}
		if s.probes {
			port := intstr.FromInt32(int32(s.firstPort))
			p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: port}},
				PeriodSeconds: 1, FailureThreshold: 1}
			p.Spec.Containers[0].LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: port}},
				PeriodSeconds: 1, FailureThreshold: 1}
		}
		for name, n := range s.ports {
			p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{Name: name, ContainerPort: int32(n)})
		}
		if _, err := cs.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// server is a pod serving HTTP and UDP echo on each port, with probes from
// its kubelet on the first.
func server(name, node string, labels map[string]string, ports ...int) spec {
	var cmd []string
	for _, p := range ports {
		cmd = append(cmd, fmt.Sprintf("tool serve -port %d &", p))
	}
	return spec{name: name, node: node, labels: labels, command: []string{"sh", "-c", strings.Join(cmd, " ") + " wait"}, firstPort: ports[0]}
}

func client(name, node string, labels map[string]string) spec {
	return spec{name: name, node: node, labels: labels, command: []string{"sleep", "3600"}}
}

// dial connects from pod over TCP once and says how: connected, refused,
// unreachable, timeout.
func dial(t *testing.T, ns, pod, addr string) string {
	t.Helper()
	out, err := srv.Kubectl(cluster.Context(t), "", "exec", "-n", ns, pod, "--", "tool", "dial", "-timeout", "3s", addr)
	if err != nil {
		return "exec failed: " + err.Error()
	}
	w, _, _ := strings.Cut(strings.TrimSpace(out), " ")
	return w
}

// udp sends a datagram from pod and says what came back: "reply", or the
// error: refused (ICMP port unreachable: it reached the destination, which
// has no socket), prohibited (ICMP administratively prohibited: a policy),
// timeout.
func udp(t *testing.T, ns, pod, addr string) string {
	t.Helper()
	out, err := srv.Kubectl(cluster.Context(t), "", "exec", "-n", ns, pod, "--", "tool", "udp", addr)
	if err != nil {
		out += err.Error() // the tool's error is in kubectl's
	}
	switch {
	case err == nil && strings.HasPrefix(out, "host="):
		return "reply"
	case strings.Contains(out, "connection refused"):
		return "refused"
	case strings.Contains(out, "no route to host"):
		return "prohibited"
	case strings.Contains(out, "timeout"):
		return "timeout"
	}
	return fmt.Sprintf("%v: %s", err, out)
}

// expect waits until a connection from pod to addr ends as want (a change
// of policy may still be on its way to the node).
func expect(t *testing.T, ns, pod, addr, want string) {
	t.Helper()
	got := ""
	cluster.WaitFor(t, fmt.Sprintf("%s -> %s: %s", pod, addr, want), func(ctx context.Context) (bool, error) {
		got = dial(t, ns, pod, addr)
		return got == want, nil
	})
}

func expectUDP(t *testing.T, ns, pod, addr, want string) {
	t.Helper()
	cluster.WaitFor(t, fmt.Sprintf("%s -> udp %s: %s", pod, addr, want), func(ctx context.Context) (bool, error) {
		return udp(t, ns, pod, addr) == want, nil
	})
}

func addr(p *corev1.Pod, port int) string { return p.Status.PodIP + ":" + strconv.Itoa(port) }

// namespace creates a namespace with labels, deleted when the test ends.
func namespace(t *testing.T, name string, labels map[string]string) string {
	t.Helper()
	cs := srv.ClientT(t)
	l := map[string]string{}
	for k, v := range labels {
		l[k] = v
	}
	if _, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)})
	})
	cluster.WaitFor(t, "namespace "+name+"'s default ServiceAccount", func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	return name
}

func create(t *testing.T, p *networkingv1.NetworkPolicy) {
	t.Helper()
	if _, err := srv.ClientT(t).NetworkingV1().NetworkPolicies(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, ns, name string) {
	t.Helper()
	if err := srv.ClientT(t).NetworkingV1().NetworkPolicies(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

func policy(ns, name string, sel map[string]string, types ...networkingv1.PolicyType) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: sel}, PolicyTypes: types}}
}

var (
	ingress = networkingv1.PolicyTypeIngress
	egress  = networkingv1.PolicyTypeEgress
)

func labels(kv ...string) map[string]string {
	m := map[string]string{}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		m[k] = v
	}
	return m
}

func service(t *testing.T, ns, name string, sel map[string]string, port, target int) string {
	t.Helper()
	svc, err := srv.ClientT(t).CoreV1().Services(ns).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Selector: sel, Ports: []corev1.ServicePort{
			{Name: "tcp", Protocol: corev1.ProtocolTCP, Port: int32(port), TargetPort: intOrString(target)},
			{Name: "udp", Protocol: corev1.ProtocolUDP, Port: int32(port), TargetPort: intOrString(target)},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc.Spec.ClusterIP + ":" + strconv.Itoa(port)
}

func intOrString(n int) intstr.IntOrString { return intstr.FromInt32(int32(n)) }

// TestDefaultDenyIngress: a policy selecting every pod of a namespace with
// no ingress rule cuts a client on the other node, by pod IP and by
// Service IP, TCP and UDP; the node's own traffic (its kubelet's probes, a
// hostNetwork pod of the node) still gets through, so the pods stay
// Ready; deleting the policy restores traffic.
func TestDefaultDenyIngress(t *testing.T) {
	ns := srv.Namespace(t)
	web := server("web", agentNode, labels("app=web"), 8080)
	web.probes = true
	pods := run(t, ns, web, client("client", serverNode, labels("app=client")),
		spec{name: "host-client", node: agentNode, hostNetwork: true, command: []string{"sleep", "3600"}})
	w := pods["web"]
	svc := service(t, ns, "web", labels("app=web"), 80, 8080)
	expect(t, ns, "client", addr(w, 8080), "connected")
	expect(t, ns, "client", svc, "connected")
	expectUDP(t, ns, "client", addr(w, 8080), "reply")
	expectUDP(t, ns, "client", svc, "reply")

	create(t, policy(ns, "deny", nil, ingress))
	enforced := time.Now()
	expect(t, ns, "client", addr(w, 8080), "refused")
	for _, a := range []string{addr(w, 8080), svc} {
		if got := dial(t, ns, "client", a); got != "refused" {
			t.Errorf("client -> %s under default deny: %s, want refused", a, got)
		}
		if got := udp(t, ns, "client", a); got != "prohibited" {
			t.Errorf("client -> udp %s under default deny: %s, want prohibited", a, got)
		}
	}
	// Never cut: the node's own traffic, from its host and from a
	// hostNetwork pod of the node.
	if out, err := lan.Hosts[1].Run(toolPath(t), "dial", addr(w, 8080)); err != nil || !strings.HasPrefix(out, "connected") {
		t.Errorf("the agent's host -> web under default deny: %v %s, want connected", err, out)
	}
	if got := dial(t, ns, "host-client", addr(w, 8080)); got != "connected" {
		t.Errorf("a hostNetwork pod of web's node -> web under default deny: %s, want connected", got)
	}
	// The kubelet's probes (every second, one failure fails) keep web
	// Ready and alive for several periods.
	cluster.WaitFor(t, "web to stay Ready under default deny for 4 probe periods", func(ctx context.Context) (bool, error) {
		p, err := srv.ClientT(t).CoreV1().Pods(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if !ready(p) || p.Status.ContainerStatuses[0].RestartCount > 0 {
			return false, fmt.Errorf("web is not Ready, or restarted, under default deny: %+v", p.Status)
		}
		return time.Since(enforced) > 4*time.Second, nil
	})

	remove(t, ns, "deny")
	expect(t, ns, "client", addr(w, 8080), "connected")
	expect(t, ns, "client", svc, "connected")
	expectUDP(t, ns, "client", addr(w, 8080), "reply")
}

// loopLog reads the outcomes a looping client printed: Unix milliseconds
// and outcome.
type attempt struct {
	at      time.Time
	outcome string
}

func loopLog(t *testing.T, ns, pod string) []attempt {
	t.Helper()
	out, err := srv.Kubectl(cluster.Context(t), "", "logs", "-n", ns, pod)
	if err != nil {
		t.Fatalf("logs of %s: %v", pod, err)
	}
	var as []attempt
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		ms, what, ok := strings.Cut(line, " ")
		n, err := strconv.ParseInt(ms, 10, 64)
		if ok && err == nil {
			as = append(as, attempt{time.UnixMilli(n), what})
		}
	}
	return as
}

// firstAfter waits for the first attempt that started after since and
// ended as want, and returns how long after since it started; every
// attempt between since and it must have ended as before.
func firstAfter(t *testing.T, ns, pod string, since time.Time, want, before string) time.Duration {
	t.Helper()
	var took time.Duration
	cluster.WaitFor(t, fmt.Sprintf("%s to see %s", pod, want), func(ctx context.Context) (bool, error) {
		for _, a := range loopLog(t, ns, pod) {
			if a.at.Before(since) {
				continue
			}
			if a.outcome == want {
				took = a.at.Sub(since)
				return true, nil
			}
			if a.outcome != before {
				return false, fmt.Errorf("an attempt at %s ended %s, neither %s nor %s", a.at.Format(time.StampMilli), a.outcome, before, want)
			}
		}
		return false, nil
	})
	return took
}

// TestTakesEffectWithinASecond: a client on the other node connects every
// 50ms; a policy created meanwhile refuses it within a second of the
// create call returning, and deleting it lets it through again as fast.
//
// The bound is the second. What it covers: the watch event's way
// to the agent (through its API load balancer), the sync loop's pacing
// (at most 100ms after the previous sync), the build and the transaction
// (milliseconds at this size), and the loop's own interval (50ms): some
// 200ms when the machine is idle. The rest is headroom for a machine of two
// cores running both nodes.
func TestTakesEffectWithinASecond(t *testing.T) {
	ns := srv.Namespace(t)
	w := run(t, ns, server("web", agentNode, labels("app=web"), 8080))["web"]
	run(t, ns, spec{name: "loop", node: serverNode, command: []string{"tool", "loop", "-every", "50ms", addr(w, 8080)}})
	firstAfter(t, ns, "loop", time.Now(), "connected", "refused")

	create(t, policy(ns, "deny", labels("app=web"), ingress))
	created := time.Now()
	took := firstAfter(t, ns, "loop", created, "refused", "connected")
	t.Logf("refused %v after the policy's creation", took)
	if took > time.Second {
		t.Errorf("the policy took %v to refuse the looping client, want at most a second", took)
	}

	remove(t, ns, "deny")
	deleted := time.Now()
	took = firstAfter(t, ns, "loop", deleted, "connected", "refused")
	t.Logf("connected again %v after the policy's deletion", took)
	if took > time.Second {
		t.Errorf("the deletion took %v to let the looping client through, want at most a second", took)
	}
}

// TestEstablishedConnectionSurvives: a connection opened before a policy
// that forbids it keeps going; new ones are refused.
//
// It starts once the earlier tests' pods are gone: while they go, their
// addresses come free for this test's pods, and in one run of the whole
// package in three the held connection, between such reused addresses,
// stalled a few seconds in (whether packets conntrack finds invalid were
// dropped or let through), where three runs of this test alone, with the
// policy and without, never did. What stalls it is still open; this test
// checks what a policy change does to a connection.
func TestEstablishedConnectionSurvives(t *testing.T) {
	cluster.WaitFor(t, "the earlier tests' pods to be gone", func(ctx context.Context) (bool, error) {
		pods, err := srv.ClientT(t).CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if p.Namespace != metav1.NamespaceSystem {
				return false, nil
			}
		}
		return true, nil
	})
	ns := srv.Namespace(t)
	w := run(t, ns, server("web", agentNode, labels("app=web"), 8080), client("client", serverNode, labels("app=client")))["web"]
	run(t, ns, spec{name: "holder", node: serverNode, restart: corev1.RestartPolicyNever,
		command: []string{"tool", "hold", "-d", "15s", addr(w, 8080)}})
	cluster.WaitFor(t, "the holder's connection", func(ctx context.Context) (bool, error) {
		out, _ := srv.Kubectl(ctx, "", "logs", "-n", ns, "holder")
		return strings.Contains(out, "connected"), nil
	})
	create(t, policy(ns, "deny", labels("app=web"), ingress))
	expect(t, ns, "client", addr(w, 8080), "refused")
	cluster.WaitFor(t, "the holder to end", func(ctx context.Context) (bool, error) {
		p, err := srv.ClientT(t).CoreV1().Pods(ns).Get(ctx, "holder", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if p.Status.Phase == corev1.PodFailed {
			out, _ := srv.Kubectl(ctx, "", "logs", "-n", ns, "holder")
			// What each node's conntrack holds of the web pod, to tell
			// a lost entry from an invalid packet.
			for i, h := range lan.Hosts {
				ct, _ := h.Run("cat", "/proc/net/nf_conntrack")
				for _, l := range strings.Split(ct, "\n") {
					if strings.Contains(l, w.Status.PodIP) {
						t.Logf("conntrack of host %d: %s", i, l)
					}
				}
			}
			return false, fmt.Errorf("the established connection broke under the new policy: %s (%+v)", out, p.Status.ContainerStatuses)
		}
		return p.Status.Phase == corev1.PodSucceeded, nil
	})
}

// TestPeers: ingress allowed by pod label, by namespace label, by both; a
// policy of another namespace does not leak; a hostNetwork client on
// another node is never selected by a pod selector.
func TestPeers(t *testing.T) {
	base := srv.Namespace(t)
	nsA := namespace(t, base+"-a", labels("team=a"))
	nsB := namespace(t, base+"-b", labels("team=b"))
	nsC := namespace(t, base+"-c", nil)
	w := run(t, base, server("web", agentNode, labels("app=web"), 8080),
		client("friend", serverNode, labels("app=friend")), client("stranger", serverNode, labels("app=other")),
		spec{name: "host-client", node: serverNode, hostNetwork: true, command: []string{"sleep", "3600"}})["web"]
	run(t, nsA, client("member", serverNode, labels("role=client")), client("guest", serverNode, labels("role=other")))
	run(t, nsB, client("any", serverNode, nil))
	run(t, nsC, client("any", serverNode, nil))
	target := addr(w, 8080)

	// A policy of another namespace selecting app=web pods does not touch
	// this namespace's.
	create(t, policy(nsC, "deny-web", labels("app=web"), ingress))
	expect(t, nsC, "any", target, "connected")
	expect(t, base, "host-client", target, "connected")

	p := policy(base, "web-in", labels("app=web"), ingress)
	p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
		{PodSelector: &metav1.LabelSelector{MatchLabels: labels("app=friend")}},
		{NamespaceSelector: &metav1.LabelSelector{MatchLabels: labels("team=b")}},
		{NamespaceSelector: &metav1.LabelSelector{MatchLabels: labels("team=a")}, PodSelector: &metav1.LabelSelector{MatchLabels: labels("role=client")}},
	}}}
	create(t, p)
	expect(t, base, "stranger", target, "refused")
	for _, c := range []struct{ ns, pod, want string }{
		{base, "friend", "connected"},    // pod label
		{nsB, "any", "connected"},        // namespace label
		{nsA, "member", "connected"},     // both
		{nsA, "guest", "refused"},        // the namespace, not the pod
		{nsC, "any", "refused"},          // neither
		{base, "host-client", "refused"}, // the node's address: no pod selector matches it
	} {
		if got := dial(t, c.ns, c.pod, target); got != c.want {
			t.Errorf("%s/%s -> web: %s, want %s", c.ns, c.pod, got, c.want)
		}
	}
	// A namespace's labels change: its pods follow.
	nsObj, err := srv.ClientT(t).CoreV1().Namespaces().Get(context.Background(), nsC, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nsObj.Labels["team"] = "b"
	if _, err := srv.ClientT(t).CoreV1().Namespaces().Update(context.Background(), nsObj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, nsC, "any", target, "connected")
}

// TestPorts: named ports resolve on each pod (two pods share the name on
// different numbers), and port ranges.
func TestPorts(t *testing.T) {
	ns := srv.Namespace(t)
	one := server("one", agentNode, labels("app=web"), 8080, 9090)
	one.ports = map[string]int{"http": 8080}
	two := server("two", agentNode, labels("app=web"), 8080, 9090)
	two.ports = map[string]int{"http": 9090}
	pods := run(t, ns, one, two, client("client", serverNode, labels("app=client")))
	named := policy(ns, "named", labels("app=web"), ingress)
	http := intstr.FromString("http")
	named.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: &http}}}}
	create(t, named)
	expect(t, ns, "client", addr(pods["one"], 9090), "refused")
	for _, c := range []struct {
		pod  string
		port int
		want string
	}{{"one", 8080, "connected"}, {"one", 9090, "refused"}, {"two", 9090, "connected"}, {"two", 8080, "refused"}} {
		if got := dial(t, ns, "client", addr(pods[c.pod], c.port)); got != c.want {
			t.Errorf("client -> %s:%d (named port http): %s, want %s", c.pod, c.port, got, c.want)
		}
	}

	remove(t, ns, "named")
	ranged := policy(ns, "ranged", labels("app=web"), ingress)
	from := intstr.FromInt32(9000)
	ranged.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: &from, EndPort: ptr.To(int32(9100))}}}}
	create(t, ranged)
	expect(t, ns, "client", addr(pods["two"], 8080), "refused")
	expect(t, ns, "client", addr(pods["one"], 9090), "connected")
	if got := dial(t, ns, "client", addr(pods["one"], 8080)); got != "refused" {
		t.Errorf("client -> one:8080 (range 9000-9100): %s, want refused", got)
	}
}

// TestEgressIPBlock: egress to anywhere but one address (an ipBlock with
// an except), by pod IP and Service IP; DNS to the node's resolver is not
// cut.
func TestEgressIPBlock(t *testing.T) {
	ns := srv.Namespace(t)
	pods := run(t, ns, server("one", agentNode, labels("app=one"), 8080), server("two", agentNode, labels("app=two"), 8080),
		client("client", serverNode, labels("app=client")))
	svc := service(t, ns, "one", labels("app=one"), 80, 8080)
	p := policy(ns, "out", labels("app=client"), egress)
	p.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{
		{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{pods["one"].Status.PodIP + "/32"}}}}}}
	create(t, p)
	expect(t, ns, "client", addr(pods["one"], 8080), "refused")
	// By Service IP the connection is cut too, at once: the node that did
	// the Service's DNAT answers with an ICMP error, which carries the
	// Service's address back to the client (a reset would carry the
	// pod's, and the client's socket would ignore it).
	if got := dial(t, ns, "client", svc); got != "unreachable" {
		t.Errorf("client -> Service one under the egress policy: %s, want unreachable (ICMP admin-prohibited) at once", got)
	}
	if got := dial(t, ns, "client", addr(pods["two"], 8080)); got != "connected" {
		t.Errorf("client -> two under the egress policy: %s, want connected", got)
	}
	deny := policy(ns, "deny-out", labels("app=client"), egress)
	remove(t, ns, "out")
	create(t, deny)
	expect(t, ns, "client", addr(pods["two"], 8080), "refused")
	out, err := srv.Kubectl(cluster.Context(t), "", "exec", "-n", ns, "client", "--", "tool", "lookup", "kubernetes.default")
	if err != nil || !strings.Contains(out, ".") {
		t.Errorf("DNS under default deny egress: %v %s", err, out)
	}
}

// TestHostNetworkServer: a hostNetwork pod is never a policy's target.
func TestHostNetworkServer(t *testing.T) {
	ns := srv.Namespace(t)
	hs := server("host-web", agentNode, labels("app=web"), 18080)
	hs.hostNetwork = true
	run(t, ns, hs, client("client", serverNode, labels("app=client")))
	create(t, policy(ns, "deny", nil, ingress))
	w := run(t, ns, server("web", agentNode, labels("app=web"), 8080))["web"]
	expect(t, ns, "client", addr(w, 8080), "refused")
	if got := dial(t, ns, "client", lan.Hosts[1].IP+":18080"); got != "connected" {
		t.Errorf("client -> a hostNetwork server under default deny: %s, want connected", got)
	}
}

// TestNewPodUnderDefaultDeny: a pod created under a default deny policy is
// never reached, from the moment its address is in the API: UDP tells a
// policy's refusal (administratively prohibited) from the pod's own (port
// unreachable, before its server listens).
func TestNewPodUnderDefaultDeny(t *testing.T) {
	ns := srv.Namespace(t)
	run(t, ns, client("client", serverNode, labels("app=client")))
	w := run(t, ns, server("web", agentNode, labels("app=web"), 8080))["web"]
	create(t, policy(ns, "deny", labels("app=web"), ingress))
	expect(t, ns, "client", addr(w, 8080), "refused")

	cs := srv.ClientT(t)
	s := server("fresh", agentNode, labels("app=web"), 8080)
	createPods(t, ns, s)
	var ip string
	// Polled faster than WaitFor does: the first check should come as
	// soon as the address is out.
	err := wait.PollUntilContextCancel(cluster.Context(t), 20*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "fresh", metav1.GetOptions{})
		if err == nil {
			ip = p.Status.PodIP
		}
		return ip != "", nil
	})
	if err != nil {
		t.Fatalf("fresh's address: %v", err)
	}
	checks := 0
	for {
		p, err := cs.CoreV1().Pods(ns).Get(context.Background(), "fresh", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := udp(t, ns, "client", ip+":8080"); got != "prohibited" {
			t.Fatalf("client -> udp fresh (%s) %d checks after its address was known: %s, want prohibited", ip, checks, got)
		}
		if got := dial(t, ns, "client", ip+":8080"); got == "connected" {
			t.Fatalf("client -> fresh (%s) %d checks after its address was known: connected", ip, checks)
		}
		checks++
		if ready(p) && checks >= 3 {
			break
		}
	}
	t.Logf("%d checks, from fresh's address until it was Ready and after", checks)
}

func toolPath(t *testing.T) string {
	t.Helper()
	p, err := cluster.ToolPath()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDisabled: an agent restarted with --disable-network-policy removes
// the table an earlier start left and enforces nothing: a default deny
// policy no longer cuts a client. It restarts the agent, so it comes last.
func TestDisabled(t *testing.T) {
	table := cluster.NamesOf(agent.DataDir).NetpolTable
	if ok, err := lan.Hosts[1].TableExists(table); err != nil || !ok {
		t.Fatalf("the agent's table %s before: %v %v", table, ok, err)
	}
	if err := agent.Stop(); err != nil {
		t.Fatal(err)
	}
	agent.Extra = append(agent.Extra, "--disable-network-policy")
	if err := agent.StartProcess(); err != nil {
		t.Fatal(err)
	}
	cluster.WaitFor(t, "the agent to remove its table "+table, func(ctx context.Context) (bool, error) {
		if agent.Exited() {
			return false, fmt.Errorf("agent exited:\n%s", agent.LogTail(30))
		}
		ok, err := lan.Hosts[1].TableExists(table)
		return !ok, err
	})
	cluster.WaitFor(t, "the agent Ready", func(ctx context.Context) (bool, error) {
		return cluster.NodeReady(ctx, srv.ClientT(t), agentNode), nil
	})
	ns := srv.Namespace(t)
	create(t, policy(ns, "deny", nil, ingress))
	w := run(t, ns, server("web", agentNode, labels("app=web"), 8080), client("client", serverNode, labels("app=client")))["web"]
	expect(t, ns, "client", addr(w, 8080), "connected")
	expectUDP(t, ns, "client", addr(w, 8080), "reply")
}
