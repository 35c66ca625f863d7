package join

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/pki"
)

// The endpoints, served on the API port. The API server authenticates the
// request first: a node renewing its certificates presents its client
// certificate; a new node comes as anonymous (both paths are open to
// anonymous requests, and nothing else is), with its join token in the body
// where the handler checks it itself. A rejected bearer token would make the
// API server answer 401 before the handler could say which part was wrong.
const (
	CACertsPath = "/v1-skiff/cacerts"
	JoinPath    = "/v1-skiff/join"
)

// Settings are the cluster's settings that a node must share with the server.
type Settings struct {
	ClusterCIDR   string `json:"clusterCIDR"`
	ServiceCIDR   string `json:"serviceCIDR"`
	ClusterDNS    string `json:"clusterDNS"`
	ClusterDomain string `json:"clusterDomain"`
	// DisableLocalStorage: the server was started with --disable
	// local-storage, so nodes run no provisioner.
	DisableLocalStorage bool `json:"disableLocalStorage,omitempty"`
	// DisableIngress: the server was started with --disable ingress, so
	// nodes serve no Ingress or Gateway.
	DisableIngress bool `json:"disableIngress,omitempty"`
	// DisableNetworkPolicy: the server was started with
	// --disable-network-policy, so no node enforces NetworkPolicies.
	DisableNetworkPolicy bool `json:"disableNetworkPolicy,omitempty"`
	// GatewayAddressPool: the server's --gateway-address-pool, from which
	// every node assigns Gateways the same addresses.
	GatewayAddressPool string `json:"gatewayAddressPool,omitempty"`
}

// Request is what a node sends to join, or to renew its certificates.
type Request struct {
	Token      string   `json:"token,omitempty"` // the credential after "::"; empty when renewing with the client certificate
	NodeName   string   `json:"nodeName"`
	Password   string   `json:"password"`
	Addresses  []string `json:"addresses"`  // the node's IPs, for the serving certificate
	ClientCSR  string   `json:"clientCSR"`  // PEM
	ServingCSR string   `json:"servingCSR"` // PEM
}

// Response carries the node's certificates and the cluster's settings.
type Response struct {
	ClientCert  string   `json:"clientCert"`  // system:node:<name>, group system:nodes
	ServingCert string   `json:"servingCert"` // the kubelet's serving certificate
	ServerCA    string   `json:"serverCA"`    // verifies the API server
	ClientCA    string   `json:"clientCA"`    // verifies clients of the kubelet
	Settings    Settings `json:"settings"`
}

// Handler serves the join endpoints.
type Handler struct {
	// TokenFile holds the server token. Each join reads its secret there,
	// so that `skiff token rotate` refuses the old secret at once, not
	// from the server's next start.
	TokenFile string
	// AgentSecret is the agent token's secret, empty when the server has
	// none.
	AgentSecret string
	// ServerCAFile and ServerCA: the bundle agents download and check
	// against their token's hash, and trust for the API server; the client
	// CA signs kubelet client certificates, the kubelet CA (and nothing
	// else) their serving certificates.
	ServerCAFile                  string
	ServerCA, ClientCA, KubeletCA *pki.CA
	Settings                      Settings
	// ReservedNames are the DNS names of the API server's certificate: no
	// node may be named so.
	ReservedNames []string
	// Client reaches the cluster as admin (node passwords, join tokens).
	Client func() (kubernetes.Interface, error)

	mu sync.Mutex // one join at a time: joins are rare, and it keeps the password check race-free
	// failures limits failed joins per source address.
	failures failureLimiter
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case CACertsPath:
		if r.Method != http.MethodGet {
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		http.ServeFile(w, r, h.ServerCAFile)
	case JoinPath:
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		h.join(w, r)
	default:
		http.NotFound(w, r)
	}
}

// refusal is an error the node is told, with its HTTP status; reason, when
// set, is what the server logs instead (a token's real fault, which the
// node is not told).
type refusal struct {
	status int
	msg    string
	reason string
}

func (e *refusal) Error() string { return e.msg }

func refuse(status int, format string, args ...any) error {
	return &refusal{status: status, msg: fmt.Sprintf(format, args...)}
}

// tokenRefused is the one answer to a join whose token is wrong, expired or
// deleted: which it was would tell a guesser what to try next.
const tokenRefused = "the join token was refused: it is wrong, expired or deleted (the server's log says which): copy the current one from the server's <data-dir>/server/token, or make one with `skiff token create`"

func refuseToken(err error) error {
	return &refusal{status: http.StatusUnauthorized, msg: tokenRefused, reason: err.Error()}
}

func (h *Handler) join(w http.ResponseWriter, r *http.Request) {
	var req Request
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		http.Error(w, "the join request is not valid JSON", http.StatusBadRequest)
		return
	}
	source, _, _ := net.SplitHostPort(r.RemoteAddr)
	if !h.failures.allowed(source) {
		klog.InfoS("refused a node's join request", "node", req.NodeName, "from", r.RemoteAddr, "reason", "too many failed joins from this address")
		http.Error(w, "too many failed joins from "+source+": wait a minute, and check the token", http.StatusTooManyRequests)
		return
	}
	h.mu.Lock()
	resp, err := h.serve(r.Context(), r, &req)
	h.mu.Unlock()
	if err != nil {
		var ref *refusal
		if !errors.As(err, &ref) {
			ref = &refusal{status: http.StatusInternalServerError, msg: "the server could not complete the join: " + err.Error()}
		}
		reason := ref.msg
		if ref.reason != "" {
			reason = ref.reason
		}
		if ref.status == http.StatusUnauthorized || ref.status == http.StatusForbidden {
			h.failures.failed(source)
		}
		klog.InfoS("refused a node's join request", "node", req.NodeName, "from", r.RemoteAddr, "reason", reason)
		http.Error(w, ref.msg, ref.status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

func (h *Handler) serve(ctx context.Context, r *http.Request, req *Request) (*Response, error) {
	if errs := validation.IsDNS1123Subdomain(req.NodeName); len(errs) > 0 {
		return nil, refuse(http.StatusBadRequest, "node name %q is not valid (%s): pick another with --node-name", req.NodeName, strings.Join(errs, "; "))
	}
	if slices.Contains(h.ReservedNames, strings.ToLower(req.NodeName)) {
		return nil, refuse(http.StatusBadRequest, "node name %q is a name of the API server's certificate: pick another with --node-name", req.NodeName)
	}
	if len(req.Password) < 16 {
		return nil, refuse(http.StatusBadRequest, "the node password is missing or too short")
	}
	client, err := h.Client()
	if err != nil {
		return nil, err
	}
	// Who is asking: the node itself, renewing with its certificate, or a
	// holder of a join token.
	how := "certificate"
	if u, ok := request.UserFrom(ctx); !ok || u.GetName() != "system:node:"+req.NodeName {
		if req.Token == "" {
			return nil, refuse(http.StatusUnauthorized, "no join token: give the agent --token")
		}
		t, err := ParseToken(req.Token)
		if err != nil {
			return nil, refuseToken(err)
		}
		how = t.Redacted()
		switch {
		case t.ID != "":
			if err := checkToken(ctx, client, t, time.Now()); err != nil {
				var ref *refusal
				if errors.As(err, &ref) {
					return nil, refuseToken(errors.New(ref.msg))
				}
				return nil, err
			}
		case t.Agent != "":
			if h.AgentSecret == "" {
				return nil, refuseToken(errors.New("an agent token, and the server has none (--agent-token)"))
			}
			if subtle.ConstantTimeCompare([]byte(t.Agent), []byte(h.AgentSecret)) != 1 {
				return nil, refuseToken(errors.New("the agent token's secret is wrong"))
			}
		default:
			secret, err := h.serverSecret()
			if err != nil {
				return nil, &refusal{status: http.StatusInternalServerError, msg: "the server could not check the join token: its log says why", reason: err.Error()}
			}
			if subtle.ConstantTimeCompare([]byte(t.Server), []byte(secret)) != 1 {
				return nil, refuseToken(errors.New("the server token's secret is wrong"))
			}
		}
	}
	if err := h.checkPassword(ctx, client, req.NodeName, req.Password, how == "certificate"); err != nil {
		return nil, err
	}

	var ips []net.IP
	for _, a := range req.Addresses {
		ip := net.ParseIP(a)
		if ip == nil {
			return nil, refuse(http.StatusBadRequest, "node address %q is not an IP", a)
		}
		if ip.IsLoopback() {
			continue // every host's: no node may serve as it
		}
		ips = append(ips, ip)
	}
	clientPub, err := csrKey(req.ClientCSR)
	if err != nil {
		return nil, refuse(http.StatusBadRequest, "client certificate request: %v", err)
	}
	servingPub, err := csrKey(req.ServingCSR)
	if err != nil {
		return nil, refuse(http.StatusBadRequest, "serving certificate request: %v", err)
	}
	clientCert, err := h.ClientCA.Sign(clientPub, pki.Spec{
		CommonName: "system:node:" + req.NodeName, Organization: []string{"system:nodes"},
	}, pki.CertValidity)
	if err != nil {
		return nil, err
	}
	// The node's name and addresses only: no loopback name, which any
	// node could then serve as.
	servingCert, err := h.KubeletCA.Sign(servingPub, pki.Spec{
		CommonName: req.NodeName, Usage: pki.Server, DNSNames: []string{req.NodeName}, IPs: ips,
	}, pki.CertValidity)
	if err != nil {
		return nil, err
	}
	klog.InfoS("node joined", "node", req.NodeName, "from", r.RemoteAddr, "with", how)
	return &Response{
		ClientCert:  string(pki.EncodeCert(clientCert)),
		ServingCert: string(pki.EncodeCert(servingCert)),
		ServerCA:    string(pki.EncodeCert(h.ServerCA.Cert)),
		ClientCA:    string(pki.EncodeCert(h.ClientCA.Cert)),
		Settings:    h.Settings,
	}, nil
}

// serverSecret is the secret of the server token in TokenFile now.
func (h *Handler) serverSecret() (string, error) {
	t, err := ReadServerToken(h.TokenFile)
	if err != nil {
		return "", fmt.Errorf("the server token: %w (restart the server to write it again)", err)
	}
	return t.Server, nil
}

// PasswordSecret is the Secret in kube-system that binds a node name to the
// machine that registered it first.
func PasswordSecret(node string) string { return node + ".node-password.skiff" }

const passwordKey = "hash"

// checkPassword binds a node name to the first password it is used with, and
// refuses any other. The password is random and long, so a plain sha256
// suffices to keep it out of the datastore. A name without a binding may be
// taken only by a token holder (renewing needs the binding: a deleted
// node's certificate renews no more) and only while no Node has it.
func (h *Handler) checkPassword(ctx context.Context, client kubernetes.Interface, node, password string, renewing bool) error {
	s, err := client.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, PasswordSecret(node), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if renewing {
			return refuse(http.StatusForbidden, "node %s has no node password on the server any more (its Node was deleted): join again with a token", node)
		}
		if _, err := client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err == nil {
			return refuse(http.StatusForbidden, "node name %s belongs to a node that has no node password (a server's own, or one from before passwords): pick another --node-name, or delete that Node first (`skiff kubectl delete node %s`) if this machine replaces it", node, node)
		} else if !apierrors.IsNotFound(err) {
			return err
		}
		return bindPassword(ctx, client, node, password, false)
	}
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(s.Data[passwordKey], []byte(hashPassword(password))) != 1 {
		return refuse(http.StatusForbidden,
			"node name %s is already taken by another machine (its node password differs): pick another --node-name, or if this machine replaces it, run on the server `skiff kubectl delete node %s; skiff kubectl -n kube-system delete secret %s`",
			node, node, PasswordSecret(node))
	}
	return nil
}

func hashPassword(password string) string {
	sum := sha256.Sum256([]byte(password))
	return hex.EncodeToString(sum[:])
}

// bindPassword stores node's password Secret; replace overwrites another.
func bindPassword(ctx context.Context, client kubernetes.Interface, node, password string, replace bool) error {
	secrets := client.CoreV1().Secrets(metav1.NamespaceSystem)
	want := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: PasswordSecret(node), Namespace: metav1.NamespaceSystem,
			Labels: map[string]string{"skiff.dev/node-password": "true"}},
		Type: "skiff.dev/node-password",
		Data: map[string][]byte{passwordKey: []byte(hashPassword(password))},
	}
	_, err := secrets.Create(ctx, want, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) && replace {
		have, err := secrets.Get(ctx, want.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if string(have.Data[passwordKey]) == string(want.Data[passwordKey]) {
			return nil
		}
		klog.InfoS("the server's node name was bound to another machine's password; the server takes it back", "node", node)
		have.Data = want.Data
		_, err = secrets.Update(ctx, have, metav1.UpdateOptions{})
		return err
	}
	return err
}

// csrKey checks a PEM certificate request's signature and returns its key.
func csrKey(p string) (any, error) {
	block, _ := pem.Decode([]byte(p))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("not a PEM certificate request")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, err
	}
	return csr.PublicKey, nil
}
