package ingress

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/gateway-api/conformance"
	conftests "sigs.k8s.io/gateway-api/conformance/tests"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"

	"github.com/skiff-dev/skiff/internal/golden"
)

// The conformance suite's GATEWAY-HTTP core tests, read from the module
// of the same version as the CRDs: their manifests must give the table
// and status the tests expect.

// coreTests are the suite's tests that need only the core features of
// the GATEWAY-HTTP profile.
func coreTests() []suite.ConformanceTest {
	return profileTests(suite.GatewayHTTPConformanceProfile.CoreFeatures)
}

// extendedTests are the profile's tests that need extended features too.
func extendedTests() []suite.ConformanceTest {
	p := suite.GatewayHTTPConformanceProfile
	all := p.CoreFeatures.Union(p.ExtendedFeatures)
	var out []suite.ConformanceTest
	for _, ct := range profileTests(all) {
		if slices.ContainsFunc(ct.Features, func(f features.FeatureName) bool { return !p.CoreFeatures.Has(f) }) {
			out = append(out, ct)
		}
	}
	return out
}

// profileTests are the tests that need only the given features.
func profileTests(supported sets.Set[features.FeatureName]) []suite.ConformanceTest {
	var out []suite.ConformanceTest
	for _, ct := range conftests.ConformanceTests {
		if ct.Provisional || len(ct.Features) == 0 {
			continue
		}
		if slices.ContainsFunc(ct.Features, func(f features.FeatureName) bool { return !supported.Has(f) }) {
			continue
		}
		out = append(out, ct)
	}
	slices.SortFunc(out, func(a, b suite.ConformanceTest) int { return strings.Compare(a.ShortName, b.ShortName) })
	return out
}

// conformanceInput is what the suite applies before a test's manifests
// run: the base manifests, the Secrets it makes, a GatewayClass of ours,
// and a ready endpoint per Service (the suite's Deployments).
func conformanceInput(t *testing.T, manifests ...string) (*Input, []metav1.Object) {
	in := &Input{
		GatewayClasses: []*gatewayv1.GatewayClass{{
			ObjectMeta: metav1.ObjectMeta{Name: "skiff", Generation: 1},
			Spec:       gatewayv1.GatewayClassSpec{ControllerName: DefaultGatewayController},
		}},
	}
	for _, s := range []struct{ ns, name string }{
		{"gateway-conformance-web-backend", "certificate"},
		{"gateway-conformance-infra", "tls-validity-checks-certificate"},
		{"gateway-conformance-infra", "tls-checks-certificate"},
		{"gateway-conformance-infra", "tls-passthrough-checks-certificate"},
		{"gateway-conformance-app-backend", "tls-passthrough-checks-certificate"},
		{"gateway-conformance-infra", "tls-terminate-checks-certificate"},
	} {
		in.Secrets = append(in.Secrets, tlsSecret(s.ns, s.name))
	}
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var own []metav1.Object
	for i, m := range append([]string{"base/manifests.yaml"}, manifests...) {
		data, err := fs.ReadFile(conformance.Manifests, m)
		if err != nil {
			t.Fatal(err)
		}
		data = bytes.ReplaceAll(data, []byte("{GATEWAY_CLASS_NAME}"), []byte("skiff"))
		data = bytes.ReplaceAll(data, []byte("{GATEWAY_CONTROLLER_NAME}"), []byte(DefaultGatewayController))
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			u := &unstructured.Unstructured{}
			if err := dec.Decode(&u.Object); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				t.Fatalf("%s: %v", m, err)
			}
			if len(u.Object) == 0 {
				continue
			}
			created = created.Add(time.Second)
			u.SetCreationTimestamp(metav1.NewTime(created))
			u.SetGeneration(1)
			if u.GetKind() == "Gateway" && u.GetAPIVersion() == gatewayv1.GroupVersion.String() {
				// As the suite's applier does.
				_ = unstructured.SetNestedField(u.Object, "skiff", "spec", "gatewayClassName")
			}
			obj := decodeObject(t, u)
			if obj != nil && i > 0 {
				own = append(own, obj)
			}
			switch o := obj.(type) {
			case *corev1.Namespace:
				in.Namespaces = append(in.Namespaces, o)
			case *corev1.Service:
				in.Services = append(in.Services, o)
			case *discoveryv1.EndpointSlice:
				// The test fills in its pods' addresses.
				addr := fmt.Sprintf("10.43.%d.10", len(in.EndpointSlices))
				if o.AddressType == discoveryv1.AddressTypeIPv6 {
					addr = fmt.Sprintf("fd00:43::%d", len(in.EndpointSlices))
				}
				o.Endpoints = append(o.Endpoints, discoveryv1.Endpoint{Addresses: []string{addr}})
				in.EndpointSlices = append(in.EndpointSlices, o)
			case *corev1.Secret:
				in.Secrets = append(in.Secrets, o)
			case *gatewayv1.GatewayClass:
				in.GatewayClasses = append(in.GatewayClasses, o)
			case *gatewayv1.Gateway:
				in.Gateways = append(in.Gateways, o)
			case *gatewayv1.HTTPRoute:
				in.HTTPRoutes = append(in.HTTPRoutes, o)
			case *gatewayv1beta1.ReferenceGrant:
				in.ReferenceGrants = append(in.ReferenceGrants, o)
			}
		}
	}
	// The Services' Deployments: an endpoint each, for those without
	// slices of their own.
	for i, svc := range in.Services {
		if !slices.ContainsFunc(in.EndpointSlices, func(s *discoveryv1.EndpointSlice) bool {
			return s.Namespace == svc.Namespace && s.Labels[discoveryv1.LabelServiceName] == svc.Name
		}) {
			in.EndpointSlices = append(in.EndpointSlices, sliceFor(svc, fmt.Sprintf("10.42.%d.10", i+1)))
		}
	}
	return in, own
}

func decodeObject(t *testing.T, u *unstructured.Unstructured) metav1.Object {
	var obj metav1.Object
	switch u.GroupVersionKind().GroupKind().String() {
	case "Namespace":
		obj = &corev1.Namespace{}
	case "Service":
		obj = &corev1.Service{}
	case "Secret":
		obj = &corev1.Secret{}
	case "EndpointSlice.discovery.k8s.io":
		obj = &discoveryv1.EndpointSlice{}
	case "GatewayClass.gateway.networking.k8s.io":
		obj = &gatewayv1.GatewayClass{}
	case "Gateway.gateway.networking.k8s.io":
		obj = &gatewayv1.Gateway{}
	case "HTTPRoute.gateway.networking.k8s.io":
		obj = &gatewayv1.HTTPRoute{}
	case "ReferenceGrant.gateway.networking.k8s.io":
		obj = &gatewayv1beta1.ReferenceGrant{}
	default:
		return nil // Deployments, ConfigMaps, other route kinds
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, obj); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
	if n, ok := obj.(*corev1.Namespace); ok {
		// The label the API server gives every namespace.
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		n.Labels[corev1.LabelMetadataName] = n.Name
	}
	if s, ok := obj.(*corev1.Secret); ok {
		// stringData, as the API server would store it.
		for k, v := range s.StringData {
			if s.Data == nil {
				s.Data = map[string][]byte{}
			}
			s.Data[k] = []byte(v)
		}
	}
	return obj
}

// TestConformanceCoreTests renders, for each core test, the table and the
// status its manifests give (testdata/conformance/<test>.golden); the
// goldens are checked against the tests' expectations by hand and by
// TestConformanceRequests.
func TestConformanceCoreTests(t *testing.T) {
	tests := coreTests()
	if len(tests) < 30 {
		t.Fatalf("only %d core tests found", len(tests))
	}
	for _, ct := range tests {
		t.Run(ct.ShortName, func(t *testing.T) {
			in, _ := conformanceInput(t, ct.Manifests...)
			res := Build(testConfig, in)
			golden.Check(t, "conformance/"+ct.ShortName, renderResult(res))
		})
	}
}
