// Package join is how a node joins a cluster: the join token, the endpoints
// the server serves on its API port (the CA bundle and the join request),
// and the agent's side of the exchange.
//
// A token reads K10<sha256 hex of the server's CA bundle>::<credential>.
// The credential is the server token's secret (server:<secret>), the agent
// token's (node:<secret>, k3s's split: it joins nodes and nothing more), or
// an extra token, kubeadm-style, <id>.<secret> with its own expiry, stored
// as a bootstrap token Secret in kube-system. An agent downloads the CA bundle,
// checks it against the hash before it trusts anything else, then sends the
// credential over TLS verified with that CA.
package join

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	tokenutil "k8s.io/cluster-bootstrap/token/util"
)

const (
	tokenPrefix  = "K10"
	serverPrefix = "server:"
	agentPrefix  = "node:"
)

// bootstrapRE is a kubeadm-style bootstrap token: <id>.<secret>.
var bootstrapRE = regexp.MustCompile(bootstrapapi.BootstrapTokenPattern)

// Token is a parsed join token.
type Token struct {
	// CAHash is the sha256 hex of the CA bundle, empty when the token
	// carries none (a bare secret): the agent then cannot verify the CA.
	CAHash string
	// Server is the server token's secret, for a server:<secret> token.
	Server string
	// Agent is the agent token's secret, for a node:<secret> token.
	Agent string
	// ID and Secret are set for an <id>.<secret> token.
	ID, Secret string
}

// ParseToken reads a token as given with --token. It accepts the full form
// and, for users who only copied the part after "::", a bare credential.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Token{}, fmt.Errorf("the token is empty: copy it from the server's <data-dir>/server/token or create one with `skiff token create`")
	}
	var t Token
	cred := s
	if strings.HasPrefix(s, tokenPrefix) {
		hash, rest, ok := strings.Cut(s[len(tokenPrefix):], "::")
		if !ok {
			return Token{}, fmt.Errorf("the token starts with K10 but has no \"::\": copy the whole line of the server's <data-dir>/server/token")
		}
		if len(hash) != 64 || !isHex(hash) {
			return Token{}, fmt.Errorf("the token's CA hash %q is not 64 hex digits: copy the whole token again", hash)
		}
		t.CAHash, cred = strings.ToLower(hash), rest
	}
	switch {
	case strings.HasPrefix(cred, serverPrefix):
		t.Server = cred[len(serverPrefix):]
		if t.Server == "" {
			return Token{}, fmt.Errorf("the token has an empty server secret: copy the whole token again")
		}
	case strings.HasPrefix(cred, agentPrefix):
		t.Agent = cred[len(agentPrefix):]
		if t.Agent == "" {
			return Token{}, fmt.Errorf("the token has an empty agent secret: copy the whole token again")
		}
	case bootstrapRE.MatchString(cred):
		m := bootstrapRE.FindStringSubmatch(cred)
		t.ID, t.Secret = m[1], m[2]
	case cred == "":
		return Token{}, fmt.Errorf("the token has nothing after \"::\": copy the whole token again")
	default:
		// A bare secret, as given to the server with --token.
		t.Server = cred
	}
	return t, nil
}

// Credential is the part after "::", which a node sends to the server.
func (t Token) Credential() string {
	if t.ID != "" {
		return t.ID + "." + t.Secret
	}
	if t.Agent != "" {
		return agentPrefix + t.Agent
	}
	return serverPrefix + t.Server
}

// String formats the token; the secret is in it.
func (t Token) String() string {
	if t.CAHash == "" {
		return t.Credential()
	}
	return tokenPrefix + t.CAHash + "::" + t.Credential()
}

// Redacted names the token without its secret, for logs and errors.
func (t Token) Redacted() string {
	if t.ID != "" {
		return "token " + t.ID
	}
	if t.Agent != "" {
		return "the agent token"
	}
	return "the server token"
}

// CAHash is the hash a token carries for a CA bundle.
func CAHash(bundle []byte) string {
	sum := sha256.Sum256(bundle)
	return hex.EncodeToString(sum[:])
}

// ReadServerToken reads the server token a server keeps in path, its
// <data-dir>/server/token. A file it cannot read gives the *fs.PathError;
// one that holds no server token, an error that says so.
func ReadServerToken(path string) (Token, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Token{}, err
	}
	t, err := ParseToken(string(data))
	if err == nil && t.Server == "" {
		err = errors.New("it is not the server's own")
	}
	if err != nil {
		return Token{}, fmt.Errorf("%s is not a server token: %w", path, err)
	}
	return t, nil
}

// NewServerSecret returns a random secret for the server token.
func NewServerSecret() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// NewBootstrap returns a random <id>, <secret> pair.
func NewBootstrap() (id, secret string, err error) {
	tok, err := tokenutil.GenerateBootstrapToken()
	if err != nil {
		return "", "", err
	}
	id, secret, _ = strings.Cut(tok, ".")
	return id, secret, nil
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}
