// Package agent tests `skiff agent`: the node half alone, joined to a server
// that runs only the control plane.
package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/discovery"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/keyutil"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/skiff-dev/skiff/tests/cluster"
)

func TestAgentJoinsAndRunsPods(t *testing.T) {
	server := cluster.StartT(t) // control plane only
	a, err := cluster.NewAgent(t.TempDir(), server, "--node-name", "edge-1", "--node-label", "skiff.test/role=edge")
	if err != nil {
		t.Fatal(err)
	}
	a.StopAtEnd(t)
	if err := a.StartProcess(); err != nil {
		t.Fatal(err)
	}
	ctx := cluster.Context(t)
	cs := server.ClientT(t)
	err = wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if a.Exited() {
			return false, fmt.Errorf("agent exited:\n%s", a.LogTail(20))
		}
		n, err := cs.CoreV1().Nodes().Get(ctx, "edge-1", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return n.Labels["skiff.test/role"] == "edge", nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("node edge-1 never Ready with its label: %v", err)
	}

	ns := server.Namespace(t)
	if _, err := server.Kubectl(ctx, fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: hello}\nspec:\n  containers: [{name: c, image: %s, command: [sh, -c, 'echo hello from the agent; exec sleep 3600']}]\n", cluster.BusyboxImage), "apply", "-n", ns, "-f", "-"); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "hello", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning && p.Spec.NodeName == "edge-1", nil
	})
	if err != nil {
		t.Fatalf("pod never ran on the agent: %v", err)
	}
	// Logs come from the agent's kubelet over TLS that the API server
	// verifies against the cluster CA.
	var out string
	err = wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		out, err = server.Kubectl(ctx, "", "logs", "-n", ns, "hello")
		return err == nil && strings.Contains(out, "hello from the agent"), nil
	})
	if err != nil {
		t.Fatalf("kubectl logs: %q, %v", out, err)
	}
	servingCertIsNoAPIIdentity(t, server, a)
	agentVerifiesTheAPIServerByName(t, server, a)

	// Once its Node is deleted (and with it its node password), the
	// machine's still valid certificate renews no more.
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := cs.CoreV1().Nodes().Delete(ctx, "edge-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Secrets("kube-system").Get(ctx, "edge-1.node-password.skiff", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("edge-1's password Secret outlived its Node: %v", err)
	}
	status, body := renew(t, server, a.DataDir, "edge-1")
	if status != http.StatusForbidden || !strings.Contains(body, "node edge-1 has no node password on the server any more (its Node was deleted): join again with a token") {
		t.Errorf("a deleted node renewing with its certificate: %d %q, want 403 and a refusal", status, body)
	}
}

// servingCertIsNoAPIIdentity: the agent's kubelet serving certificate
// comes from the kubelet CA, names the node only, and is no API server
// identity to a node that trusts the server CA.
func servingCertIsNoAPIIdentity(t *testing.T, server *cluster.Server, a *cluster.Server) {
	t.Helper()
	cert := readCert(t, filepath.Join(a.DataDir, "agent", "serving-kubelet.crt"))
	pool := func(file string) *x509.CertPool {
		p := x509.NewCertPool()
		p.AddCert(readCert(t, filepath.Join(server.DataDir, "server", "tls", file)))
		return p
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool("kubelet-ca.crt"), DNSName: "edge-1"}); err != nil {
		t.Errorf("the agent's serving certificate is not the kubelet CA's for edge-1: %v", err)
	}
	for _, name := range []string{"127.0.0.1", "localhost", "edge-1"} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool("server-ca.crt"), DNSName: name}); err == nil {
			t.Errorf("the agent's serving certificate passes as the API server's (for %s) with the server CA", name)
		}
	}
	if len(cert.IPAddresses) > 0 && cert.IPAddresses[0].IsLoopback() || slices.Contains(cert.DNSNames, "localhost") {
		t.Errorf("the agent's serving certificate names loopback: %v %v", cert.DNSNames, cert.IPAddresses)
	}
}

// agentVerifiesTheAPIServerByName: a client built from the agent's own
// kubeconfig accepts the API server, and refuses a certificate of the
// server CA that names the address it dials but is not the API server's (a
// kubelet serving certificate as nodes joined before the kubelet CA have).
func agentVerifiesTheAPIServerByName(t *testing.T, server *cluster.Server, a *cluster.Server) {
	t.Helper()
	tlsDir := filepath.Join(server.DataDir, "server", "tls")
	caCert := readCert(t, filepath.Join(tlsDir, "server-ca.crt"))
	caKey, err := keyutil.PrivateKeyFromFile(filepath.Join(tlsDir, "server-ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "edge-1"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"edge-1", "localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	impostor := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"major":"1","minor":"37","gitVersion":"v1.37.2"}`))
	}))
	impostor.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	impostor.StartTLS()
	defer impostor.Close()

	agentClient := func(host string) error {
		// The file as the agent has it, pointed at host (an override of the
		// server URL would drop the name the file verifies by).
		raw, err := clientcmd.LoadFromFile(filepath.Join(a.DataDir, "agent", "kubelet.kubeconfig"))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range raw.Clusters {
			c.Server = host
		}
		cfg, err := clientcmd.NewDefaultClientConfig(*raw, &clientcmd.ConfigOverrides{}).ClientConfig()
		if err != nil {
			t.Fatal(err)
		}
		dc, err := discovery.NewDiscoveryClientForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = dc.ServerVersion()
		return err
	}
	if err := agentClient(fmt.Sprintf("https://127.0.0.1:%d", server.Port)); err != nil {
		t.Errorf("the agent's kubeconfig does not accept the API server: %v", err)
	}
	if err := agentClient(impostor.URL); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("the agent's kubeconfig accepted a server CA certificate that is not the API server's (err %v)", err)
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s holds no PEM", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// renew asks for certificates as an agent's renewal does: with its client
// certificate and node password, and no token.
func renew(t *testing.T, server *cluster.Server, dataDir, node string) (int, string) {
	t.Helper()
	files := filepath.Join(dataDir, "agent")
	cert, err := tls.LoadX509KeyPair(filepath.Join(files, "client-kubelet.crt"), filepath.Join(files, "client-kubelet.key"))
	if err != nil {
		t.Fatal(err)
	}
	password, err := os.ReadFile(filepath.Join(files, "node-password"))
	if err != nil {
		t.Fatal(err)
	}
	return post(t, server, map[string]any{"nodeName": node, "password": strings.TrimSpace(string(password))}, cert)
}

// post sends a join request to the server, with the client certificates
// given.
func post(t *testing.T, server *cluster.Server, req map[string]any, certs ...tls.Certificate) (int, string) {
	t.Helper()
	// The join endpoint is reached before the CA is trusted, as an agent's
	// first request is; what is checked here is the server's answer.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: certs, InsecureSkipVerify: true,
	}}}
	body, _ := json.Marshal(req)
	resp, err := client.Post(fmt.Sprintf("https://127.0.0.1:%d/v1-skiff/join", server.Port), "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// TestAgentBadInput: what an agent refuses before it contacts any server.
func TestAgentBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--token", "x"}, "needs --server"},
		{[]string{"--server", "http://127.0.0.1:6443", "--token", "x"}, "is not a URL such as https://SERVER:6443"},
		{[]string{"--server", fmt.Sprintf("https://127.0.0.1:%d", cluster.FreePort()), "--token", "x"}, "cannot reach the server"},
		{[]string{"--server", "https://127.0.0.1:6443", "--token", "K10abc::server:x"}, "--token: the token's CA hash"},
		{[]string{"--server", "https://127.0.0.1:6443", "--token", "x", "--nodeport-addresses", "192.168.1.0/24,bogus"}, `--nodeport-addresses: "bogus" is not a CIDR`},
	} {
		code, out := cluster.Run(context.Background(), nil, append([]string{"agent", "--data-dir", dir + "/data"}, tc.args...)...)
		if code == 0 || !strings.Contains(out, tc.want) || strings.Count(strings.TrimSpace(out), "\n") > 0 {
			t.Errorf("skiff agent %v: exit %d, want one line with %q:\n%s", tc.args, code, tc.want, out)
		}
		// A refused start leaves nothing: the data dir was not there.
		if _, err := os.Lstat(dir + "/data"); err == nil {
			left, _ := exec.Command("find", dir+"/data").CombinedOutput()
			t.Errorf("skiff agent %v left its data dir behind:\n%s", tc.args, left)
			os.RemoveAll(dir + "/data")
		}
	}
}

// TestJoinRefused: an agent with a wrong secret, a wrong CA hash, an expired
// or deleted token, or another machine's node name fails with one line that
// says which, the server registers nothing for it and logs the refusal
// without the secret.
func TestJoinRefused(t *testing.T) {
	server := cluster.StartT(t, "--agent-token", "agents-only-0123456789")
	ctx := cluster.Context(t)
	cs := server.ClientT(t)
	good, err := server.JoinToken()
	if err != nil {
		t.Fatal(err)
	}
	hash, cred, _ := strings.Cut(good, "::")
	url := fmt.Sprintf("https://127.0.0.1:%d", server.Port)

	create := func(args ...string) string {
		code, out := cluster.Run(ctx, nil, append([]string{"token", "create", "--kubeconfig", server.Kubeconfig}, args...)...)
		if code != 0 || !strings.HasPrefix(out, hash+"::") {
			t.Fatalf("skiff token create %v: exit %d: %s", args, code, out)
		}
		return strings.TrimSpace(out)
	}
	expiring := create("--ttl", "1s", "--description", "expires at once")
	deleted := create("--description", "deleted")
	kept := create("--ttl", "1h", "--description", "for the CI")
	code, out := cluster.Run(ctx, nil, "token", "list", "--kubeconfig", server.Kubeconfig)
	keptID := strings.Split(strings.Split(kept, "::")[1], ".")[0]
	if code != 0 || !strings.Contains(out, keptID) || !strings.Contains(out, "for the CI") || strings.Contains(out, strings.Split(kept, ".")[1]) {
		t.Errorf("skiff token list: exit %d, want %s with its description and no secret:\n%s", code, keptID, out)
	}
	deletedID := strings.Split(strings.Split(deleted, "::")[1], ".")[0]
	if code, out := cluster.Run(ctx, nil, "token", "delete", "--kubeconfig", server.Kubeconfig, deletedID); code != 0 {
		t.Fatalf("skiff token delete: exit %d: %s", code, out)
	}
	// Wait until the short token has expired (its expiry is in seconds).
	if err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(context.Context) (bool, error) {
		code, out := cluster.Run(ctx, nil, "token", "list", "--kubeconfig", server.Kubeconfig)
		return code == 0 && (strings.Contains(out, "(expired)") || !strings.Contains(out, "expires at once")), nil
	}); err != nil {
		t.Fatal(err)
	}

	otherHash := "K10" + strings.Repeat("0", 64)
	// One answer for every bad token; the server's log says which it was.
	const refused = "the join token was refused: it is wrong, expired or deleted (the server's log says which)"
	// The first machine named taken-1 joins (and then stops at once: its
	// node is not needed here).
	// It joins with the agent token, which the server wrote beside its own.
	agentToken, err := os.ReadFile(filepath.Join(server.DataDir, "server", "agent-token"))
	if err != nil || !strings.HasPrefix(string(agentToken), hash+"::node:agents-only-0123456789") {
		t.Fatalf("the server's agent-token file: %q, %v", agentToken, err)
	}
	joinOnce(t, server, "taken-1", strings.TrimSpace(string(agentToken)))

	// A Node registered without a node password (as a server's own was
	// before they had one) cannot be taken by a token holder.
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bare-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.CoreV1().Nodes().Delete(context.Background(), "bare-1", metav1.DeleteOptions{}) })
	for _, tc := range []struct {
		node, token, want string
	}{
		{"wrong-secret", hash + "::server:not-the-secret", refused},
		{"wrong-agent", hash + "::node:not-the-agent-secret", refused},
		{"wrong-hash", otherHash + "::" + cred, "does not match the token's hash"},
		{"bare-secret", strings.TrimPrefix(cred, "server:"), "the token has no CA hash, so the server's CA cannot be verified: give the whole K10... token"},
		{"expired", expiring, refused},
		{"deleted", deleted, refused},
		{"taken-1", kept, "node name taken-1 is already taken by another machine"},
		{"bare-1", kept, "node name bare-1 belongs to a node that has no node password"},
		{"kubernetes", kept, `node name "kubernetes" is a name of the API server's certificate`},
	} {
		dir := t.TempDir()
		code, out := cluster.Run(ctx, nil, "agent", "--server", url, "--token", tc.token, "--node-name", tc.node, "--data-dir", dir)
		if code == 0 || !strings.Contains(out, tc.want) || strings.Count(strings.TrimSpace(out), "\n") > 0 {
			t.Errorf("agent %s: exit %d, want one line with %q:\n%s", tc.node, code, tc.want, out)
		}
		if files, _ := filepath.Glob(filepath.Join(dir, "agent", "*")); len(files) > 0 {
			t.Errorf("agent %s left files in its data dir: %v", tc.node, files)
		}
		if tc.node == "taken-1" || tc.node == "bare-1" || tc.node == "bare-secret" {
			continue
		}
		if _, err := cs.CoreV1().Secrets("kube-system").Get(ctx, tc.node+".node-password.skiff", metav1.GetOptions{}); err == nil {
			t.Errorf("agent %s was refused but its node password is registered", tc.node)
		}
		if _, err := cs.CoreV1().Nodes().Get(ctx, tc.node, metav1.GetOptions{}); err == nil {
			t.Errorf("agent %s was refused but has a Node", tc.node)
		}
	}
	log, _ := os.ReadFile(server.Log)
	for node, reason := range map[string]string{
		"wrong-secret": "the server token's secret is wrong", "deleted": "does not exist",
		"wrong-agent": "the agent token's secret is wrong",
		// The controller manager may have cleaned the expired token up.
		"expired": "(expired at|does not exist)",
		"taken-1": "already taken by another machine", "bare-1": "has no node password",
	} {
		if !regexp.MustCompile(`"refused a node's join request" logger="join" node="` + node + `" from="[^"]+" reason="[^"]*` + reason).Match(log) {
			t.Errorf("the server log has no refusal for %s saying %q", node, reason)
		}
	}

	// `skiff token rotate` takes effect at once: the running server refuses
	// the old token, and an agent with the new one joins.
	const rotated = "rotated-secret-0123456789"
	code, out = cluster.Run(ctx, nil, "token", "rotate", "--data-dir", server.DataDir, "--new-token", rotated)
	if code != 0 || !strings.Contains(out, hash+"::server:"+rotated) || !strings.Contains(out, "refuses the old one from now on") {
		t.Fatalf("skiff token rotate: exit %d: %s", code, out)
	}
	// Were it let in, the agent would run on: a minute is plenty for a
	// refusal, and killall clears what it would have set up.
	oldDir := t.TempDir()
	t.Cleanup(func() { cluster.Run(context.Background(), nil, "killall", "--data-dir", oldDir) })
	refusedCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	code, out = cluster.Run(refusedCtx, nil, "agent", "--server", url, "--token", good, "--node-name", "old-token", "--data-dir", oldDir)
	if code == 0 || !strings.Contains(out, refused) {
		t.Errorf("an agent with the token from before the rotation: exit %d, want %q:\n%s", code, refused, out)
	}
	if now, err := server.JoinToken(); now != hash+"::server:"+rotated {
		t.Fatalf("the server's token file after the rotation holds %q (%v)", now, err)
	}
	joinOnce(t, server, "new-token", hash+"::server:"+rotated)
	log, _ = os.ReadFile(server.Log)
	if !regexp.MustCompile(`"refused a node's join request" logger="join" node="old-token" from="[^"]+" reason="the server token's secret is wrong`).Match(log) {
		t.Error("the server log has no refusal of the token from before the rotation")
	}

	// A guesser is slowed down: after a few failures from one address,
	// every try is turned away at once, with the same one line.
	limited := 0
	for range 100 {
		status, body := post(t, server, map[string]any{"nodeName": "guesser", "password": strings.Repeat("p", 16), "token": "server:guess"})
		if strings.Contains(body, "\n") {
			t.Fatalf("a refusal of more than one line: %q", body)
		}
		switch status {
		case http.StatusUnauthorized:
			if body != refused+": copy the current one from the server's <data-dir>/server/token, or make one with `skiff token create`" {
				t.Fatalf("a wrong secret answered %q", body)
			}
		case http.StatusTooManyRequests:
			limited++
		default:
			t.Fatalf("a wrong secret answered %d %q", status, body)
		}
	}
	if limited < 80 {
		t.Errorf("%d of 100 wrong secrets in a row were turned away by the rate limit, want most", limited)
	}
	for _, secret := range []string{"not-the-secret", strings.TrimPrefix(cred, "server:"), strings.Split(kept, ".")[1], rotated} {
		if strings.Contains(string(log), secret) {
			t.Errorf("the server log holds a secret %q", secret)
		}
	}
}

// joinOnce starts an agent named node with token, waits until server has
// registered its node password, which a join does first, and stops it: its
// node is not needed.
func joinOnce(t *testing.T, server *cluster.Server, node, token string) {
	t.Helper()
	a, err := cluster.NewAgent(t.TempDir(), server, "--node-name", node)
	if err != nil {
		t.Fatal(err)
	}
	a.Token = token
	t.Cleanup(func() { a.Stop(); a.Teardown() })
	if err := a.StartProcess(); err != nil {
		t.Fatal(err)
	}
	cs := server.ClientT(t)
	if err := wait.PollUntilContextCancel(cluster.Context(t), 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Secrets("kube-system").Get(ctx, node+".node-password.skiff", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		t.Fatalf("agent %s never joined: %v\n%s", node, err, a.LogTail(20))
	}
	a.Stop()
	a.Teardown()
}
