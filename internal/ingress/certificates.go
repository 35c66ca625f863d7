package ingress

// The certificates Secret: the key pairs of the Secrets the model serves,
// gathered into one Secret of kube-system so that a node's credentials
// read that one Secret and no other.
//
// The status writer (a server's node, with admin credentials, while it
// holds StatusLease) builds the model from the cluster's real TLS Secrets
// and writes the key pairs of the certificates the table serves, that is
// of the Ingress tls entries and Gateway certificateRefs the model
// accepted (our classes only, ReferenceGrants honoured, valid key pairs
// only). Every node builds its table from this Secret alone.
//
// Layout: two data keys per Secret, "<namespace>.<name>.crt" and
// "<namespace>.<name>.key". A namespace has no dot, so the first dot ends
// it. One key per file, rather than one document, lets a change be a
// merge patch of the keys that changed (a new certificate, a renewed one,
// null for one no longer referenced): the request stays the size of what
// changed, and no read-modify-write of the whole set is needed. Each
// node's watch still receives the whole Secret at every change, as for
// any object; a Secret holds at most 1 MiB, some two hundred key pairs.

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// CertificatesSecret is the Secret of CertificatesNamespace that holds
// the key pairs every node serves; nodes may read it and no other Secret.
const (
	CertificatesSecret    = "skiff-ingress-certificates"
	CertificatesNamespace = metav1.NamespaceSystem
)

const (
	certSuffix = ".crt"
	keySuffix  = ".key"
)

// certificateKey is the data key prefix of a Secret's key pair.
func certificateKey(k types.NamespacedName) string { return k.Namespace + "." + k.Name }

// ServedSecrets are the Secrets whose certificates the table offers,
// sorted.
func ServedSecrets(t *Table) []types.NamespacedName {
	set := map[types.NamespacedName]bool{}
	if t != nil {
		for _, l := range t.Listeners {
			for _, c := range l.Certificates {
				if c.Secret.Name != "" {
					set[c.Secret] = true
				}
			}
		}
	}
	return slices.SortedFunc(maps.Keys(set), func(a, b types.NamespacedName) int { return strings.Compare(a.String(), b.String()) })
}

// CertificatesData is the certificates Secret's data for the table built
// from secrets: the tls.crt and tls.key of each Secret the table serves.
func CertificatesData(t *Table, secrets []*corev1.Secret) map[string][]byte {
	byName := map[types.NamespacedName]*corev1.Secret{}
	for _, s := range secrets {
		byName[nsName(s)] = s
	}
	data := map[string][]byte{}
	for _, k := range ServedSecrets(t) {
		s := byName[k]
		if s == nil {
			continue
		}
		p := certificateKey(k)
		if len(p)+len(certSuffix) > validation.DNS1123SubdomainMaxLength {
			// A data key has at most 253 characters.
			klog.ErrorS(nil, "ingress: a Secret's namespace and name are too long to be served by the nodes", "secret", k)
			continue
		}
		data[p+certSuffix] = s.Data[corev1.TLSCertKey]
		data[p+keySuffix] = s.Data[corev1.TLSPrivateKeyKey]
	}
	return data
}

// SecretsFromCertificates turns the certificates Secret (nil: none yet)
// back into the kubernetes.io/tls Secrets the model reads, with their own
// namespaces and names.
func SecretsFromCertificates(agg *corev1.Secret) []*corev1.Secret {
	if agg == nil {
		return nil
	}
	var out []*corev1.Secret
	for _, k := range slices.Sorted(maps.Keys(agg.Data)) {
		p, ok := strings.CutSuffix(k, certSuffix)
		if !ok {
			continue
		}
		ns, name, ok := strings.Cut(p, ".")
		key, hasKey := agg.Data[p+keySuffix]
		if !ok || ns == "" || name == "" || !hasKey {
			continue
		}
		out = append(out, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{corev1.TLSCertKey: agg.Data[k], corev1.TLSPrivateKeyKey: key},
		})
	}
	return out
}

// certificatesPatch is the JSON merge patch that turns have's data into
// want, or nil when they are the same.
func certificatesPatch(have, want map[string][]byte) []byte {
	changes := map[string]any{}
	for k, v := range want {
		if old, ok := have[k]; !ok || string(old) != string(v) {
			changes[k] = v
		}
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			changes[k] = nil
		}
	}
	if len(changes) == 0 {
		return nil
	}
	b, _ := json.Marshal(map[string]any{"data": changes})
	return b
}

// writeCertificates makes the certificates Secret hold want; have is the
// Secret as the node last saw it (nil: none). Nothing is written when the
// content is the same.
func writeCertificates(ctx context.Context, client kubernetes.Interface, have *corev1.Secret, want map[string][]byte) error {
	secrets := client.CoreV1().Secrets(CertificatesNamespace)
	if have == nil {
		_, err := secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: CertificatesSecret, Namespace: CertificatesNamespace,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "skiff"}},
			Type: corev1.SecretTypeOpaque,
			Data: want,
		}, metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) {
			return err
		}
		// Created meanwhile (another writer, or a cache behind): patch all.
		have = &corev1.Secret{}
	}
	patch := certificatesPatch(have.Data, want)
	if patch == nil {
		return nil
	}
	_, err := secrets.Patch(ctx, CertificatesSecret, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}
