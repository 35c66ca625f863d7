package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/skiff-dev/skiff/tests/cluster"
)

func TestRestartKeepsStateAndCA(t *testing.T) {
	ctx := cluster.Context(t)
	s := cluster.StartT(t)
	cs, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	cm, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "kept"}, Data: map[string]string{"k": "v"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A new database: /readyz waited for the bootstrap policy, and the
	// server recorded that it is in place.
	if checks := readyzChecks(t, cs); !strings.Contains(checks, "[+]poststarthook/skiff/bootstrap-policy ok") || strings.Contains(checks, "rbac/bootstrap-roles") {
		t.Errorf("the first start's /readyz: want skiff's bootstrap policy hook in place of upstream's:\n%s", checks)
	}
	if _, err := os.Stat(filepath.Join(s.DataDir, "server", "bootstrap-policy")); err != nil {
		t.Errorf("ready, but the bootstrap policy is not recorded as in place: %v", err)
	}
	// A second server on the same data dir, on another port, is refused
	// before it writes anything, and names the first, which goes on.
	second := cluster.New(s.Dir)
	second.Port = cluster.FreePort()
	second.Kubeconfig = filepath.Join(t.TempDir(), "kubeconfig.yaml")
	code, out := cluster.Run(ctx, nil, second.Args()...)
	want := fmt.Sprintf("skiff: data dir %s is in use by skiff (pid %d): stop it first", s.DataDir, s.Pid())
	if code == 0 || !strings.Contains(out, want) {
		t.Errorf("a second server on the running server's data dir: exit %d, want an error %q; got:\n%s", code, want, out)
	}
	if _, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "kept", metav1.GetOptions{}); err != nil {
		t.Errorf("the first server, after a second was refused its data dir: %v", err)
	}
	// A bootstrap role deleted while the server runs is back after a
	// restart, though /readyz no longer waits for the policy that an
	// earlier start put in place.
	if err := cs.RbacV1().ClusterRoles().Delete(ctx, "system:heapster", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("SIGTERM: server did not exit cleanly: %v", err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cluster.WaitFor(t, "the deleted bootstrap role back after the restart", func(ctx context.Context) (bool, error) {
		_, err := cs.RbacV1().ClusterRoles().Get(ctx, "system:heapster", metav1.GetOptions{})
		return err == nil, nil
	})
	// The client built before the restart, from the old kubeconfig, still
	// works: same CA, same admin certificate.
	got, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "kept", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("old kubeconfig after restart: %v", err)
	}
	if got.Data["k"] != "v" || got.ResourceVersion != cm.ResourceVersion {
		t.Fatalf("after restart: %+v, want the same object at resourceVersion %s", got, cm.ResourceVersion)
	}
	next, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rv(t, next.ResourceVersion) <= rv(t, cm.ResourceVersion) {
		t.Fatalf("resourceVersion went back: %s after %s", next.ResourceVersion, cm.ResourceVersion)
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "kube-node-lease", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}

	// skiff certificate check lists them; rotate issues the server's
	// certificates anew at the next start, under the same CAs.
	code, out = cluster.Run(ctx, nil, "certificate", "check", "--data-dir", s.DataDir)
	if code != 0 || !regexp.MustCompile(`(?m)^server/tls/server-ca\.crt\s+skiff-server-ca@\d+ \[CA\]\s+skiff-server-ca@\d+\s+\S+Z\s+3649d$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^server/tls/serving-kube-apiserver\.crt\s+kube-apiserver\s+skiff-server-ca@\d+\s+\S+Z\s+36[45]d$`).MatchString(out) {
		t.Errorf("skiff certificate check: exit %d:\n%s", code, out)
	}
	// Every serving certificate is the server CA's, none made at start.
	servings := []string{"serving-kube-apiserver.crt", "serving-kube-controller-manager.crt", "serving-kube-scheduler.crt", "serving-metrics-server.crt"}
	servingBefore, caBefore := map[string]*x509.Certificate{}, certOf(t, s, "server-ca.crt")
	for _, name := range servings {
		servingBefore[name] = certOf(t, s, name)
		if err := servingBefore[name].CheckSignatureFrom(caBefore); err != nil {
			t.Errorf("%s: not signed by the server CA: %v", name, err)
		}
	}
	// The controller manager and the scheduler serve theirs, not a pair
	// they made at start.
	served := servedOnLoopback(t, s)
	for _, name := range []string{"kube-controller-manager", "kube-scheduler"} {
		if c := served[name]; c == nil || c.CheckSignatureFrom(caBefore) != nil {
			t.Errorf("%s does not serve its certificate from the server CA (served on loopback: %v)", name, slices.Collect(maps.Keys(served)))
		}
	}
	if code, out := cluster.Run(ctx, nil, "certificate", "rotate", "--data-dir", s.DataDir); code != 0 || !strings.Contains(out, "at its next start") {
		t.Fatalf("skiff certificate rotate: exit %d: %s", code, out)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range servings {
		if certOf(t, s, name).SerialNumber.Cmp(servingBefore[name].SerialNumber) == 0 {
			t.Errorf("%s was not issued anew after skiff certificate rotate", name)
		}
	}
	if caAfter := certOf(t, s, "server-ca.crt"); !caAfter.Equal(caBefore) {
		t.Error("skiff certificate rotate changed the CA")
	}
	if _, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "kept", metav1.GetOptions{}); err != nil {
		t.Errorf("the kubeconfig from before the rotation: %v", err)
	}
}

// readyzChecks is the API server's /readyz?verbose.
func readyzChecks(t *testing.T, cs *kubernetes.Clientset) string {
	t.Helper()
	out, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").Param("verbose", "").DoRaw(context.Background())
	if err != nil {
		t.Fatalf("/readyz?verbose: %v: %s", err, out)
	}
	return string(out)
}

// servedOnLoopback is the certificate each of s's loopback listeners that
// its log names serves, by common name; listeners of earlier runs are gone.
func servedOnLoopback(t *testing.T, s *cluster.Server) map[string]*x509.Certificate {
	t.Helper()
	log, err := os.ReadFile(s.Log)
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]*x509.Certificate{}
	for _, m := range regexp.MustCompile(`Serving securely on (127\.0\.0\.1:\d+)`).FindAllStringSubmatch(string(log), -1) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", m[1], &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			continue
		}
		c := conn.ConnectionState().PeerCertificates[0]
		conn.Close()
		served[c.Subject.CommonName] = c
	}
	return served
}

func certOf(t *testing.T, s *cluster.Server, name string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(s.DataDir, "server", "tls", name))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s holds no PEM", name)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func rv(t *testing.T, s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q: %v", s, err)
	}
	return n
}

func TestKillDuringWritesLosesNoAcknowledgedCreate(t *testing.T) {
	ctx := cluster.Context(t)
	s := cluster.StartT(t)
	cs, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	const total = 200
	var mu sync.Mutex
	var acked []string
	names := make(chan string)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range names {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := cs.CoreV1().ConfigMaps("default").Create(cctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
				cancel()
				if err == nil {
					mu.Lock()
					acked = append(acked, name)
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < total; i++ {
		if i == total/2 {
			// Mid-way: kill the server while the workers keep writing.
			go s.Kill()
		}
		names <- fmt.Sprintf("cm-%03d", i)
	}
	close(names)
	wg.Wait()
	s.Kill()
	if len(acked) == 0 || len(acked) == total {
		t.Fatalf("%d of %d creates succeeded; the kill should have come mid-way", len(acked), total)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	list, err := cs.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, cm := range list.Items {
		have[cm.Name] = true
	}
	for _, name := range acked {
		if !have[name] {
			t.Errorf("ConfigMap %s was acknowledged before the kill but is gone after restart", name)
		}
	}
	t.Logf("%d creates acknowledged before the kill, all present after restart", len(acked))
}
