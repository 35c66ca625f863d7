package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/certificate/csr"
	"k8s.io/client-go/util/keyutil"

	"github.com/skiff-dev/skiff/internal/kubeconfig"
	"github.com/skiff-dev/skiff/internal/pki"
)

// Paths fills in where a standalone agent keeps its credentials.
func (c *Config) Paths() {
	dir := filepath.Join(c.DataDir, "agent")
	c.Kubeconfig = filepath.Join(dir, "kubelet.kubeconfig")
	c.ClientCA = filepath.Join(dir, "client-ca.crt")
	c.ServingCert = filepath.Join(dir, "serving-kubelet.crt")
	c.ServingKey = filepath.Join(dir, "serving-kubelet.key")
}

// CredentialsFromKubeconfig gets the kubelet's credentials for a standalone
// agent from the cluster, using a user's kubeconfig that may create and
// approve certificate signing requests: a client certificate for
// system:node:<name> and a serving certificate for the node's names, both
// signed by the cluster's signers, and the cluster's client CA. Credentials
// that are still valid are kept.
func CredentialsFromKubeconfig(ctx context.Context, c Config, server, userKubeconfig string) error {
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: userKubeconfig}
	overrides := &clientcmd.ConfigOverrides{}
	if server != "" {
		overrides.ClusterInfo.Server = server
	}
	restCfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return fmt.Errorf("--kubeconfig %s: %w", userKubeconfig, err)
	}
	if restCfg.Host == "" {
		return errors.New("no server: give --server https://SERVER:6443")
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	auth, err := client.CoreV1().ConfigMaps("kube-system").Get(ctx, "extension-apiserver-authentication", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("cannot reach the server at %s with --kubeconfig %s: %w", restCfg.Host, userKubeconfig, err)
	}
	if err := pki.WriteFileMode(c.ClientCA, []byte(auth.Data["client-ca-file"]), 0o644); err != nil {
		return err
	}

	dir := filepath.Dir(c.Kubeconfig)
	clientCert, clientKey := filepath.Join(dir, "client-kubelet.crt"), filepath.Join(dir, "client-kubelet.key")
	if !usable(clientCert) {
		subject := &pkix.Name{CommonName: "system:node:" + c.NodeName, Organization: []string{"system:nodes"}}
		if err := requestCert(ctx, client, certificatesv1.KubeAPIServerClientKubeletSignerName, subject, nil, nil,
			[]certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}, clientCert, clientKey); err != nil {
			return fmt.Errorf("kubelet client certificate: %w", err)
		}
	}
	if !usable(c.ServingCert) {
		ips := []net.IP{net.ParseIP("127.0.0.1")}
		if ip := net.ParseIP(c.NodeIP); ip != nil {
			ips = append(ips, ip)
		}
		subject := &pkix.Name{CommonName: "system:node:" + c.NodeName, Organization: []string{"system:nodes"}}
		if err := requestCert(ctx, client, certificatesv1.KubeletServingSignerName, subject, []string{c.NodeName}, ips,
			[]certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth}, c.ServingCert, c.ServingKey); err != nil {
			return fmt.Errorf("kubelet serving certificate: %w", err)
		}
	}
	caFile := filepath.Join(dir, "server-ca.crt")
	if err := writeServerCA(restCfg, caFile); err != nil {
		return err
	}
	kc := kubeconfig.Files{Server: restCfg.Host, CAFile: caFile, CertFile: clientCert, KeyFile: clientKey}
	return kc.Write(c.Kubeconfig)
}

// usable says whether a certificate file exists and is valid for a while yet.
func usable(path string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	certs, err := certutil.ParseCertsPEM(data)
	return err == nil && time.Until(certs[0].NotAfter) > pki.RenewBefore/3
}

// requestCert creates a key, asks the cluster to sign a certificate for it,
// approves the request, and writes both files.
func requestCert(ctx context.Context, client kubernetes.Interface, signer string, subject *pkix.Name, dns []string, ips []net.IP, usages []certificatesv1.KeyUsage, certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := certutil.MakeCSR(key, subject, dns, ips)
	if err != nil {
		return err
	}
	name, uid, err := csr.RequestCertificateWithContext(ctx, client, der, "", signer, nil, usages, key)
	if err != nil {
		return err
	}
	req, err := client.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	req.Status.Conditions = append(req.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type: certificatesv1.CertificateApproved, Status: "True", Reason: "SkiffAgent", Message: "approved by skiff agent",
	})
	if _, err := client.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, name, req, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("approving %s (the kubeconfig must allow it): %w", name, err)
	}
	certPEM, err := csr.WaitForCertificate(ctx, client, name, uid)
	if err != nil {
		return err
	}
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return err
	}
	if err := pki.WriteFile(keyFile, keyPEM); err != nil {
		return err
	}
	return pki.WriteFile(certFile, certPEM)
}

func writeServerCA(cfg *rest.Config, path string) error {
	data := cfg.CAData
	if len(data) == 0 && cfg.CAFile != "" {
		var err error
		if data, err = os.ReadFile(cfg.CAFile); err != nil {
			return err
		}
	}
	if len(data) == 0 {
		return errors.New("the kubeconfig has no certificate authority for the server: skiff agent verifies the server")
	}
	return pki.WriteFileMode(path, data, 0o644)
}
