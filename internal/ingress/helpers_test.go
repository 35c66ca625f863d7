package ingress

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

var testConfig = Config{HTTPPort: 80, HTTPSPort: 443, Addresses: []string{"192.0.2.10"}}

// renderResult is the table, then every status and event, sorted.
func renderResult(r *Result) string {
	var sb strings.Builder
	sb.WriteString(r.Table.String())
	var names []string
	for n := range r.GatewayClasses {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&sb, "GatewayClass %s", n)
		for _, f := range r.GatewayClasses[n].SupportedFeatures {
			fmt.Fprintf(&sb, " %s", f.Name)
		}
		sb.WriteString("\n")
		renderConditions(&sb, "  ", r.GatewayClasses[n].Conditions)
	}
	for _, k := range sortedKeys(r.Gateways) {
		renderGateway(&sb, k, r.Gateways[k])
	}
	for _, k := range sortedKeys(r.HTTPRoutes) {
		renderRouteParents(&sb, k, r.HTTPRoutes[k])
	}
	for _, k := range sortedKeys(r.Ingresses) {
		var addrs []string
		for _, a := range r.Ingresses[k].LoadBalancer.Ingress {
			addrs = append(addrs, a.IP+a.Hostname)
		}
		fmt.Fprintf(&sb, "Ingress %s addresses %v\n", k, addrs)
	}
	for _, e := range r.Events {
		fmt.Fprintf(&sb, "event %s %s/%s %s: %s\n", e.Kind, e.Namespace, e.Name, e.Reason, e.Message)
	}
	return sb.String()
}

func sortedKeys[V any](m map[types.NamespacedName]V) []types.NamespacedName {
	var ks []types.NamespacedName
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i].String() < ks[j].String() })
	return ks
}

func renderConditions(sb *strings.Builder, indent string, cs []metav1.Condition) {
	for _, c := range cs {
		fmt.Fprintf(sb, "%s%s %s %s", indent, c.Type, c.Status, c.Reason)
		if c.Message != "" {
			fmt.Fprintf(sb, ": %s", c.Message)
		}
		sb.WriteString("\n")
	}
}

func renderGateway(sb *strings.Builder, k types.NamespacedName, st *gatewayv1.GatewayStatus) {
	fmt.Fprintf(sb, "Gateway %s\n", k)
	renderConditions(sb, "  ", st.Conditions)
	for _, l := range st.Listeners {
		var kinds []string
		for _, k := range l.SupportedKinds {
			kinds = append(kinds, string(k.Kind))
		}
		fmt.Fprintf(sb, "  listener %s attached %d kinds %v\n", l.Name, l.AttachedRoutes, kinds)
		renderConditions(sb, "    ", l.Conditions)
	}
}

func renderRouteParents(sb *strings.Builder, k types.NamespacedName, ps []gatewayv1.RouteParentStatus) {
	for _, p := range ps {
		ref := string(p.ParentRef.Name)
		if p.ParentRef.Namespace != nil {
			ref = string(*p.ParentRef.Namespace) + "/" + ref
		}
		if p.ParentRef.SectionName != nil {
			ref += " section " + string(*p.ParentRef.SectionName)
		}
		if p.ParentRef.Port != nil {
			ref += fmt.Sprintf(" port %d", *p.ParentRef.Port)
		}
		fmt.Fprintf(sb, "HTTPRoute %s parent %s\n", k, ref)
		renderConditions(sb, "  ", p.Conditions)
	}
}

// Certificates for tests, made once.
var testCert = sync.OnceValue(func() map[string][]byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "test"},
		DNSNames:     []string{"*"},
		NotBefore:    time.Unix(0, 0),
		NotAfter:     time.Unix(0, 0).Add(100 * 365 * 24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		panic(err)
	}
	return map[string][]byte{
		corev1.TLSCertKey:       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}
})

func tlsSecret(ns, name string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       corev1.SecretTypeTLS,
		Data:       testCert(),
	}
}

// sliceFor makes a ready EndpointSlice for every port of svc, with the
// given addresses.
func sliceFor(svc *corev1.Service, addrs ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: svc.Namespace, Name: svc.Name + "-abc",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, p := range svc.Spec.Ports {
		name, port := p.Name, p.TargetPort.IntVal
		if port == 0 {
			port = p.Port
		}
		tcp := corev1.ProtocolTCP
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: &name, Port: &port, Protocol: &tcp})
	}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}})
	}
	return s
}
