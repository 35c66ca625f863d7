package join

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	tokenutil "k8s.io/cluster-bootstrap/token/util"
	bootstrapsecrets "k8s.io/cluster-bootstrap/util/secrets"
)

// Extra join tokens are kubeadm-style bootstrap token Secrets in
// kube-system: the controller manager's token cleaner deletes them once they
// expire, and kubeadm users know them already. Skiff marks its own with a
// usage of its own, so a token made for other purposes can't join a node.
const usageJoin = bootstrapapi.BootstrapTokenUsagePrefix + "skiff-join"

// TokenInfo describes an extra join token, without its secret.
type TokenInfo struct {
	ID          string
	Description string
	Expires     time.Time // zero: never
	Created     time.Time
}

// CreateToken stores a new join token that expires after ttl (0: never) and
// returns it with the CA hash.
func CreateToken(ctx context.Context, client kubernetes.Interface, caHash string, ttl time.Duration, description string) (Token, error) {
	id, secret, err := NewBootstrap()
	if err != nil {
		return Token{}, err
	}
	data := map[string]string{
		bootstrapapi.BootstrapTokenIDKey:     id,
		bootstrapapi.BootstrapTokenSecretKey: secret,
		usageJoin:                            "true",
	}
	if description != "" {
		data[bootstrapapi.BootstrapTokenDescriptionKey] = description
	}
	if ttl > 0 {
		data[bootstrapapi.BootstrapTokenExpirationKey] = time.Now().Add(ttl).UTC().Format(time.RFC3339)
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: tokenutil.BootstrapTokenSecretName(id), Namespace: metav1.NamespaceSystem},
		Type:       bootstrapapi.SecretTypeBootstrapToken,
		StringData: data,
	}
	if _, err := client.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		return Token{}, err
	}
	return Token{CAHash: caHash, ID: id, Secret: secret}, nil
}

// ListTokens lists the extra join tokens, oldest first.
func ListTokens(ctx context.Context, client kubernetes.Interface) ([]TokenInfo, error) {
	list, err := client.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("type", string(bootstrapapi.SecretTypeBootstrapToken)).String(),
	})
	if err != nil {
		return nil, err
	}
	var out []TokenInfo
	for i := range list.Items {
		s := &list.Items[i]
		id, ok := bootstrapsecrets.ParseName(s.Name)
		if !ok || bootstrapsecrets.GetData(s, usageJoin) != "true" {
			continue
		}
		info := TokenInfo{ID: id, Description: bootstrapsecrets.GetData(s, bootstrapapi.BootstrapTokenDescriptionKey), Created: s.CreationTimestamp.Time}
		if exp := bootstrapsecrets.GetData(s, bootstrapapi.BootstrapTokenExpirationKey); exp != "" {
			info.Expires, _ = time.Parse(time.RFC3339, exp)
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// DeleteToken deletes the join token with the given ID (or whole token).
func DeleteToken(ctx context.Context, client kubernetes.Interface, idOrToken string) error {
	id := idOrToken
	if t, err := ParseToken(idOrToken); err == nil && t.ID != "" {
		id = t.ID
	}
	if !tokenutil.IsValidBootstrapTokenID(id) {
		return fmt.Errorf("%q is not a token ID (6 characters a-z, 0-9, as `skiff token list` shows)", idOrToken)
	}
	err := client.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, tokenutil.BootstrapTokenSecretName(id), metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("no token %s: `skiff token list` shows the tokens", id)
	}
	return err
}

// checkToken checks an <id>.<secret> credential against its Secret. The
// error says which part failed and never holds the secret.
func checkToken(ctx context.Context, client kubernetes.Interface, t Token, now time.Time) error {
	s, err := client.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, tokenutil.BootstrapTokenSecretName(t.ID), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return refuse(http.StatusUnauthorized, "token %s does not exist (deleted, or expired and cleaned up)", t.ID)
	}
	if err != nil {
		return err
	}
	if s.Type != bootstrapapi.SecretTypeBootstrapToken || bootstrapsecrets.GetData(s, usageJoin) != "true" {
		return refuse(http.StatusUnauthorized, "token %s is not a join token", t.ID)
	}
	if subtle.ConstantTimeCompare([]byte(bootstrapsecrets.GetData(s, bootstrapapi.BootstrapTokenSecretKey)), []byte(t.Secret)) != 1 {
		return refuse(http.StatusUnauthorized, "token %s has the wrong secret", t.ID)
	}
	if bootstrapsecrets.HasExpired(s, now) {
		return refuse(http.StatusUnauthorized, "token %s expired at %s", t.ID,
			bootstrapsecrets.GetData(s, bootstrapapi.BootstrapTokenExpirationKey))
	}
	return nil
}
