package pki

import (
	"crypto"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skiff-dev/skiff/internal/atomicfile"
	certutil "k8s.io/client-go/util/cert"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := certutil.ParseCertsPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

func TestCAIsCreatedOnceAndReused(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreateCA(dir, "server-ca", "test-ca")
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.IsCA {
		t.Fatal("not a CA")
	}
	for _, f := range []string{ca.CertFile, ca.KeyFile} {
		info, err := os.Stat(f)
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v; want 0600", f, err, info.Mode())
		}
	}
	again, err := LoadOrCreateCA(dir, "server-ca", "test-ca")
	if err != nil {
		t.Fatal(err)
	}
	if !again.Cert.Equal(ca.Cert) {
		t.Fatal("CA was regenerated on reload")
	}
}

func TestCAWithMissingKeyIsRefused(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreateCA(dir, "client-ca", "test-ca")
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(ca.KeyFile)
	if _, err := LoadOrCreateCA(dir, "client-ca", "test-ca"); err == nil {
		t.Fatal("a CA certificate without its key must not be replaced silently")
	}
}

func TestServingCertSANs(t *testing.T) {
	dir := t.TempDir()
	ca, _ := LoadOrCreateCA(dir, "server-ca", "test-ca")
	spec := Spec{
		CommonName: "kube-apiserver",
		Usage:      Server,
		DNSNames:   []string{"kubernetes", "kubernetes.default.svc.cluster.local", "node1", "node1"},
		IPs:        []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.43.0.1"), net.ParseIP("192.0.2.7")},
	}
	certFile, keyFile := filepath.Join(dir, "serving.crt"), filepath.Join(dir, "serving.key")
	wrote, err := ca.EnsureCert(certFile, keyFile, spec)
	if err != nil || !wrote {
		t.Fatalf("first EnsureCert: wrote=%v err=%v", wrote, err)
	}
	cert := readCert(t, certFile)
	for _, name := range []string{"kubernetes", "kubernetes.default.svc.cluster.local", "node1"} {
		if err := cert.VerifyHostname(name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, ip := range []string{"127.0.0.1", "10.43.0.1", "192.0.2.7"} {
		if err := cert.VerifyHostname(ip); err != nil {
			t.Errorf("%s: %v", ip, err)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("does not chain to the CA as a server cert: %v", err)
	}
	if d := time.Until(cert.NotAfter); d < CertValidity-2*time.Hour {
		t.Fatalf("valid for %s, want about %s", d, CertValidity)
	}

	// Same spec: reused untouched.
	if wrote, err := ca.EnsureCert(certFile, keyFile, spec); err != nil || wrote {
		t.Fatalf("unchanged spec: wrote=%v err=%v, want reuse", wrote, err)
	}
	// A new SAN: reissued, with the same key.
	keyBefore, _ := os.ReadFile(keyFile)
	spec.DNSNames = append(spec.DNSNames, "pi.local")
	if wrote, err := ca.EnsureCert(certFile, keyFile, spec); err != nil || !wrote {
		t.Fatalf("new SAN: wrote=%v err=%v, want reissue", wrote, err)
	}
	if err := readCert(t, certFile).VerifyHostname("pi.local"); err != nil {
		t.Fatal(err)
	}
	if keyAfter, _ := os.ReadFile(keyFile); string(keyAfter) != string(keyBefore) {
		t.Fatal("key changed on reissue")
	}
}

func TestCertCloseToExpiryIsRenewed(t *testing.T) {
	dir := t.TempDir()
	ca, _ := LoadOrCreateCA(dir, "client-ca", "test-ca")
	spec := Spec{CommonName: "system:admin", Organization: []string{"system:masters"}}
	certFile, keyFile := filepath.Join(dir, "admin.crt"), filepath.Join(dir, "admin.key")
	if _, err := ca.EnsureCert(certFile, keyFile, spec); err != nil {
		t.Fatal(err)
	}
	key, err := loadOrCreateKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	// Replace it with one that expires in 30 days.
	short, err := ca.Sign(key.Public(), spec, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.Write(certFile, EncodeCert(short), 0o600); err != nil {
		t.Fatal(err)
	}
	if wrote, err := ca.EnsureCert(certFile, keyFile, spec); err != nil || !wrote {
		t.Fatalf("expiring cert: wrote=%v err=%v, want renewal", wrote, err)
	}
	if d := time.Until(readCert(t, certFile).NotAfter); d < RenewBefore {
		t.Fatalf("renewed cert expires in %s", d)
	}
	cert := readCert(t, certFile)
	if cert.Subject.CommonName != "system:admin" || cert.Subject.Organization[0] != "system:masters" {
		t.Fatalf("subject %v", cert.Subject)
	}
}

func TestCertFromAnotherCAIsReplaced(t *testing.T) {
	dir := t.TempDir()
	a, _ := LoadOrCreateCA(filepath.Join(dir, "a"), "ca", "a")
	b, _ := LoadOrCreateCA(filepath.Join(dir, "b"), "ca", "b")
	spec := Spec{CommonName: "x"}
	certFile, keyFile := filepath.Join(dir, "x.crt"), filepath.Join(dir, "x.key")
	a.EnsureCert(certFile, keyFile, spec)
	if wrote, _ := b.EnsureCert(certFile, keyFile, spec); !wrote {
		t.Fatal("a certificate signed by another CA was kept")
	}
	if err := readCert(t, certFile).CheckSignatureFrom(b.Cert); err != nil {
		t.Fatal(err)
	}
}

// A crash between the CA's key and its certificate leaves the key alone:
// the next start makes the certificate for that key instead of refusing.
func TestCAKeyWithoutCertIsCompleted(t *testing.T) {
	dir := t.TempDir()
	first, err := LoadOrCreateCA(dir, "ca", "test-ca")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(first.CertFile); err != nil {
		t.Fatal(err)
	}
	again, err := LoadOrCreateCA(dir, "ca", "test-ca")
	if err != nil {
		t.Fatalf("a CA key without its certificate: %v", err)
	}
	if !again.Cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(first.Key.Public()) {
		t.Error("the completed CA has another key")
	}
	if err := os.Remove(again.KeyFile); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateCA(dir, "ca", "test-ca"); err == nil || !strings.Contains(err.Error(), "restore it from a backup") {
		t.Errorf("a CA certificate without its key: %v, want a refusal", err)
	}
}

func TestCertWithAnotherUsageIsReissued(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreateCA(dir, "etcd-ca", "test-etcd-ca")
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "peer.crt"), filepath.Join(dir, "peer.key")
	spec := Spec{CommonName: "peer", Usage: Client}
	if _, err := ca.EnsureCert(cert, key, spec); err != nil {
		t.Fatal(err)
	}
	spec.Usage = ServerAndClient
	wrote, err := ca.EnsureCert(cert, key, spec)
	if err != nil || !wrote {
		t.Fatalf("EnsureCert with a new usage: wrote %v, %v; want a new certificate", wrote, err)
	}
	got := readCert(t, cert).ExtKeyUsage
	if len(got) != 2 || got[0] != x509.ExtKeyUsageServerAuth || got[1] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("usages %v, want server and client auth", got)
	}
	if wrote, err := ca.EnsureCert(cert, key, spec); err != nil || wrote {
		t.Fatalf("EnsureCert again: wrote %v, %v; want the certificate kept", wrote, err)
	}
}
