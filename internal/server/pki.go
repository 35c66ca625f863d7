package server

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/skiff-dev/skiff/internal/atomicfile"
	"github.com/skiff-dev/skiff/internal/controlplane"
	"github.com/skiff-dev/skiff/internal/join"
	"github.com/skiff-dev/skiff/internal/kubeconfig"
	"github.com/skiff-dev/skiff/internal/metricsserver"
	"github.com/skiff-dev/skiff/internal/pki"
	"k8s.io/klog/v2"
)

// clients are the control plane's client identities, signed by the client CA.
var clients = []struct {
	name string
	spec pki.Spec
}{
	{"admin", pki.Spec{CommonName: "system:admin", Organization: []string{"system:masters"}}},
	{"controller", pki.Spec{CommonName: "system:kube-controller-manager"}},
	{"scheduler", pki.Spec{CommonName: "system:kube-scheduler"}},
	// The resource metrics API: scrapes kubelets, delegates its own
	// authentication and authorization to the API server.
	{"metrics-server", pki.Spec{CommonName: MetricsServerUser}},
}

// MetricsServerUser is the metrics API's identity (manifests/metrics-server.yaml
// binds its roles).
const MetricsServerUser = "system:skiff:metrics-server"

// apiServerNames are the DNS names of the API server's serving certificate
// besides the host name: the kubernetes Service's, localhost and the
// --tls-san names. No node may take one (the host name is the server's own
// node's, which its node password guards).
func apiServerNames(domain string, sans []string) []string {
	names := []string{pki.APIServerName, "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc." + domain, "localhost"}
	for _, san := range sans {
		if net.ParseIP(san) == nil {
			names = append(names, strings.ToLower(san))
		}
	}
	return names
}

// authorities are the cluster's CAs.
type authorities struct {
	client, server, kubelet, requestHeader *pki.CA
	// etcd is the embedded etcd's CA; nil on kine.
	etcd *pki.CA
}

// servingNames are what the API server's serving certificate names besides
// the kubernetes Service's names.
type servingNames struct {
	hostname  string
	sans      []string
	ips       []net.IP
	serviceIP net.IP
}

// ensurePKI creates what is missing of the cluster's CAs, keys, certificates
// and kubeconfigs, and renews certificates that are close to expiry or whose
// names changed.
func ensurePKI(c *controlplane.Config, names servingNames) (*authorities, error) {
	f := c.Files
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return nil, err
	}
	if err := rotateIfAsked(c); err != nil {
		return nil, err
	}
	var cas authorities
	for _, ca := range []struct {
		to             **pki.CA
		name, fullName string
	}{
		{&cas.server, "server-ca", "skiff-server-ca"},
		{&cas.client, "client-ca", "skiff-client-ca"},
		{&cas.kubelet, "kubelet-ca", "skiff-kubelet-ca"},
		{&cas.requestHeader, "request-header-ca", "skiff-request-header-ca"},
	} {
		var err error
		if *ca.to, err = pki.LoadOrCreateCA(f.Dir, ca.name, ca.fullName); err != nil {
			return nil, err
		}
	}
	bundle := append(pki.EncodeCert(cas.kubelet.Cert), pki.EncodeCert(cas.server.Cert)...)
	if old, err := os.ReadFile(f.KubeletCABundle()); err != nil || !bytes.Equal(old, bundle) {
		if err := atomicfile.Write(f.KubeletCABundle(), bundle, 0o600); err != nil {
			return nil, err
		}
	}
	if err := pki.EnsureServiceAccountKey(f.ServiceAccountKey()); err != nil {
		return nil, err
	}
	if _, err := ensureLeaves(c, &cas, names); err != nil {
		return nil, err
	}
	return &cas, nil
}

// ensureLeaves issues the control plane's leaf certificates that are
// missing, close to expiry or whose names changed, with their kubeconfigs,
// and says whether it issued any. It runs at start and, while the server
// runs, from its certificate renewal: the API server and the clients
// reload the files by themselves.
func ensureLeaves(c *controlplane.Config, cas *authorities, names servingNames) (bool, error) {
	f := c.Files
	serverCA, clientCA, requestHeaderCA := cas.server, cas.client, cas.requestHeader
	hostname, sans, ips, serviceIP := names.hostname, names.sans, names.ips, names.serviceIP
	issued := false
	ensure := func(ca *pki.CA, cert, key string, spec pki.Spec) error {
		wrote, err := ca.EnsureCert(cert, key, spec)
		issued = issued || wrote
		return err
	}
	serving := pki.Spec{
		CommonName: "kube-apiserver",
		Usage:      pki.Server,
		DNSNames:   append(apiServerNames(c.ClusterDomain, sans), hostname),
		IPs:        append([]net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback, serviceIP}, ips...),
	}
	for _, san := range sans {
		if ip := net.ParseIP(san); ip != nil {
			serving.IPs = append(serving.IPs, ip)
		}
	}
	if err := ensure(serverCA, f.ServingCert(), f.ServingKey(), serving); err != nil {
		return issued, err
	}
	// The API server's client identity towards kubelets.
	if err := ensure(clientCA, f.APIServerClientCert(), f.APIServerClientKey(),
		pki.Spec{CommonName: "system:kube-apiserver", Organization: []string{"system:masters"}}); err != nil {
		return issued, err
	}
	if err := ensure(serverCA, f.MetricsServingCert(), f.MetricsServingKey(), pki.Spec{
		CommonName: metricsserver.ServiceName, Usage: pki.Server, DNSNames: metricsserver.DNSNames(c.ClusterDomain),
	}); err != nil {
		return issued, err
	}
	// The controller manager and the scheduler listen on loopback only.
	for _, l := range []struct{ name, cert, key string }{
		{"kube-controller-manager", f.ControllerManagerServingCert(), f.ControllerManagerServingKey()},
		{"kube-scheduler", f.SchedulerServingCert(), f.SchedulerServingKey()},
	} {
		if err := ensure(serverCA, l.cert, l.key, pki.Spec{CommonName: l.name, Usage: pki.Server,
			DNSNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}}); err != nil {
			return issued, err
		}
	}
	if err := ensure(requestHeaderCA, f.AuthProxyCert(), f.AuthProxyKey(),
		pki.Spec{CommonName: "system:auth-proxy"}); err != nil {
		return issued, err
	}
	url := "https://" + net.JoinHostPort(c.LoopbackAddress(), itoa(c.Port))
	for _, cl := range clients {
		if err := ensure(clientCA, f.ClientCert(cl.name), f.ClientKey(cl.name), cl.spec); err != nil {
			return issued, err
		}
		kc := kubeconfig.Files{Server: url, CAFile: f.ServerCA(), CertFile: f.ClientCert(cl.name), KeyFile: f.ClientKey(cl.name)}
		if err := kc.Write(f.Kubeconfig(cl.name)); err != nil {
			return issued, err
		}
	}
	return issued, nil
}

// writeAdminKubeconfig writes the self-contained admin kubeconfig for users.
func writeAdminKubeconfig(c *controlplane.Config, path string, mode os.FileMode) error {
	f := c.Files
	var e kubeconfig.Embedded
	var err error
	e.Server = "https://" + net.JoinHostPort("127.0.0.1", itoa(c.Port))
	if e.CA, err = os.ReadFile(f.ServerCA()); err != nil {
		return err
	}
	if e.Cert, err = os.ReadFile(f.ClientCert("admin")); err != nil {
		return err
	}
	if e.Key, err = os.ReadFile(f.ClientKey("admin")); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return e.Write(path, mode)
}

// tokenFile is where the server keeps its join token.
func tokenFile(c *controlplane.Config) string { return filepath.Join(c.DataDir, "server", "token") }

// serverSecret returns the secret of the server token: the one given with
// --token, else the one already written, else a new random one. A --token
// with a CA hash also returns that hash, checked once the CA is known.
func serverSecret(c *controlplane.Config, flag string) (secret, caHash string, err error) {
	if flag != "" {
		given, err := join.ParseToken(flag)
		if err != nil {
			return "", "", fmt.Errorf("--token: %w", err)
		}
		if given.ID != "" {
			return "", "", errors.New("--token: the server takes a secret of your choice, not an <id>.<secret> token (those come from `skiff token create`)")
		}
		if given.Agent != "" {
			return "", "", errors.New("--token: that is an agent token (node:...), which joins nodes only: a server needs the server token (<data-dir>/server/token of the first server)")
		}
		if len(given.Server) < 16 {
			// A cluster made before this rule keeps its secret.
			if _, err := os.Stat(tokenFile(c)); err != nil {
				return "", "", errors.New("--token: the secret is shorter than 16 characters, short enough to guess: give a longer one, or leave --token out for a random one")
			}
			klog.InfoS("WARNING: the server token's secret is shorter than 16 characters: choose a longer one (see `skiff token`)")
		}
		return given.Server, given.CAHash, nil
	}
	if data, err := os.ReadFile(tokenFile(c)); err == nil {
		if old, err := join.ParseToken(string(data)); err == nil && old.Server != "" {
			return old.Server, "", nil
		}
	}
	return join.NewServerSecret(), "", nil
}

// agentSecret is the agent token's secret: --agent-token's, else the one
// stored at the last start, else none (agents join with the server token).
func agentSecret(c *controlplane.Config, flag string) (string, error) {
	if flag == "" {
		if data, err := os.ReadFile(agentTokenFile(c)); err == nil {
			if old, err := join.ParseToken(string(data)); err == nil && old.Agent != "" {
				return old.Agent, nil
			}
		}
		return "", nil
	}
	given, err := join.ParseToken(flag)
	if err != nil {
		return "", fmt.Errorf("--agent-token: %w", err)
	}
	_, cred, found := strings.Cut(flag, "::")
	if !found {
		cred = flag
	}
	secret := given.Agent
	switch {
	case given.ID != "":
		return "", errors.New("--agent-token: give a secret of your choice, not an <id>.<secret> token (those come from `skiff token create`)")
	case strings.HasPrefix(strings.TrimSpace(cred), "server:"):
		return "", errors.New("--agent-token: that is a server token (server:...): give the agent token a secret of its own")
	case secret == "":
		secret = given.Server // a bare secret of the user's choice
	}
	if len(secret) < 16 {
		return "", errors.New("--agent-token: the secret is shorter than 16 characters, short enough to guess: give a longer one")
	}
	return secret, nil
}

// agentTokenFile holds the agent token, K10<CA hash>::node:<secret>.
func agentTokenFile(c *controlplane.Config) string {
	return filepath.Join(c.DataDir, "server", "agent-token")
}

// writeAgentToken writes the agent token beside the server token, or
// removes an old one when the server has none now.
func writeAgentToken(c *controlplane.Config, caHash, secret string) error {
	if secret == "" {
		if err := os.Remove(agentTokenFile(c)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	t := join.Token{CAHash: caHash, Agent: secret}
	return atomicfile.Write(agentTokenFile(c), []byte(t.String()+"\n"), 0o600)
}

// writeToken writes the server's join token, K10<CA hash>::server:<secret>.
func writeToken(c *controlplane.Config, secret, givenHash string) (join.Token, error) {
	ca, err := os.ReadFile(c.Files.ServerCA())
	if err != nil {
		return join.Token{}, err
	}
	t := join.Token{CAHash: join.CAHash(ca), Server: secret}
	if givenHash != "" && givenHash != t.CAHash {
		return join.Token{}, fmt.Errorf("--token: its CA hash is not this cluster's CA (%s...): give the secret alone, or the token of this cluster", t.CAHash[:12])
	}
	return t, atomicfile.Write(tokenFile(c), []byte(t.String()+"\n"), 0o600)
}

// RotateMarker asks the server's next start to issue every leaf
// certificate anew (`skiff certificate rotate`); the CAs stay.
func RotateMarker(dataDir string) string {
	return filepath.Join(dataDir, "server", "tls", "rotate-certificates")
}

// rotateIfAsked removes the leaf certificates when RotateMarker is there, so
// that this start issues them again (their keys stay), then the marker.
func rotateIfAsked(c *controlplane.Config) error {
	marker := RotateMarker(c.DataDir)
	if _, err := os.Stat(marker); err != nil {
		return nil
	}
	f := c.Files
	leaves := []string{f.ServingCert(), f.APIServerClientCert(), f.AuthProxyCert(), f.MetricsServingCert(),
		f.ControllerManagerServingCert(), f.SchedulerServingCert(),
		f.ETCDServerCert(), f.ETCDPeerCert(), f.ETCDClientCert(),
		filepath.Join(c.DataDir, "agent", "client-kubelet.crt"), filepath.Join(c.DataDir, "agent", "serving-kubelet.crt")}
	for _, cl := range clients {
		leaves = append(leaves, f.ClientCert(cl.name))
	}
	for _, l := range leaves {
		if err := os.Remove(l); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	klog.InfoS("issuing every certificate anew, as `skiff certificate rotate` asked", "dir", f.Dir)
	return os.Remove(marker)
}
