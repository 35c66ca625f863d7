// Package pki creates and renews the cluster's certificate authorities,
// certificates and keys.
//
// Certificates are signed with crypto/x509 directly: client-go's cert package
// only makes self-signed certificates, and the signing helpers that exist
// upstream live in kubeadm's internal packages.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/skiff-dev/skiff/internal/atomicfile"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
)

const (
	// CAValidity is how long a new CA is valid.
	CAValidity = 10 * 365 * 24 * time.Hour
	// CertValidity is how long a new leaf certificate is valid.
	CertValidity = 365 * 24 * time.Hour
	// RenewBefore: a leaf certificate that expires sooner than this is renewed.
	RenewBefore = 90 * 24 * time.Hour
	// APIServerName is the name agents verify the API server by, whatever
	// address they reach it at (through their local load balancer too):
	// only the API server's serving certificate carries it. Other
	// certificates of the server CA name their service, kubelets' come from
	// a CA of their own, and no node may take the name.
	APIServerName = "kubernetes"
)

// CA is a certificate authority with its key.
type CA struct {
	Cert     *x509.Certificate
	Key      crypto.Signer
	CertFile string
	KeyFile  string
}

// Usage says what a leaf certificate is for.
type Usage int

const (
	// Client certificates authenticate to a server.
	Client Usage = iota
	// Server certificates serve TLS.
	Server
	// ServerAndClient certificates serve TLS and authenticate to servers
	// too: etcd's, whose members are each other's clients.
	ServerAndClient
)

func (u Usage) extKeyUsage() []x509.ExtKeyUsage {
	switch u {
	case Server:
		return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	case ServerAndClient:
		return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	return []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
}

// Spec describes a leaf certificate.
type Spec struct {
	CommonName   string
	Organization []string
	DNSNames     []string
	IPs          []net.IP
	Usage        Usage
}

// LoadOrCreateCA loads the CA at <dir>/<name>.crt and .key, creating both when
// neither exists. A CA is never regenerated: every certificate and kubeconfig
// handed out depends on it.
func LoadOrCreateCA(dir, name, commonName string) (*CA, error) {
	ca := &CA{CertFile: filepath.Join(dir, name+".crt"), KeyFile: filepath.Join(dir, name+".key")}
	certPEM, cerr := os.ReadFile(ca.CertFile)
	keyPEM, kerr := os.ReadFile(ca.KeyFile)
	switch {
	case cerr == nil && kerr == nil:
		certs, err := certutil.ParseCertsPEM(certPEM)
		if err != nil {
			return nil, fmt.Errorf("CA certificate %s: %w", ca.CertFile, err)
		}
		key, err := parseSigner(keyPEM)
		if err != nil {
			return nil, fmt.Errorf("CA key %s: %w", ca.KeyFile, err)
		}
		ca.Cert, ca.Key = certs[0], key
		return ca, nil
	case errors.Is(cerr, os.ErrNotExist) && errors.Is(kerr, os.ErrNotExist):
	case errors.Is(cerr, os.ErrNotExist) && kerr == nil:
		// A crash between the key and the certificate: nothing was signed
		// yet (leaves come after both), so the CA is made from its key.
		key, err := parseSigner(keyPEM)
		if err != nil {
			return nil, fmt.Errorf("CA key %s: %w", ca.KeyFile, err)
		}
		return ca, ca.create(commonName, key)
	case cerr != nil && !errors.Is(cerr, os.ErrNotExist):
		return nil, cerr
	case kerr != nil && !errors.Is(kerr, os.ErrNotExist):
		return nil, kerr
	default:
		return nil, fmt.Errorf("CA %s: one of %s and %s is missing; restore it from a backup (a new CA would invalidate every kubeconfig and node)", name, ca.CertFile, ca.KeyFile)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	keyPEM, err = keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return nil, err
	}
	// Key first: a key without its certificate is the state a crash here
	// can leave, which the next start completes.
	if err := atomicfile.Write(ca.KeyFile, keyPEM, 0o600); err != nil {
		return nil, err
	}
	return ca, ca.create(commonName, key)
}

// create makes the CA's self-signed certificate for key and writes it.
func (ca *CA) create(commonName string, key crypto.Signer) error {
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: fmt.Sprintf("%s@%d", commonName, now.Unix())},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(ca.CertFile, EncodeCert(cert), 0o600); err != nil {
		return err
	}
	ca.Cert, ca.Key = cert, key
	return nil
}

// EnsureCert makes sure certFile and keyFile hold a certificate signed by ca
// that matches spec and is valid for more than RenewBefore; otherwise it
// issues a new one, keeping the existing key. It reports whether it wrote.
func (ca *CA) EnsureCert(certFile, keyFile string, spec Spec) (bool, error) {
	key, err := loadOrCreateKey(keyFile)
	if err != nil {
		return false, err
	}
	if data, err := os.ReadFile(certFile); err == nil {
		if certs, err := certutil.ParseCertsPEM(data); err == nil && ca.current(certs[0], key, spec, time.Now()) {
			return false, nil
		}
	}
	cert, err := ca.Sign(key.Public(), spec, CertValidity)
	if err != nil {
		return false, err
	}
	return true, atomicfile.Write(certFile, EncodeCert(cert), 0o600)
}

// current says whether cert can be kept: issued by ca for key, matching spec
// and not close to expiry.
func (ca *CA) current(cert *x509.Certificate, key crypto.Signer, spec Spec, now time.Time) bool {
	if cert.CheckSignatureFrom(ca.Cert) != nil {
		return false
	}
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return false
	}
	if now.Add(RenewBefore).After(cert.NotAfter) {
		return false
	}
	if cert.Subject.CommonName != spec.CommonName || !sameSet(cert.Subject.Organization, spec.Organization) {
		return false
	}
	if !slices.Equal(cert.ExtKeyUsage, spec.Usage.extKeyUsage()) {
		return false
	}
	if !sameSet(cert.DNSNames, dedup(spec.DNSNames)) {
		return false
	}
	var have, want []string
	for _, ip := range cert.IPAddresses {
		have = append(have, ip.String())
	}
	for _, ip := range spec.IPs {
		want = append(want, ip.String())
	}
	return sameSet(have, dedup(want))
}

// Sign issues a certificate for pub, valid for validity from now.
func (ca *CA) Sign(pub crypto.PublicKey, spec Spec, validity time.Duration) (*x509.Certificate, error) {
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: spec.CommonName, Organization: spec.Organization},
		DNSNames:     dedup(spec.DNSNames),
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
	}
	seen := map[string]bool{}
	for _, ip := range spec.IPs {
		if !seen[ip.String()] {
			seen[ip.String()] = true
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		}
	}
	tmpl.ExtKeyUsage = spec.Usage.extKeyUsage()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// EnsureServiceAccountKey creates the RSA key that signs service account
// tokens, unless it exists. RSA, not ECDSA: RS256 is what every token consumer
// understands.
func EnsureServiceAccountKey(path string) error {
	if _, err := os.Stat(path); err == nil {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if _, err := keyutil.ParsePrivateKeyPEM(data); err != nil {
			return fmt.Errorf("service account key %s: %w", path, err)
		}
		return nil
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	data, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}

func loadOrCreateKey(path string) (crypto.Signer, error) {
	if data, err := os.ReadFile(path); err == nil {
		return parseSigner(data)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	data, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return nil, err
	}
	return key, atomicfile.Write(path, data, 0o600)
}

func parseSigner(data []byte) (crypto.Signer, error) {
	key, err := keyutil.ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("not a signing key")
	}
	return signer, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}

func dedup(s []string) []string {
	var out []string
	for _, v := range s {
		if v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(dedup(a)), slices.Clone(dedup(b))
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// EncodeCert returns cert in PEM form.
func EncodeCert(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: certutil.CertificateBlockType, Bytes: cert.Raw})
}
