// Package ingress tests the node's Ingress and Gateway API proxy with real
// traffic: one `skiff server` node, Ingress ports on free ports so that it
// runs beside other clusters on the host.
package ingress

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiff-dev/skiff/tests/cluster"
)

var (
	srv                 *cluster.Server
	httpPort, httpsPort int
)

func TestMain(m *testing.M) {
	os.Exit(cluster.Main(m, "ingress", func(dir string) (*cluster.Server, error) {
		httpPort, httpsPort = cluster.FreePort(), cluster.FreePort()
		var err error
		srv, err = cluster.NewNode(dir, "--ingress-http-port", strconv.Itoa(httpPort), "--ingress-https-port", strconv.Itoa(httpsPort))
		return srv, err
	}))
}

// echo deploys replicas of the test tool's echo behind a Service of port 80.
func echo(t *testing.T, ns, name string, replicas int) {
	t.Helper()
	srv.EchoDeployment(t, ns, name, replicas, "  ports: [{port: 80, targetPort: 8080}]\n")
}

// client sends every request to the node's port, whatever the URL's host.
func client(port int, roots *x509.CertPool) *http.Client {
	return &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			},
		},
	}
}

type answer struct {
	code int
	body string
	path string
}

func fetch(c *http.Client, url string) (answer, error) {
	resp, err := c.Get(url)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{code: resp.StatusCode, body: string(b), path: resp.Header.Get("X-Path")}, err
}

// podOf is the pod name in an echo's answer ("host=NAME peer=...").
func podOf(a answer) string {
	name, _, _ := strings.Cut(strings.TrimPrefix(a.body, "host="), " ")
	return name
}

// waitAnswer polls url until ok holds for its answer.
func waitAnswer(t *testing.T, c *http.Client, url string, ok func(answer) bool) answer {
	t.Helper()
	var last answer
	var lastErr error
	cluster.WaitFor(t, "an answer from "+url, func(ctx context.Context) (bool, error) {
		last, lastErr = fetch(c, url)
		return lastErr == nil && ok(last), nil
	})
	return last
}

func is(code int, podPrefix string) func(answer) bool {
	return func(a answer) bool { return a.code == code && strings.HasPrefix(podOf(a), podPrefix) }
}

func TestIngress(t *testing.T) {
	ns := srv.Namespace(t)
	echo(t, ns, "alpha", 2)
	echo(t, ns, "beta", 1)
	cert, key, roots := certificate(t, "secure.test")
	if _, err := srv.ClientT(t).CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "secure"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Shaped as charts write them: no class, the default one serves it.
	srv.KubectlT(t, `
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  defaultBackend: {service: {name: alpha, port: {number: 80}}}
  tls: [{hosts: [secure.test], secretName: secure}]
  rules:
  - host: alpha.test
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: alpha, port: {number: 80}}}}]
  - host: beta.test
    http:
      paths: [{path: /b, pathType: Prefix, backend: {service: {name: beta, port: {number: 80}}}}]
  - host: secure.test
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: beta, port: {number: 80}}}}]
`, "apply", "-n", ns, "-f", "-")
	c := client(httpPort, nil)
	base := "http://%s/"
	cluster.Steps(t,
		cluster.Step{Name: "host and path routing", Run: func(t *testing.T) {
			waitAnswer(t, c, fmt.Sprintf(base, "alpha.test")+"x", is(200, "alpha-"))
			if a, err := fetch(c, fmt.Sprintf(base, "beta.test")+"b/c?d=1"); err != nil || !is(200, "beta-")(a) || a.path != "/b/c?d=1" {
				t.Fatalf("beta.test/b/c: %+v %v", a, err)
			}
			// The default backend takes the rest.
			if a, err := fetch(c, fmt.Sprintf(base, "beta.test")+"other"); err != nil || !is(200, "alpha-")(a) {
				t.Fatalf("beta.test/other: %+v %v", a, err)
			}
			if a, err := fetch(c, fmt.Sprintf(base, "unknown.test")); err != nil || !is(200, "alpha-")(a) {
				t.Fatalf("unknown.test: %+v %v", a, err)
			}
			// Both endpoints of alpha answer.
			pods := map[string]bool{}
			for range 40 {
				a, err := fetch(c, fmt.Sprintf(base, "alpha.test"))
				if err != nil {
					t.Fatal(err)
				}
				pods[podOf(a)] = true
			}
			if len(pods) != 2 {
				t.Errorf("requests reached pods %v, want both of alpha's", pods)
			}
		}},
		cluster.Step{Name: "status", Run: func(t *testing.T) {
			cluster.WaitFor(t, "the Ingress's status to list the node", func(ctx context.Context) (bool, error) {
				ing, err := srv.ClientT(t).NetworkingV1().Ingresses(ns).Get(ctx, "web", metav1.GetOptions{})
				return err == nil && len(ing.Status.LoadBalancer.Ingress) > 0 && ing.Status.LoadBalancer.Ingress[0].IP != "", nil
			})
		}},
		cluster.Step{Name: "TLS with the Secret's certificate", Run: func(t *testing.T) {
			tc := client(httpsPort, roots)
			waitAnswer(t, tc, "https://secure.test/", is(200, "beta-"))
		}},
		cluster.Step{Name: "the node's credentials read the served certificates only", Run: func(t *testing.T) {
			nodeOnly(t, ns)
			// TLS is still served, and a renewed certificate reaches the
			// node through the certificates Secret.
			cert, key, roots := certificate(t, "secure.test")
			if _, err := srv.ClientT(t).CoreV1().Secrets(ns).Update(context.Background(), &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: "secure"}, Type: corev1.SecretTypeTLS,
				Data: map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key},
			}, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			waitAnswer(t, client(httpsPort, roots), "https://secure.test/", is(200, "beta-"))
		}},
		cluster.Step{Name: "an update while a client loops", Run: func(t *testing.T) {
			var failed, done atomic.Int32
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				lc := client(httpPort, nil)
				for {
					select {
					case <-stop:
						return
					default:
					}
					a, err := fetch(lc, fmt.Sprintf(base, "alpha.test"))
					done.Add(1)
					if err != nil || a.code != 200 {
						failed.Add(1)
						t.Logf("during the update: %+v %v", a, err)
					}
				}
			})
			srv.KubectlT(t, "", "patch", "-n", ns, "ingress", "web", "--type=json", "-p", `[{"op": "add", "path": "/spec/rules/0/http/paths/-", "value": {"path": "/new", "pathType": "Prefix", "backend": {"service": {"name": "beta", "port": {"number": 80}}}}}]`)
			waitAnswer(t, c, fmt.Sprintf(base, "alpha.test")+"new", is(200, "beta-"))
			time.Sleep(time.Second)
			close(stop)
			wg.Wait()
			if failed.Load() > 0 || done.Load() == 0 {
				t.Fatalf("%d of %d requests failed during the update", failed.Load(), done.Load())
			}
		}},
		cluster.Step{Name: "a backend scaled to zero and back", Run: func(t *testing.T) {
			srv.KubectlT(t, "", "scale", "-n", ns, "deployment/beta", "--replicas=0")
			waitAnswer(t, c, fmt.Sprintf(base, "beta.test")+"b", func(a answer) bool { return a.code == http.StatusServiceUnavailable })
			srv.KubectlT(t, "", "scale", "-n", ns, "deployment/beta", "--replicas=1")
			waitAnswer(t, c, fmt.Sprintf(base, "beta.test")+"b", is(200, "beta-"))
		}},
		cluster.Step{Name: "an upgraded connection echoes", Run: func(t *testing.T) {
			conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort)))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprint(conn, "GET /ws HTTP/1.1\r\nHost: alpha.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade: %v %v", resp, err)
			}
			for _, msg := range []string{"ping", "pong and more"} {
				fmt.Fprint(conn, msg)
				buf := make([]byte, len(msg))
				if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
					t.Fatalf("echo of %q: %q %v", msg, buf, err)
				}
			}
		}},
	)
}

func TestHTTPRoute(t *testing.T) {
	ns := srv.Namespace(t)
	echo(t, ns, "gamma", 1)
	start := time.Now()
	srv.KubectlT(t, fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: skiff
  listeners: [{name: http, port: %d, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: route}
spec:
  parentRefs: [{name: gw}]
  hostnames: [route.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /app}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]
    backendRefs: [{name: gamma, port: 80}]
`, httpPort), "apply", "-n", ns, "-f", "-")
	c := client(httpPort, nil)
	a := waitAnswer(t, c, "http://route.test/app/x", is(200, "gamma-"))
	t.Logf("from creation to the first answer: %s", time.Since(start).Round(time.Millisecond))
	if a.path != "/x" {
		t.Errorf("rewritten path %q, want /x", a.path)
	}
	cluster.WaitFor(t, "the HTTPRoute accepted in its status", func(ctx context.Context) (bool, error) {
		out, err := srv.Kubectl(ctx, "", "get", "-n", ns, "httproute", "route", "-o", `jsonpath={.status.parents[0].conditions[?(@.type=="Accepted")].status}`)
		return err == nil && out == "True", nil
	})
	cluster.WaitFor(t, "the Gateway programmed", func(ctx context.Context) (bool, error) {
		out, err := srv.Kubectl(ctx, "", "get", "-n", ns, "gateway", "gw", "-o", `jsonpath={.status.conditions[?(@.type=="Programmed")].status}`)
		return err == nil && out == "True", nil
	})
}

// nodeOnly checks what the node's own credentials (its kubelet's
// kubeconfig) may read of the Secrets: the certificates Secret, with the
// key pair of ns/secure, and not a Secret of another namespace, the
// Secret of the key pair itself, or a list of every Secret.
func nodeOnly(t *testing.T, ns string) {
	ctx := context.Background()
	admin := srv.ClientT(t)
	other := "ingress-unrelated"
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: other}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.CoreV1().Namespaces().Delete(context.Background(), other, metav1.DeleteOptions{}) })
	cert, key, _ := certificate(t, "unrelated.test")
	for _, s := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "password"}, StringData: map[string]string{"password": "hunter2"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "unused-tls"}, Type: corev1.SecretTypeTLS, Data: map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key}},
	} {
		if _, err := admin.CoreV1().Secrets(other).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(srv.DataDir, "agent", "kubelet.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host, err = srvHost(); err != nil {
		t.Fatal(err)
	}
	node, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	refused := func(what string, err error) {
		t.Helper()
		if !apierrors.IsForbidden(err) {
			t.Errorf("the node's credentials %s: %v, want Forbidden", what, err)
		}
	}
	_, err = node.CoreV1().Secrets(other).Get(ctx, "password", metav1.GetOptions{})
	refused("get a Secret of another namespace", err)
	_, err = node.CoreV1().Secrets(other).Get(ctx, "unused-tls", metav1.GetOptions{})
	refused("get a TLS Secret no Ingress uses", err)
	_, err = node.CoreV1().Secrets(ns).Get(ctx, "secure", metav1.GetOptions{})
	refused("get the Ingress's own Secret", err)
	_, err = node.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
	refused("list every Secret", err)
	_, err = node.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
	refused("list the Secrets of kube-system", err)

	byName := metav1.ListOptions{FieldSelector: "metadata.name=skiff-ingress-certificates"}
	list, err := node.CoreV1().Secrets("kube-system").List(ctx, byName)
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("the node lists the certificates Secret by name: %v %v", list, err)
	}
	if w, err := node.CoreV1().Secrets("kube-system").Watch(ctx, byName); err != nil {
		t.Fatalf("the node watches the certificates Secret: %v", err)
	} else {
		w.Stop()
	}
	cluster.WaitFor(t, "the certificates Secret to hold "+ns+"/secure", func(ctx context.Context) (bool, error) {
		s, err := node.CoreV1().Secrets("kube-system").Get(ctx, "skiff-ingress-certificates", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return len(s.Data[ns+".secure.crt"]) > 0 && len(s.Data[ns+".secure.key"]) > 0, nil
	})
	s, err := node.CoreV1().Secrets("kube-system").Get(ctx, "skiff-ingress-certificates", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k := range s.Data {
		if strings.HasPrefix(k, other+".") {
			t.Errorf("the certificates Secret holds %s, which nothing serves", k)
		}
	}
}

// srvHost is the API server the admin kubeconfig names.
func srvHost() (string, error) {
	cfg, err := srv.Config()
	if err != nil {
		return "", err
	}
	return cfg.Host, nil
}

// certificate is a self-signed certificate for name (its own CA), PEM.
func certificate(t *testing.T, name string) (certPEM, keyPEM []byte, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	roots = x509.NewCertPool()
	roots.AddCert(leaf)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), roots
}
