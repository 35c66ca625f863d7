package ingress

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/skiff-dev/skiff/internal/golden"
)

// chosen is which backend (Service name) the rule a request matches
// sends it to, "404" when none matches, "redirect" for a redirect.
func chosen(l *Listener, host, m, target string, headers ...string) string {
	u, _ := url.ParseRequestURI(target)
	req := &Request{Host: host, Method: m, Path: u.Path, Query: u.Query(), Header: http.Header{}}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	r := l.Match(req)
	switch {
	case r == nil:
		return "404"
	case r.Redirect != nil:
		return "redirect"
	case len(r.Backends) == 0:
		return "500"
	}
	return r.Backends[0].Service.Name
}

type reqCase struct {
	host, method, target string
	headers              []string
	want                 string
}

func checkRequests(t *testing.T, l *Listener, cases []reqCase) {
	t.Helper()
	for _, c := range cases {
		m := c.method
		if m == "" {
			m = "GET"
		}
		host := c.host
		if host == "" {
			host = "example.com"
		}
		if got := chosen(l, host, m, c.target, c.headers...); got != c.want {
			t.Errorf("%s %s%s %v: got %s, want %s", m, host, c.target, c.headers, got, c.want)
		}
	}
}

// TestPrecedence checks each criterion of the HTTPRoute precedence, one
// at a time, across routes and within a route.
func TestPrecedence(t *testing.T) {
	in := gwInput(
		// Created first: wins ties with "newer".
		route("infra", "older", 1, "gw",
			rule("a", match(path(prefix, "/tie"))),
			rule("b", match(path(prefix, "/tie"))), // same route, later rule
		),
		route("infra", "newer", 2, "gw",
			rule("c", match(path(prefix, "/tie"))),
			rule("c", match(path(prefix, "/exact"))),
			rule("d", match(path(exact, "/exact/x"))),
			rule("a", match(path(prefix, "/exact/x/y"))),
		),
		route("infra", "criteria", 3, "gw",
			rule("a", match(path(prefix, "/c"))),
			rule("b", match(path(prefix, "/c"), method("POST"))),
			rule("c", match(path(prefix, "/c"), header("x", "1"))),
			rule("d", match(path(prefix, "/c"), header("x", "1"), header("y", "1"))),
			rule("a", match(path(prefix, "/c"), query("q", "1"), query("r", "1"))),
			rule("b", match(path(prefix, "/c"), header("x", "1"), query("q", "1"))),
			rule("c", match(path(prefix, "/c/longer"))),
		),
		// Same age as "alpha-b": alphabetical by namespace/name.
		route("infra", "alpha-b", 4, "gw", rule("b", match(path(prefix, "/alpha")))),
		route("infra", "alpha-a", 4, "gw", rule("a", match(path(prefix, "/alpha")))),
		route("infra", "regex", 5, "gw",
			rule("d", match(path(regex, "/re/[0-9]+"))),
			rule("c", match(path(prefix, "/re/1"))),
		),
	)
	res := Build(testConfig, in)
	golden.Check(t, "precedence", renderResult(res))
	l := res.Table.Listener(80)
	checkRequests(t, l, []reqCase{
		{target: "/tie", want: "a"},       // oldest route, first rule
		{target: "/exact/x", want: "d"},   // Exact before a longer prefix elsewhere
		{target: "/exact/x/y", want: "a"}, // longest prefix
		{target: "/exact/xy", want: "c"},  // prefix by path element only
		{target: "/c", want: "a"},         // nothing else matches
		{method: "POST", target: "/c", want: "b"},
		{method: "POST", target: "/c", headers: []string{"x", "1"}, want: "b"}, // method before headers
		{target: "/c", headers: []string{"x", "1"}, want: "c"},
		{target: "/c", headers: []string{"x", "1", "y", "1"}, want: "d"}, // most headers
		{target: "/c?q=1&r=1", want: "a"},
		{target: "/c?q=1&r=1", headers: []string{"x", "1"}, want: "b"},                // headers before query params
		{target: "/c/longer", method: "POST", headers: []string{"x", "1"}, want: "c"}, // path before all
		{target: "/alpha", want: "a"},
		{target: "/re/12", want: "d"}, // regular expressions before prefixes (implementation's choice)
		{target: "/re/1", want: "d"},
		{target: "/re/x", want: "404"},
		{target: "/nothing", want: "404"},
	})
}

// TestHostPrecedence: the most specific matching hostname first, falling
// back to less specific ones when its rules do not match.
func TestHostPrecedence(t *testing.T) {
	in := gwInput(
		route("infra", "exact", 1, "gw", hostnames("a.b.example.com"), rule("a", match(path(prefix, "/x")))),
		route("infra", "long-wild", 2, "gw", hostnames("*.b.example.com"), rule("b", match(path(prefix, "/")))),
		route("infra", "short-wild", 3, "gw", hostnames("*.example.com"), rule("c", match(path(prefix, "/")))),
		route("infra", "any", 4, "gw", rule("d", match(path(prefix, "/y")))),
	)
	res := Build(testConfig, in)
	l := res.Table.Listener(80)
	var names []string
	for _, h := range l.Hosts {
		names = append(names, h.Name)
	}
	if got := strings.Join(names, " "); got != "a.b.example.com *.b.example.com *.example.com " {
		t.Errorf("hosts in order %q", got)
	}
	checkRequests(t, l, []reqCase{
		{host: "a.b.example.com", target: "/x", want: "a"},
		{host: "A.B.Example.Com.:8080", target: "/x", want: "a"}, // case, trailing dot and port
		{host: "a.b.example.com", target: "/z", want: "b"},       // falls back to the wildcard
		{host: "c.b.example.com", target: "/x", want: "b"},
		{host: "x.y.b.example.com", target: "/", want: "b"}, // wildcards span labels
		{host: "b.example.com", target: "/", want: "c"},     // *.b.example.com needs a label more
		{host: "example.com", target: "/", want: "404"},
		{host: "example.com", target: "/y", want: "d"},
		{host: "other.org", target: "/y", want: "d"},
	})
}

func TestListenerHostnames(t *testing.T) {
	for _, c := range []struct {
		listener, route, want string
		ok                    bool
	}{
		{"", "", "", true},
		{"", "a.example.com", "a.example.com", true},
		{"a.example.com", "", "a.example.com", true},
		{"a.example.com", "a.example.com", "a.example.com", true},
		{"*.example.com", "a.example.com", "a.example.com", true},
		{"*.example.com", "a.b.example.com", "a.b.example.com", true},
		{"a.example.com", "*.example.com", "a.example.com", true},
		{"*.example.com", "*.b.example.com", "*.b.example.com", true},
		{"*.b.example.com", "*.example.com", "*.b.example.com", true},
		{"*.example.com", "example.com", "", false},
		{"a.example.com", "b.example.com", "", false},
		{"*.example.com", "*.example.org", "", false},
	} {
		got, ok := intersect(c.listener, c.route)
		if got != c.want || ok != c.ok {
			t.Errorf("intersect(%q, %q) = %q, %v; want %q, %v", c.listener, c.route, got, ok, c.want, c.ok)
		}
	}
}

// TestListenerConflicts: within a Gateway, across Gateways, with the
// Ingress ports and with ports the node could not open.
func TestListenerConflicts(t *testing.T) {
	in := &Input{
		GatewayClasses: []*gatewayv1.GatewayClass{ourClass()},
		Gateways: []*gatewayv1.Gateway{
			gateway("infra", "first", 1,
				listener("proto-a", 8080, gatewayv1.HTTPProtocolType, ""),
				httpsListener("proto-b", 8080, "", "cert"),
				listener("host-a", 8081, gatewayv1.HTTPProtocolType, "a.example.com"),
				listener("host-b", 8081, gatewayv1.HTTPProtocolType, "a.example.com"),
				listener("host-c", 8081, gatewayv1.HTTPProtocolType, "c.example.com"),
				listener("tcp", 9000, gatewayv1.TCPProtocolType, ""),
			),
			gateway("infra", "second", 2,
				httpsListener("over-http", 8081, "", "cert"),             // first claimed 8081 for HTTP
				httpsListener("over-ingress", 80, "", "cert"),            // the Ingress HTTP port
				listener("shared", 443, gatewayv1.HTTPSProtocolType, ""), // no TLS settings
				listener("busy", 8443, gatewayv1.HTTPProtocolType, ""),
				httpsListener("ok", 443, "b.example.com", "cert"),
			),
		},
		Secrets: []*corev1.Secret{tlsSecret("infra", "cert")},
	}
	cfg := testConfig
	cfg.UnavailablePorts = map[int32]string{8443: "address already in use"}
	cfg.SupportedFeatures = []string{"HTTPRoute", "Gateway", "ReferenceGrant"}
	golden.Check(t, "conflicts", renderResult(Build(cfg, in)))
}

// TestRouteStatus: references that do not resolve, rules that cannot be
// served, parents that do not admit the route.
func TestRouteStatus(t *testing.T) {
	in := gwInput(
		route("infra", "missing-backend", 1, "gw", rule("nope", match(path(prefix, "/m")))),
		route("infra", "weighted", 2, "gw", ruleWith(gatewayv1.HTTPRouteRule{
			Matches: []gatewayv1.HTTPRouteMatch{match(path(prefix, "/w"))},
			BackendRefs: []gatewayv1.HTTPBackendRef{
				backendRef("a", 80, ptr.To[int32](3)),
				backendRef("b", 80, ptr.To[int32](1)),
				backendRef("b", 81, ptr.To[int32](1)), // no such port
				backendRef("c", 80, ptr.To[int32](0)),
			},
		})),
		route("infra", "incompatible", 3, "gw",
			ruleWith(gatewayv1.HTTPRouteRule{
				Filters: []gatewayv1.HTTPRouteFilter{
					{Type: gatewayv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &gatewayv1.HTTPRequestRedirectFilter{}},
					{Type: gatewayv1.HTTPRouteFilterURLRewrite, URLRewrite: &gatewayv1.HTTPURLRewriteFilter{}},
				},
			}),
			rule("a", match(path(prefix, "/still-served"))),
		),
		route("infra", "prefix-rewrite-on-exact", 4, "gw", ruleWith(gatewayv1.HTTPRouteRule{
			Matches: []gatewayv1.HTTPRouteMatch{match(path(exact, "/e"))},
			Filters: []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterURLRewrite, URLRewrite: &gatewayv1.HTTPURLRewriteFilter{
				Path: &gatewayv1.HTTPPathModifier{Type: gatewayv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr.To("/x")},
			}}},
		})),
		route("infra", "bad-regex", 5, "gw", rule("a", match(path(regex, "([")))),
		route("infra", "extension", 6, "gw", ruleWith(gatewayv1.HTTPRouteRule{
			Filters: []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterExtensionRef, ExtensionRef: &gatewayv1.LocalObjectReference{Kind: "Thing", Name: "x"}}},
		})),
		route("infra", "other-gateway", 7, "gw-of-someone-else", rule("a")),
		route("infra", "no-such-section", 8, "gw", func(r *gatewayv1.HTTPRoute) {
			r.Spec.ParentRefs[0].SectionName = ptr.To(gatewayv1.SectionName("nope"))
		}, rule("a")),
		route("infra", "port", 9, "gw", func(r *gatewayv1.HTTPRoute) {
			r.Spec.ParentRefs[0].Port = ptr.To[int32](80)
		}, rule("a", match(path(prefix, "/port")))),
		route("infra", "features", 10, "gw", ruleWith(gatewayv1.HTTPRouteRule{
			Matches: []gatewayv1.HTTPRouteMatch{match(path(prefix, "/f"))},
			Filters: []gatewayv1.HTTPRouteFilter{
				{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{
					Set: []gatewayv1.HTTPHeader{{Name: "x-set", Value: "1"}}, Add: []gatewayv1.HTTPHeader{{Name: "x-add", Value: "2"}}, Remove: []string{"x-remove"},
				}},
				{Type: gatewayv1.HTTPRouteFilterResponseHeaderModifier, ResponseHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "x-resp", Value: "3"}}}},
				{Type: gatewayv1.HTTPRouteFilterRequestMirror, RequestMirror: &gatewayv1.HTTPRequestMirrorFilter{
					BackendRef: gatewayv1.BackendObjectReference{Name: "d", Port: ptr.To[int32](80)},
					Fraction:   &gatewayv1.Fraction{Numerator: 1, Denominator: ptr.To[int32](4)},
				}},
				{Type: gatewayv1.HTTPRouteFilterURLRewrite, URLRewrite: &gatewayv1.HTTPURLRewriteFilter{
					Hostname: ptr.To(gatewayv1.PreciseHostname("internal.example.com")),
					Path:     &gatewayv1.HTTPPathModifier{Type: gatewayv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr.To("/")},
				}},
			},
			BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("a", 80, nil)},
			Timeouts:    &gatewayv1.HTTPRouteTimeouts{Request: ptr.To(gatewayv1.Duration("10s")), BackendRequest: ptr.To(gatewayv1.Duration("2s"))},
			Retry:       &gatewayv1.HTTPRouteRetry{Codes: []gatewayv1.HTTPRouteRetryStatusCode{502, 503}, Attempts: ptr.To(2), Backoff: ptr.To(gatewayv1.Duration("100ms"))},
		})),
		route("infra", "bad-timeouts", 11, "gw", ruleWith(gatewayv1.HTTPRouteRule{
			Timeouts: &gatewayv1.HTTPRouteTimeouts{Request: ptr.To(gatewayv1.Duration("1s")), BackendRequest: ptr.To(gatewayv1.Duration("2s"))},
		})),
	)
	golden.Check(t, "route-status", renderResult(Build(testConfig, in)))
}

// TestReferenceGrants: cross-namespace backends and certificates need a
// grant from the target's namespace naming the source namespace and kind.
func TestReferenceGrants(t *testing.T) {
	in := gwInput(
		route("infra", "to-apps", 1, "gw", rule("", match()), func(r *gatewayv1.HTTPRoute) {
			r.Spec.Rules[0].BackendRefs = []gatewayv1.HTTPBackendRef{backendRef("granted", 80, nil)}
			r.Spec.Rules[0].BackendRefs[0].Namespace = ptr.To(gatewayv1.Namespace("apps"))
			r.Spec.Rules = append(r.Spec.Rules, gatewayv1.HTTPRouteRule{
				Matches:     []gatewayv1.HTTPRouteMatch{match(path(prefix, "/other"))},
				BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("other", 80, nil)},
			})
			r.Spec.Rules[1].BackendRefs[0].Namespace = ptr.To(gatewayv1.Namespace("apps"))
		}),
	)
	in.Services = append(in.Services, service("apps", "granted", 80), service("apps", "other", 80))
	in.Gateways[0].Spec.Listeners = append(in.Gateways[0].Spec.Listeners, httpsListener("https", 443, "", "cert"))
	in.Gateways[0].Spec.Listeners[1].TLS.CertificateRefs[0].Namespace = ptr.To(gatewayv1.Namespace("certs"))
	in.Secrets = append(in.Secrets, tlsSecret("certs", "cert"))
	grant := func(ns, name, fromKind, fromNS, toKind, toName string) *gatewayv1.ReferenceGrant {
		g := &gatewayv1.ReferenceGrant{ObjectMeta: meta(ns, name, 0)}
		g.Spec.From = []gatewayv1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: gatewayv1.Kind(fromKind), Namespace: gatewayv1.Namespace(fromNS)}}
		to := gatewayv1.ReferenceGrantTo{Kind: gatewayv1.Kind(toKind)}
		if toName != "" {
			to.Name = ptr.To(gatewayv1.ObjectName(toName))
		}
		g.Spec.To = []gatewayv1.ReferenceGrantTo{to}
		return g
	}
	without := Build(testConfig, in)
	for _, g := range []*gatewayv1.ReferenceGrant{
		grant("apps", "services", "HTTPRoute", "infra", "Service", "granted"),
		grant("apps", "wrong-kind", "Gateway", "infra", "Service", ""),
		grant("certs", "secrets", "Gateway", "infra", "Secret", ""),
	} {
		in.ReferenceGrants = append(in.ReferenceGrants, (*gatewayv1beta1.ReferenceGrant)(g))
	}
	with := Build(testConfig, in)
	golden.Check(t, "reference-grants", "# without grants\n"+renderResult(without)+"# with grants\n"+renderResult(with))
}

// TestEndpoints: ready endpoints, else serving terminating ones; the
// Service port's name picks the slice port.
func TestEndpoints(t *testing.T) {
	svc := service("infra", "a", 80)
	svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "grpc", Port: 90, Protocol: corev1.ProtocolTCP, AppProtocol: ptr.To("kubernetes.io/h2c")})
	s1 := sliceFor(svc, "10.42.0.2", "10.42.0.1")
	s1.Endpoints[0].Conditions.Ready = ptr.To(false)
	s2 := sliceFor(svc, "10.42.1.1", "10.42.1.1") // the same address twice
	s2.Name = "a-2"
	*s2.Ports[1].Port = 9090
	term := sliceFor(service("infra", "b", 80), "10.42.2.1", "10.42.2.2")
	for i := range term.Endpoints {
		term.Endpoints[i].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(i == 0), Terminating: ptr.To(true)}
	}
	in := &Input{
		GatewayClasses: []*gatewayv1.GatewayClass{ourClass()},
		Gateways:       []*gatewayv1.Gateway{gateway("infra", "gw", 0, listener("http", 80, gatewayv1.HTTPProtocolType, ""))},
		Services:       []*corev1.Service{svc, service("infra", "b", 80)},
		EndpointSlices: []*discoveryv1.EndpointSlice{s1, s2, term},
		HTTPRoutes: []*gatewayv1.HTTPRoute{route("infra", "r", 1, "gw",
			rule("a", match(path(prefix, "/a"))),
			ruleWith(gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("a", 90, nil)}, Matches: []gatewayv1.HTTPRouteMatch{match(path(prefix, "/grpc"))}}),
			rule("b", match(path(prefix, "/b"))),
		)},
	}
	golden.Check(t, "endpoints", Build(testConfig, in).Table.String())
}

func TestIngress(t *testing.T) {
	in := &Input{
		IngressClasses: []*networkingv1.IngressClass{
			ourIngressClass(true),
			{ObjectMeta: meta("", "nginx", 0), Spec: networkingv1.IngressClassSpec{Controller: "k8s.io/ingress-nginx"}},
		},
		Ingresses: []*networkingv1.Ingress{
			ingress("web", "site", 1,
				ingRule("example.com",
					ingPath(networkingv1.PathTypePrefix, "/app/", "app"),
					ingPath(networkingv1.PathTypeExact, "/exact", "exact"),
					ingPath(networkingv1.PathTypeImplementationSpecific, "/impl", "app"),
				),
				ingRule("*.example.com", ingPath(networkingv1.PathTypePrefix, "/", "wild")),
				func(ing *networkingv1.Ingress) {
					ing.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{"example.com"}, SecretName: "site-tls"}, {SecretName: "missing"}}
					ing.Spec.DefaultBackend = &networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "fallback", Port: networkingv1.ServiceBackendPort{Name: "http"}}}
				},
			),
			ingress("web", "secure-only", 2,
				annotate(AnnotationEntryPoints, "websecure"),
				ingRule("secure.example.com", ingPath(networkingv1.PathTypePrefix, "/", "app"))),
			ingress("web", "redirect", 3,
				annotate(AnnotationSSLRedirect, "true"),
				annotate(AnnotationRuleType, "PathPrefixStrip"),
				ingRule("r.example.com", ingPath(networkingv1.PathTypePrefix, "/api", "app"))),
			ingress("web", "other-class", 4, func(ing *networkingv1.Ingress) { ing.Spec.IngressClassName = ptr.To("nginx") },
				ingRule("nginx.example.com", ingPath(networkingv1.PathTypePrefix, "/", "app"))),
			ingress("web", "annotated-class", 5, annotate(AnnotationIngressClass, "skiff"),
				ingRule("annotated.example.com", ingPath(networkingv1.PathTypePrefix, "/", "missing-service"))),
		},
		Services: []*corev1.Service{service("web", "app", 80), service("web", "exact", 80), service("web", "wild", 80), service("web", "fallback", 80)},
		Secrets:  []*corev1.Secret{tlsSecret("web", "site-tls")},
	}
	res := Build(testConfig, in)
	golden.Check(t, "ingress", renderResult(res))
	l := res.Table.Listener(80)
	checkRequests(t, l, []reqCase{
		{host: "example.com", target: "/app", want: "app"},
		{host: "example.com", target: "/app/x", want: "app"},
		{host: "example.com", target: "/apple", want: "fallback"},
		{host: "example.com", target: "/exact", want: "exact"},
		{host: "example.com", target: "/exact/", want: "fallback"},
		{host: "example.com", target: "/impl/x", want: "app"},
		{host: "a.example.com", target: "/", want: "wild"},
		{host: "a.b.example.com", target: "/", want: "fallback"}, // Ingress wildcards cover one label
		{host: "secure.example.com", target: "/", want: "wild"},  // not on HTTP: the wildcard
		{host: "r.example.com", target: "/api/x", want: "redirect"},
		{host: "nginx.example.com", target: "/", want: "wild"}, // not ours: the wildcard
		{host: "other.org", target: "/x", want: "fallback"},
	})
	tl := res.Table.Listener(443)
	checkRequests(t, tl, []reqCase{
		{host: "secure.example.com", target: "/", want: "app"},
		{host: "r.example.com", target: "/api/x", want: "app"},
	})
	if c := tl.Certificate("example.com"); c == nil || c.Secret.Name != "site-tls" {
		t.Errorf("certificate for example.com: %v", c)
	}
	if c := tl.Certificate("other.com"); c != nil {
		t.Errorf("certificate for other.com: %v", c.Secret)
	}
	// The stripped prefix.
	r := tl.Match(&Request{Host: "r.example.com", Method: "GET", Path: "/api/x"})
	if got := ModifyPath(r.Rewrite.Path, r, "/api/x"); got != "/x" {
		t.Errorf("stripped path %q", got)
	}
}

func TestIngressClassNotDefault(t *testing.T) {
	in := &Input{
		IngressClasses: []*networkingv1.IngressClass{ourIngressClass(false)},
		Ingresses: []*networkingv1.Ingress{
			ingress("web", "no-class", 1, ingRule("a.example.com", ingPath(networkingv1.PathTypePrefix, "/", "app"))),
			ingress("web", "ours", 2, func(ing *networkingv1.Ingress) { ing.Spec.IngressClassName = ptr.To("skiff") },
				ingRule("b.example.com", ingPath(networkingv1.PathTypePrefix, "/", "app"))),
		},
		Services: []*corev1.Service{service("web", "app", 80)},
	}
	res := Build(testConfig, in)
	if _, ok := res.Ingresses[types.NamespacedName{Namespace: "web", Name: "no-class"}]; ok {
		t.Error("an Ingress without class is served though our class is not the default")
	}
	if _, ok := res.Ingresses[types.NamespacedName{Namespace: "web", Name: "ours"}]; !ok {
		t.Error("an Ingress of our class is not served")
	}
}
