package join

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/atomicfile"
	"github.com/skiff-dev/skiff/internal/kubeconfig"
	"github.com/skiff-dev/skiff/internal/pki"
)

// Files are where an agent keeps what joining gave it, in <data-dir>/agent.
type Files struct{ Dir string }

func (f Files) path(n string) string { return filepath.Join(f.Dir, n) }

// Paths of the agent's credentials and state.
func (f Files) Password() string    { return f.path("node-password") }
func (f Files) ServerCA() string    { return f.path("server-ca.crt") }
func (f Files) ClientCA() string    { return f.path("client-ca.crt") }
func (f Files) ClientCert() string  { return f.path("client-kubelet.crt") }
func (f Files) ClientKey() string   { return f.path("client-kubelet.key") }
func (f Files) ServingCert() string { return f.path("serving-kubelet.crt") }
func (f Files) ServingKey() string  { return f.path("serving-kubelet.key") }
func (f Files) Kubeconfig() string  { return f.path("kubelet.kubeconfig") }
func (f Files) Settings() string    { return f.path("cluster.json") }

// Agent is the joining side.
type Agent struct {
	Server    string // https://SERVER:6443
	Token     string // as given with --token; may be empty once joined
	NodeName  string
	Addresses []string
	Files     Files
	// InsecureSkipCAVerify lets a token without a CA hash (a bare secret)
	// trust whatever CA the server sends.
	InsecureSkipCAVerify bool
}

// ErrUnreachable wraps failures to reach the server at all.
var ErrUnreachable = errors.New("server unreachable")

// Join gets the node's certificates and the cluster's settings from the
// server and writes them. A node that joined before renews with its client
// certificate, so its token may have expired since. Nothing is written
// unless the server accepts the node.
func (a *Agent) Join(ctx context.Context) (Settings, error) {
	base, err := serverURL(a.Server)
	if err != nil {
		return Settings{}, err
	}
	var tok Token
	if a.Token != "" {
		if tok, err = ParseToken(a.Token); err != nil {
			return Settings{}, fmt.Errorf("--token: %w", err)
		}
	}
	ca, err := a.trustedCA(ctx, base, tok)
	if err != nil {
		return Settings{}, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return Settings{}, fmt.Errorf("the server at %s sent no CA certificate at %s", base, CACertsPath)
	}
	tlsCfg := &tls.Config{RootCAs: pool, ServerName: pki.APIServerName, MinVersion: tls.VersionTLS12}
	renewing := false
	if cert, err := tls.LoadX509KeyPair(a.Files.ClientCert(), a.Files.ClientKey()); err == nil && usable(cert, time.Now()) {
		tlsCfg.Certificates = []tls.Certificate{cert}
		renewing = true
	}
	if !renewing && a.Token == "" {
		return Settings{}, errors.New("skiff agent needs --token to join: take it from the server's <data-dir>/server/token, or create one there with `skiff token create`")
	}

	password, err := a.password()
	if err != nil {
		return Settings{}, err
	}
	clientKey, err := loadKey(a.Files.ClientKey())
	if err != nil {
		return Settings{}, err
	}
	servingKey, err := loadKey(a.Files.ServingKey())
	if err != nil {
		return Settings{}, err
	}
	var ips []net.IP
	for _, s := range a.Addresses {
		ips = append(ips, net.ParseIP(s))
	}
	clientCSR, err := certutil.MakeCSR(clientKey, &pkix.Name{CommonName: "system:node:" + a.NodeName, Organization: []string{"system:nodes"}}, nil, nil)
	if err != nil {
		return Settings{}, err
	}
	servingCSR, err := certutil.MakeCSR(servingKey, &pkix.Name{CommonName: a.NodeName}, []string{a.NodeName}, ips)
	if err != nil {
		return Settings{}, err
	}
	req := Request{
		NodeName: a.NodeName, Password: password, Addresses: a.Addresses,
		ClientCSR: string(clientCSR), ServingCSR: string(servingCSR),
	}
	// A renewal proves the node by its certificate: the token is not sent
	// again.
	if a.Token != "" && !renewing {
		req.Token = tok.Credential()
	}
	body, _ := json.Marshal(req)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	defer client.CloseIdleConnections()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, base+JoinPath, bytes.NewReader(body))
	if err != nil {
		return Settings{}, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hresp, err := client.Do(hreq)
	if err != nil {
		return Settings{}, fmt.Errorf("%w: cannot reach the server at %s (%v): check --server and that the server is running", ErrUnreachable, base, unwrapURL(err))
	}
	defer hresp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(hresp.Body, 1<<20))
	if hresp.StatusCode != http.StatusOK {
		return Settings{}, fmt.Errorf("the server refused to join node %s: %s", a.NodeName, strings.TrimSpace(string(data)))
	}
	var resp Response
	if err := json.Unmarshal(data, &resp); err != nil {
		return Settings{}, fmt.Errorf("the server's join answer is not valid: %v", err)
	}
	if err := a.write(&resp, ca, password, clientKey, servingKey); err != nil {
		return Settings{}, err
	}
	return resp.Settings, nil
}

// trustedCA returns the CA bundle to verify the server with. A first join
// downloads it without verification and checks it against the token's hash
// before anything else; later joins use the stored one.
func (a *Agent) trustedCA(ctx context.Context, base string, tok Token) ([]byte, error) {
	if ca, err := os.ReadFile(a.Files.ServerCA()); err == nil && tok.CAHash == "" {
		return ca, nil
	}
	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		// Not trusted yet: the hash check below is what trusts it.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+CACertsPath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot reach the server at %s (%v): check --server and that the server is running", ErrUnreachable, base, unwrapURL(err))
	}
	defer resp.Body.Close()
	ca, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s is not a skiff server (GET %s: %s): check --server", base, CACertsPath, resp.Status)
	}
	switch {
	case tok.CAHash != "":
		if got := CAHash(ca); got != tok.CAHash {
			return nil, fmt.Errorf("the server's CA (sha256 %s) does not match the token's hash %s: the token is for another cluster, or something between here and %s is not the server", got[:12], tok.CAHash[:12], base)
		}
	case len(ca) > 0 && !a.InsecureSkipCAVerify:
		return nil, fmt.Errorf("the token has no CA hash, so the server's CA cannot be verified: give the whole K10... token from the server's <data-dir>/server/token, or pass --insecure-skip-ca-verify to trust whatever answers at %s", base)
	case len(ca) > 0:
		klog.InfoS("WARNING: the token has no CA hash and --insecure-skip-ca-verify is set, so the server's CA was not verified: use the whole K10... token to avoid trusting an impostor", "server", base)
	}
	return ca, nil
}

// password returns the node's password, a new random one on first join.
func (a *Agent) password() (string, error) {
	data, err := os.ReadFile(a.Files.Password())
	if err == nil {
		return strings.TrimSpace(string(data)), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	return NewServerSecret(), nil
}

// write stores the join's result; the key files go first, so that a crash
// leaves either old certificates or a usable new set.
func (a *Agent) write(resp *Response, ca []byte, password string, clientKey, servingKey crypto.Signer) error {
	f := a.Files
	for _, k := range []struct {
		path string
		key  crypto.Signer
	}{{f.ClientKey(), clientKey}, {f.ServingKey(), servingKey}} {
		data, err := keyutil.MarshalPrivateKeyToPEM(k.key)
		if err != nil {
			return err
		}
		if err := atomicfile.Write(k.path, data, 0o600); err != nil {
			return err
		}
	}
	settings, _ := json.MarshalIndent(resp.Settings, "", "  ")
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{f.Password(), []byte(password + "\n"), 0o600},
		{f.ServerCA(), ca, 0o644},
		{f.ClientCA(), []byte(resp.ClientCA), 0o644},
		{f.ClientCert(), []byte(resp.ClientCert), 0o644},
		{f.ServingCert(), []byte(resp.ServingCert), 0o644},
		{f.Settings(), settings, 0o644},
	}
	for _, file := range files {
		if err := atomicfile.Write(file.path, file.data, file.mode); err != nil {
			return err
		}
	}
	return f.WriteKubeconfig(a.Server)
}

// WriteKubeconfig writes the node's kubeconfig for the API at server (the
// agent's load balancer), with the joined credentials.
func (f Files) WriteKubeconfig(server string) error {
	kc := kubeconfig.Files{Server: server, ServerName: pki.APIServerName, CAFile: f.ServerCA(), CertFile: f.ClientCert(), KeyFile: f.ClientKey()}
	return kc.Write(f.Kubeconfig())
}

// Stored returns the settings of the last join, for a node that starts while
// its server is down.
func (f Files) Stored() (Settings, error) {
	var s Settings
	data, err := os.ReadFile(f.Settings())
	if err != nil {
		return s, err
	}
	if _, err := os.Stat(f.Kubeconfig()); err != nil {
		return s, err
	}
	return s, json.Unmarshal(data, &s)
}

// NeedsRenewal says whether the node's certificates expire within
// pki.RenewBefore.
func (f Files) NeedsRenewal(now time.Time) bool {
	for _, p := range []struct{ cert, key string }{{f.ClientCert(), f.ClientKey()}, {f.ServingCert(), f.ServingKey()}} {
		cert, err := tls.LoadX509KeyPair(p.cert, p.key)
		if err != nil || now.Add(pki.RenewBefore).After(cert.Leaf.NotAfter) {
			return true
		}
	}
	return false
}

// usable says whether a client certificate can still authenticate.
func usable(cert tls.Certificate, now time.Time) bool {
	return cert.Leaf != nil && now.Before(cert.Leaf.NotAfter)
}

// loadKey loads a key file, or makes a new key (written only on success).
func loadKey(path string) (crypto.Signer, error) {
	if data, err := os.ReadFile(path); err == nil {
		key, err := keyutil.ParsePrivateKeyPEM(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if s, ok := key.(crypto.Signer); ok {
			return s, nil
		}
		return nil, fmt.Errorf("%s is not a signing key", path)
	}
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// serverURL checks --server and returns it without a trailing slash.
func serverURL(s string) (string, error) {
	if s == "" {
		return "", errors.New("skiff agent needs --server https://SERVER:6443")
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return "", fmt.Errorf("--server %q is not a URL such as https://SERVER:6443", s)
	}
	return "https://" + u.Host, nil
}

// unwrapURL drops net/http's "Get URL:" prefix, which repeats the URL.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
