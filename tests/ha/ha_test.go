package ha

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	metricsclient "k8s.io/metrics/pkg/client/clientset/versioned"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// TestHA runs its steps in order, each on the cluster as the one before
// left it: the later ones stop servers.
func TestHA(t *testing.T) {
	cluster.Steps(t,
		cluster.Step{Name: "OneCluster", Run: oneCluster},
		cluster.Step{Name: "AgentJoinedThroughSecondServer", Run: agentJoinedThroughSecondServer},
		cluster.Step{Name: "MetricsThroughEitherServer", Run: metricsThroughEitherServer},
		cluster.Step{Name: "HelmChartInstalledOnce", Run: helmChartInstalledOnce},
		cluster.Step{Name: "WrongTokenRefused", Run: wrongTokenRefused},
		cluster.Step{Name: "UnreachableDatastore", Run: unreachableDatastore},
		cluster.Step{Name: "FirstServerDown", Run: firstServerDown},
		cluster.Step{Name: "AgentsServerDown", Run: agentsServerDown},
		cluster.Step{Name: "MetricsAfterFailover", Run: func(t *testing.T) { nodeMetrics(t, servers[0]) }},
		cluster.Step{Name: "TokenRotated", Run: tokenRotated},
	)
}

// oneCluster: both servers hold the same CAs and token, and serve the
// same objects; one server's admin kubeconfig works against the other.
func oneCluster(t *testing.T) {
	first, second := servers[0], servers[1]
	t1, err := first.JoinToken()
	if err != nil {
		t.Fatal(err)
	}
	t2, err := second.JoinToken()
	if err != nil {
		t.Fatal(err)
	}
	if t1 != t2 {
		t.Fatalf("the servers' tokens differ:\n%s\n%s", t1, t2)
	}
	for _, f := range []string{"server-ca.crt", "client-ca.crt", "request-header-ca.crt", "service.key"} {
		a, _ := os.ReadFile(filepath.Join(first.DataDir, "server", "tls", f))
		b, _ := os.ReadFile(filepath.Join(second.DataDir, "server", "tls", f))
		if len(a) == 0 || string(a) != string(b) {
			t.Errorf("%s differs between the servers", f)
		}
	}

	ctx := cluster.Context(t)
	ns := first.Namespace(t)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "shared"}, Data: map[string]string{"k": "v"}}
	if _, err := first.ClientT(t).CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := second.ClientT(t).CoreV1().ConfigMaps(ns).Get(ctx, "shared", metav1.GetOptions{})
	if err != nil || got.Data["k"] != "v" {
		t.Fatalf("the ConfigMap made through server-1, read through server-2: %v %v", got, err)
	}

	// server-1's kubeconfig pointed at server-2.
	crossed := *first
	crossed.APIServer = second.APIServer
	if out := crossed.KubectlT(t, "", "get", "node", "agent", "-o", "name"); strings.TrimSpace(out) != "node/agent" {
		t.Fatalf("server-1's kubeconfig against server-2: %q", out)
	}

	// Both API servers are endpoints of the kubernetes Service.
	cluster.WaitFor(t, "both servers behind the kubernetes Service", func(ctx context.Context) (bool, error) {
		return slices.Equal(apiEndpoints(ctx, t, servers[1]), []string{lan.Hosts[0].IP, lan.Hosts[1].IP}), nil
	})
}

// agentJoinedThroughSecondServer: the agent, given server-1's token and
// server-2's URL, is a Ready node with a pod network.
func agentJoinedThroughSecondServer(t *testing.T) {
	n, err := servers[0].ClientT(t).CoreV1().Nodes().Get(cluster.Context(t), "agent", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Spec.PodCIDR == "" {
		t.Fatal("the agent's node has no podCIDR")
	}
}

// wrongTokenRefused: a server with another token on the same datastore
// stops with one line that says which token to give, and writes neither
// certificates nor a token.
func wrongTokenRefused(t *testing.T) {
	s := cluster.New(t.TempDir(), "--datastore-endpoint", pg.Endpoint("skiff"), "--token", "not-the-cluster-secret")
	if err := s.StartProcess(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Kill() })
	cluster.WaitFor(t, "the server with a wrong token to exit", func(ctx context.Context) (bool, error) { return s.Exited(), nil })
	log := s.LogTail(5)
	t.Logf("server with a wrong token:\n%s", log)
	if !strings.Contains(log, "give that cluster's token with --token") {
		t.Fatalf("log does not say to give the cluster's token:\n%s", log)
	}
	if strings.Contains(log, "not-the-cluster-secret") {
		t.Fatalf("log shows the secret:\n%s", log)
	}
	for _, f := range []string{"server/token", "server/tls/server-ca.crt", "server/tls/serving-kube-apiserver.crt"} {
		if _, err := os.Stat(filepath.Join(s.DataDir, f)); err == nil {
			t.Errorf("%s was written", f)
		}
	}
}

// unreachableDatastore: a server whose database does not answer stops
// after a while with one line that names the endpoint, without its
// password, and writes no certificates.
func unreachableDatastore(t *testing.T) {
	nobody := fmt.Sprintf("postgres://skiff:hunter2@%s:%d/skiff?sslmode=disable", cluster.LANGateway, cluster.FreePort())
	s := cluster.New(t.TempDir(), "--datastore-endpoint", nobody)
	if err := s.StartProcess(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Kill() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(context.Context) (bool, error) { return s.Exited(), nil }); err != nil {
		t.Fatalf("the server still waits for a datastore that does not answer:\n%s", s.LogTail(5))
	}
	last := strings.TrimSpace(s.LogTail(1))
	if !strings.Contains(last, "did not answer within") || !strings.Contains(last, "check --datastore-endpoint") || strings.Contains(last, "hunter2") {
		t.Fatalf("last line: %q", last)
	}
	if _, err := os.Stat(filepath.Join(s.DataDir, "server", "tls")); err == nil {
		t.Error("certificates were written")
	}
}

// firstServerDown: with server-1 stopped, server-2 takes over the
// controllers: a new Deployment gets its pod scheduled and running on the
// agent, and only server-2 stays behind the kubernetes Service. Then
// server-1 comes back.
func firstServerDown(t *testing.T) {
	if err := servers[0].Stop(); err != nil {
		t.Fatalf("stopping server-1: %v", err)
	}
	second := servers[1]
	podOnAgent(t, second, "after")
	cluster.WaitFor(t, "only server-2 behind the kubernetes Service", func(ctx context.Context) (bool, error) {
		return slices.Equal(apiEndpoints(ctx, t, second), []string{lan.Hosts[1].IP}), nil
	})
	if err := servers[0].Start(cluster.Context(t)); err != nil {
		t.Fatalf("starting server-1 again: %v", err)
	}
	cluster.WaitFor(t, "both servers behind the kubernetes Service again", func(ctx context.Context) (bool, error) {
		return slices.Equal(apiEndpoints(ctx, t, second), []string{lan.Hosts[0].IP, lan.Hosts[1].IP}), nil
	})
}

// agentsServerDown: the agent joined through server-2 learns
// the other server from the kubernetes Service and keeps it in its data
// dir; with server-2 stopped, it goes on through server-1: it stays Ready
// and runs a new Deployment's pod.
func agentsServerDown(t *testing.T) {
	kept := filepath.Join(agent.DataDir, "agent", "api-servers.json")
	first := fmt.Sprintf("%s:%d", lan.Hosts[0].IP, apiPort)
	cluster.WaitFor(t, "the agent to keep server-1 in "+kept, func(ctx context.Context) (bool, error) {
		data, _ := os.ReadFile(kept)
		return strings.Contains(string(data), first), nil
	})
	if err := servers[1].Stop(); err != nil {
		t.Fatalf("stopping server-2: %v", err)
	}
	podOnAgent(t, servers[0], "without-server-2")
	if agent.Exited() {
		t.Fatalf("the agent exited:\n%s", agent.LogTail(20))
	}
	if !cluster.NodeReady(cluster.Context(t), servers[0].ClientT(t), "agent") {
		t.Error("the agent's node is not Ready")
	}
}

// podOnAgent applies a Deployment of one pod through s and waits for the
// pod to run on the agent.
func podOnAgent(t *testing.T, s *cluster.Server, name string) {
	t.Helper()
	ns := s.Namespace(t)
	s.KubectlT(t, fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s}
spec:
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - {name: c, image: %[2]s, command: [sleep, "3600"]}
`, name, cluster.BusyboxImage), "apply", "-n", ns, "-f", "-")
	cs := s.ClientT(t)
	cluster.WaitFor(t, "the Deployment's pod running on the agent", func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil || len(pods.Items) == 0 {
			return false, nil
		}
		p := pods.Items[0]
		return p.Spec.NodeName == "agent" && p.Status.Phase == corev1.PodRunning, nil
	})
}

// apiEndpoints lists the kubernetes Service's endpoint addresses, sorted, as
// s tells them.
func apiEndpoints(ctx context.Context, t *testing.T, s *cluster.Server) []string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	slices, err := s.ClientT(t).DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=kubernetes"})
	if err != nil {
		return nil
	}
	var ips []string
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			ips = append(ips, e.Addresses...)
		}
	}
	sort.Strings(ips)
	return ips
}

// nodeMetrics waits until s answers the agent's NodeMetrics.
func nodeMetrics(t *testing.T, s *cluster.Server) {
	t.Helper()
	cfg, err := s.Config()
	if err != nil {
		t.Fatal(err)
	}
	mc, err := metricsclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		m, err := mc.MetricsV1beta1().NodeMetricses().Get(ctx, "agent", metav1.GetOptions{})
		return err == nil && !m.Usage.Memory().IsZero(), nil
	}); err != nil {
		t.Fatalf("%s never answered the agent's NodeMetrics: %v", s.Dir, err)
	}
}

// metricsThroughEitherServer: both API servers answer metrics.k8s.io; one
// server (the Lease's holder) serves it, and its EndpointSlice points there.
func metricsThroughEitherServer(t *testing.T) {
	for _, s := range servers {
		nodeMetrics(t, s)
	}
	cs := servers[0].ClientT(t)
	lease, err := cs.CoordinationV1().Leases("kube-system").Get(cluster.Context(t), "skiff-metrics-server", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil {
		t.Fatalf("the metrics API's Lease: %v %+v", err, lease)
	}
	slice, err := cs.DiscoveryV1().EndpointSlices("kube-system").Get(cluster.Context(t), "metrics-server", metav1.GetOptions{})
	if err != nil || len(slice.Endpoints) != 1 || len(slice.Endpoints[0].Addresses) != 1 {
		t.Fatalf("the metrics API's EndpointSlice: %v %+v", err, slice)
	}
	if addr := slice.Endpoints[0].Addresses[0]; !strings.Contains(*lease.Spec.HolderIdentity, "_"+addr+"_") {
		t.Fatalf("the EndpointSlice points at %s, the Lease is held by %s", addr, *lease.Spec.HolderIdentity)
	}
}

// helmChartInstalledOnce: a HelmChart applied through one server is
// installed by the server that holds the HelmChart controller's Lease,
// once: one revision.
func helmChartInstalledOnce(t *testing.T) {
	doc := fmt.Sprintf("apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata: {name: once, namespace: default}\nspec:\n  chartContent: %s\n",
		base64.StdEncoding.EncodeToString(cluster.DemoChart("0.1.0")))
	servers[1].KubectlT(t, doc, "apply", "-f", "-")
	t.Cleanup(func() {
		servers[1].Kubectl(context.Background(), "", "delete", "helmchart", "-n", "default", "once", "--wait=false")
	})
	cs := servers[0].ClientT(t)
	cluster.WaitFor(t, "the release's ConfigMap", func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "once-cm", metav1.GetOptions{})
		return err == nil, nil
	})
	lease, err := cs.CoordinationV1().Leases("kube-system").Get(cluster.Context(t), "skiff-helm-controller", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil {
		t.Fatalf("the HelmChart controller's Lease: %v %+v", err, lease)
	}
	revisions, err := cs.CoreV1().Secrets("default").List(cluster.Context(t), metav1.ListOptions{LabelSelector: "owner=helm,name=once"})
	if err != nil || len(revisions.Items) != 1 {
		t.Fatalf("release once has %d revisions, want 1 (%v)", len(revisions.Items), err)
	}
}

// tokenRotated: `skiff token rotate` on server-1 seals the cluster's CA
// files under a new secret; server-2 then starts with the new token only,
// the old token joins no node, the agent joined before stays Ready, and
// server-1 starts again on the token file alone.
func tokenRotated(t *testing.T) {
	ctx := cluster.Context(t)
	oldToken, err := servers[0].JoinToken()
	if err != nil {
		t.Fatal(err)
	}
	const secret = "rotated-secret-0123456789"
	code, out := cluster.Run(ctx, nil, "token", "rotate", "--data-dir", servers[0].DataDir, "--new-token", secret)
	if code != 0 {
		t.Fatalf("skiff token rotate: exit %d: %s", code, out)
	}
	newToken, err := servers[0].JoinToken()
	if err != nil || !strings.HasSuffix(newToken, "::server:"+secret) || !strings.Contains(out, newToken) {
		t.Fatalf("after the rotation the token file holds %q (%v); the command printed %q", newToken, err, out)
	}
	// server-2 on the old token could no longer open the datastore's
	// files; on the new one it starts.
	second := servers[1]
	second.Token = newToken
	if err := second.Start(ctx); err != nil {
		t.Fatalf("server-2 with the new token: %v\n%s", err, second.LogTail(20))
	}
	url := fmt.Sprintf("https://%s:%d", lan.Hosts[1].IP, apiPort)
	code, out = cluster.Run(ctx, nil, "agent", "--server", url, "--token", oldToken, "--node-name", "old-token", "--data-dir", t.TempDir())
	if code == 0 || !strings.Contains(out, "the join token was refused") {
		t.Errorf("an agent with the old token: exit %d: %s", code, out)
	}
	if !cluster.NodeReady(ctx, second.ClientT(t), "agent") {
		t.Error("the agent joined before the rotation is not Ready")
	}
	if err := servers[0].Stop(); err != nil {
		t.Fatal(err)
	}
	if err := servers[0].Start(ctx); err != nil {
		t.Fatalf("server-1 after the rotation: %v\n%s", err, servers[0].LogTail(20))
	}
	// A rotation with the server stopped cannot seal anything: refused,
	// and the token stays.
	if err := second.Stop(); err != nil {
		t.Fatal(err)
	}
	code, out = cluster.Run(ctx, nil, "token", "rotate", "--data-dir", second.DataDir)
	if code == 0 || !strings.Contains(out, "is not running") {
		t.Errorf("skiff token rotate on a stopped server: exit %d: %s", code, out)
	}
	if err := second.Start(ctx); err != nil {
		t.Fatalf("server-2 again: %v", err)
	}
}
