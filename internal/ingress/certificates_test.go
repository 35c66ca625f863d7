package ingress

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// certsInput has Secrets referenced in every way the model accepts or
// refuses, and one referenced by nothing.
func certsInput() *Input {
	withTLS := func(secrets ...string) ingOpt {
		return func(ing *networkingv1.Ingress) {
			for _, s := range secrets {
				ing.Spec.TLS = append(ing.Spec.TLS, networkingv1.IngressTLS{Hosts: []string{s + ".test"}, SecretName: s})
			}
		}
	}
	otherClass := func(ing *networkingv1.Ingress) { ing.Spec.IngressClassName = ptr.To("other") }
	crossRef := func(l gatewayv1.Listener, ns string) gatewayv1.Listener {
		l.TLS.CertificateRefs[0].Namespace = ptr.To(gatewayv1.Namespace(ns))
		return l
	}
	broken := tlsSecret("web", "broken")
	broken.Data = map[string][]byte{corev1.TLSCertKey: []byte("not a certificate"), corev1.TLSPrivateKeyKey: []byte("nor a key")}
	in := &Input{
		IngressClasses: []*networkingv1.IngressClass{ourIngressClass(true)},
		Ingresses: []*networkingv1.Ingress{
			ingress("web", "site", 0, ingRule("site.test", ingPath(networkingv1.PathTypePrefix, "/", "app")), withTLS("site", "broken", "missing")),
			ingress("web", "theirs", 0, ingRule("theirs.test", ingPath(networkingv1.PathTypePrefix, "/", "app")), withTLS("theirs"), otherClass),
		},
		GatewayClasses: []*gatewayv1.GatewayClass{ourClass()},
		Gateways: []*gatewayv1.Gateway{gateway("infra", "gw", 0,
			httpsListener("own", 8443, "own.test", "own"),
			crossRef(httpsListener("granted", 8443, "granted.test", "granted"), "certs"),
			crossRef(httpsListener("refused", 8443, "refused.test", "refused"), "private"),
		)},
		ReferenceGrants: []*gatewayv1beta1.ReferenceGrant{{
			ObjectMeta: meta("certs", "gateways", 0),
			Spec: gatewayv1beta1.ReferenceGrantSpec{
				From: []gatewayv1beta1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "Gateway", Namespace: "infra"}},
				To:   []gatewayv1beta1.ReferenceGrantTo{{Group: "", Kind: "Secret"}},
			},
		}},
		Services: []*corev1.Service{service("web", "app", 80)},
	}
	for _, k := range [][2]string{{"web", "site"}, {"web", "theirs"}, {"web", "unused"}, {"infra", "own"}, {"certs", "granted"}, {"private", "refused"}, {"kube-system", "admin"}} {
		in.Secrets = append(in.Secrets, tlsSecret(k[0], k[1]))
	}
	in.Secrets = append(in.Secrets, broken)
	return in
}

var certsConfig = Config{HTTPPort: 80, HTTPSPort: 443}

func TestCertificatesHoldOnlyServedSecrets(t *testing.T) {
	in := certsInput()
	res := Build(certsConfig, in)
	data := CertificatesData(res.Table, in.Secrets)
	want := []string{
		"certs.granted.crt", "certs.granted.key", // granted by the ReferenceGrant
		"infra.own.crt", "infra.own.key",
		"web.site.crt", "web.site.key",
	}
	if got := slices.Sorted(maps.Keys(data)); !slices.Equal(got, want) {
		t.Fatalf("keys %v, want %v", got, want)
	}
	cert := testCert()
	if string(data["web.site.crt"]) != string(cert[corev1.TLSCertKey]) || string(data["web.site.key"]) != string(cert[corev1.TLSPrivateKeyKey]) {
		t.Error("web.site: not the Secret's key pair")
	}

	// A node builds the same table from the certificates Secret alone.
	agg := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: CertificatesNamespace, Name: CertificatesSecret}, Data: data}
	secrets := SecretsFromCertificates(agg)
	var names []string
	for _, s := range secrets {
		if s.Type != corev1.SecretTypeTLS {
			t.Errorf("%s/%s: type %q", s.Namespace, s.Name, s.Type)
		}
		names = append(names, s.Namespace+"/"+s.Name)
	}
	if want := []string{"certs/granted", "infra/own", "web/site"}; !slices.Equal(names, want) {
		t.Fatalf("secrets %v, want %v", names, want)
	}
	node := *in
	node.Secrets = secrets
	if got, want := Build(certsConfig, &node).Table.String(), res.Table.String(); got != want {
		t.Errorf("table from the certificates Secret:\n%s\nfrom the Secrets:\n%s", got, want)
	}
	if got := ServedSecrets(Build(certsConfig, &node).Table); len(got) != 3 {
		t.Errorf("served from the certificates Secret: %v", got)
	}

	// Without the grant the cross-namespace certificate is left out.
	in.ReferenceGrants = nil
	data = CertificatesData(Build(certsConfig, in).Table, in.Secrets)
	if _, ok := data["certs.granted.crt"]; ok {
		t.Error("a certificate without its ReferenceGrant is in the certificates Secret")
	}

	// Keys that are not a pair, or have no namespace, are ignored.
	odd := &corev1.Secret{Data: map[string][]byte{"web.lonely.crt": nil, "nodot.crt": nil, "nodot.key": nil, "other": nil}}
	if got := SecretsFromCertificates(odd); len(got) != 0 {
		t.Errorf("secrets from odd keys: %v", got)
	}
	if SecretsFromCertificates(nil) != nil {
		t.Error("no certificates Secret gives Secrets")
	}
}

func TestWriteCertificates(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	get := func() *corev1.Secret {
		t.Helper()
		s, err := client.CoreV1().Secrets(CertificatesNamespace).Get(ctx, CertificatesSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	writes := func() []k8stesting.Action {
		var out []k8stesting.Action
		for _, a := range client.Actions() {
			if a.GetVerb() != "get" && a.GetVerb() != "list" && a.GetVerb() != "watch" {
				out = append(out, a)
			}
		}
		client.ClearActions()
		return out
	}
	in := certsInput()
	want := CertificatesData(Build(certsConfig, in).Table, in.Secrets)

	// None yet: created, Opaque.
	if err := writeCertificates(ctx, client, nil, want); err != nil {
		t.Fatal(err)
	}
	if a := writes(); len(a) != 1 || a[0].GetVerb() != "create" {
		t.Fatalf("first write: %v", a)
	}
	have := get()
	if have.Type != corev1.SecretTypeOpaque || len(have.Data) != len(want) {
		t.Fatalf("created %s with %d keys", have.Type, len(have.Data))
	}
	client.ClearActions()

	// The same content: nothing written.
	if err := writeCertificates(ctx, client, have, CertificatesData(Build(certsConfig, in).Table, in.Secrets)); err != nil {
		t.Fatal(err)
	}
	if a := writes(); len(a) != 0 {
		t.Fatalf("unchanged content written: %v", a)
	}

	// The Gateway's own certificate no longer referenced, another
	// Ingress's added: one patch of those keys only.
	in.Gateways[0].Spec.Listeners = in.Gateways[0].Spec.Listeners[1:]
	in.Ingresses[1].Spec.IngressClassName = nil
	want = CertificatesData(Build(certsConfig, in).Table, in.Secrets)
	if err := writeCertificates(ctx, client, have, want); err != nil {
		t.Fatal(err)
	}
	a := writes()
	if len(a) != 1 || a[0].GetVerb() != "patch" {
		t.Fatalf("update: %v", a)
	}
	var patch struct {
		Data map[string]*[]byte `json:"data"`
	}
	if err := json.Unmarshal(a[0].(k8stesting.PatchAction).GetPatch(), &patch); err != nil {
		t.Fatal(err)
	}
	if got, wantKeys := slices.Sorted(maps.Keys(patch.Data)), []string{"infra.own.crt", "infra.own.key", "web.theirs.crt", "web.theirs.key"}; !slices.Equal(got, wantKeys) {
		t.Fatalf("patched keys %v, want %v", got, wantKeys)
	}
	if patch.Data["infra.own.crt"] != nil || patch.Data["web.theirs.crt"] == nil {
		t.Errorf("patch %s", a[0].(k8stesting.PatchAction).GetPatch())
	}
	have = get()
	if got, wantKeys := slices.Sorted(maps.Keys(have.Data)), slices.Sorted(maps.Keys(want)); !slices.Equal(got, wantKeys) {
		t.Fatalf("after the patch %v, want %v", got, wantKeys)
	}
}
