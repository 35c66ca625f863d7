package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/skiff-dev/skiff/internal/atomicfile"
	"github.com/skiff-dev/skiff/internal/pki"
	"github.com/skiff-dev/skiff/tests/cluster"
)

// TestRunningServerRenewsItsCertificates: a server renews its certificates
// that are close to expiry while it runs, with no restart and no moment
// when the API cannot be reached: the API server serves the new serving
// certificate, the admin kubeconfig it wrote carries the new client
// certificate, and the controllers go on working. Here the certificates
// are re-signed to expire in a minute, and the server checks every second
// instead of twice a day.
func TestRunningServerRenewsItsCertificates(t *testing.T) {
	s := cluster.StartT(t, "--certificate-check-interval", "1s")
	tlsDir := filepath.Join(s.DataDir, "server", "tls")
	ca, err := os.ReadFile(filepath.Join(tlsDir, "server-ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)

	// A new connection every 50 ms, verified as a client verifies the
	// server, for as long as the renewal takes.
	var probes, failures atomic.Int32
	var lastFailure atomic.Value
	stop := make(chan struct{})
	probed := make(chan struct{})
	go func() {
		defer close(probed)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			probes.Add(1)
			if err := readyz(s.Port, roots); err != nil {
				failures.Add(1)
				lastFailure.Store(err.Error())
			}
		}
	}()

	for _, c := range []struct{ ca, file string }{
		{"server-ca", "serving-kube-apiserver.crt"}, {"client-ca", "client-admin.crt"}, {"client-ca", "client-controller.crt"},
	} {
		reissue(t, tlsDir, c.ca, c.file, time.Minute)
	}
	year := time.Now().Add(300 * 24 * time.Hour)
	cluster.WaitFor(t, "the certificates renewed and served", func(ctx context.Context) (bool, error) {
		for _, f := range []string{"serving-kube-apiserver.crt", "client-admin.crt", "client-controller.crt"} {
			if certOf(t, s, f).NotAfter.Before(year) {
				return false, nil
			}
		}
		served, err := servedCert(s.Port)
		if err != nil || !served.Equal(certOf(t, s, "serving-kube-apiserver.crt")) {
			return false, nil
		}
		cfg, err := clientcmd.LoadFromFile(s.Kubeconfig)
		if err != nil {
			return false, nil
		}
		for _, u := range cfg.AuthInfos {
			c, err := parseCert(u.ClientCertificateData)
			if err != nil || !c.Equal(certOf(t, s, "client-admin.crt")) {
				return false, nil
			}
		}
		return true, nil
	})
	// And a while after, as clients reconnect.
	cluster.WaitFor(t, "20 connections to the API", func(context.Context) (bool, error) { return probes.Load() >= 20, nil })
	close(stop)
	<-probed
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d connections to the API failed during the renewal, the last: %v", n, probes.Load(), lastFailure.Load())
	} else {
		t.Logf("%d connections to the API during the renewal, none failed", probes.Load())
	}
	if log, _ := os.ReadFile(s.Log); !strings.Contains(string(log), "renewed the server's certificates") {
		t.Error(`the log does not say "renewed the server's certificates"`)
	}

	// The renewed admin kubeconfig works, and the controller manager still
	// acts: a Deployment gets its ReplicaSet.
	ctx := cluster.Context(t)
	ns := s.Namespace(t)
	s.KubectlT(t, "", "get", "namespace", ns)
	cs := s.ClientT(t)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "after-renewal"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "r"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "r"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: cluster.BusyboxImage}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cluster.WaitFor(t, "the Deployment's ReplicaSet", func(ctx context.Context) (bool, error) {
		l, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(l.Items) == 1, nil
	})
}

// reissue signs the certificate in file again with the CA named ca,
// keeping its key and names, valid for validity from now (negative: it
// expired already).
func reissue(t *testing.T, dir, ca, file string, validity time.Duration) {
	t.Helper()
	authority, err := pki.LoadOrCreateCA(dir, ca, "unused: the CA exists")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	old, err := parseCert(data)
	if err != nil {
		t.Fatal(err)
	}
	spec := pki.Spec{CommonName: old.Subject.CommonName, Organization: old.Subject.Organization, DNSNames: old.DNSNames, IPs: old.IPAddresses}
	for _, u := range old.ExtKeyUsage {
		if u == x509.ExtKeyUsageServerAuth {
			spec.Usage = pki.Server
		}
	}
	c, err := authority.Sign(old.PublicKey, spec, validity)
	if err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.Write(filepath.Join(dir, file), pki.EncodeCert(c), 0o600); err != nil {
		t.Fatal(err)
	}
}

// readyz asks the API server on port for /readyz on a new connection,
// verifying its certificate with roots, as a client would.
func readyz(port int, roots *x509.CertPool) error {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "kubernetes"}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get(fmt.Sprintf("https://127.0.0.1:%d/readyz", port))
	if err != nil {
		return err
	}
	resp.Body.Close()
	// Anonymous: a 401 or 403 still proves the TLS handshake.
	return nil
}

// servedCert is the certificate the API server on port serves.
func servedCert(port int) (*x509.Certificate, error) {
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

func parseCert(data []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("no PEM")
	}
	return x509.ParseCertificate(b.Bytes)
}
