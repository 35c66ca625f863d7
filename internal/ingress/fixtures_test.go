package ingress

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Fixture builders for hand-written cases.

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func meta(ns, name string, age int) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1, CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Second))}
}

func ourClass() *gatewayv1.GatewayClass {
	return &gatewayv1.GatewayClass{ObjectMeta: meta("", "skiff", 0), Spec: gatewayv1.GatewayClassSpec{ControllerName: DefaultGatewayController}}
}

func listener(name string, port int32, proto gatewayv1.ProtocolType, host string) gatewayv1.Listener {
	l := gatewayv1.Listener{Name: gatewayv1.SectionName(name), Port: port, Protocol: proto}
	if host != "" {
		l.Hostname = ptr.To(gatewayv1.Hostname(host))
	}
	all := gatewayv1.NamespacesFromAll
	l.AllowedRoutes = &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &all}}
	return l
}

func httpsListener(name string, port int32, host, secret string) gatewayv1.Listener {
	l := listener(name, port, gatewayv1.HTTPSProtocolType, host)
	l.TLS = &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: gatewayv1.ObjectName(secret)}}}
	return l
}

func gateway(ns, name string, age int, ls ...gatewayv1.Listener) *gatewayv1.Gateway {
	return &gatewayv1.Gateway{ObjectMeta: meta(ns, name, age), Spec: gatewayv1.GatewaySpec{GatewayClassName: "skiff", Listeners: ls}}
}

func service(ns, name string, port int32) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: meta(ns, name, 0),
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Name: "http", Port: port, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080),
		}}},
	}
}

type routeOpt func(*gatewayv1.HTTPRoute)

func route(ns, name string, age int, gw string, opts ...routeOpt) *gatewayv1.HTTPRoute {
	r := &gatewayv1.HTTPRoute{ObjectMeta: meta(ns, name, age)}
	r.Spec.ParentRefs = []gatewayv1.ParentReference{{Name: gatewayv1.ObjectName(gw), Namespace: ptr.To(gatewayv1.Namespace("infra"))}}
	for _, o := range opts {
		o(r)
	}
	return r
}

func hostnames(hs ...string) routeOpt {
	return func(r *gatewayv1.HTTPRoute) {
		for _, h := range hs {
			r.Spec.Hostnames = append(r.Spec.Hostnames, gatewayv1.Hostname(h))
		}
	}
}

func rule(backend string, matches ...gatewayv1.HTTPRouteMatch) routeOpt {
	return func(r *gatewayv1.HTTPRoute) {
		rl := gatewayv1.HTTPRouteRule{Matches: matches}
		if backend != "" {
			rl.BackendRefs = []gatewayv1.HTTPBackendRef{backendRef(backend, 80, nil)}
		}
		r.Spec.Rules = append(r.Spec.Rules, rl)
	}
}

func ruleWith(rl gatewayv1.HTTPRouteRule) routeOpt {
	return func(r *gatewayv1.HTTPRoute) { r.Spec.Rules = append(r.Spec.Rules, rl) }
}

func backendRef(name string, port int32, weight *int32) gatewayv1.HTTPBackendRef {
	return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
		BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: ptr.To(port)},
		Weight:                 weight,
	}}
}

type matchOpt func(*gatewayv1.HTTPRouteMatch)

func match(opts ...matchOpt) gatewayv1.HTTPRouteMatch {
	var m gatewayv1.HTTPRouteMatch
	for _, o := range opts {
		o(&m)
	}
	return m
}

func path(t gatewayv1.PathMatchType, v string) matchOpt {
	return func(m *gatewayv1.HTTPRouteMatch) {
		m.Path = &gatewayv1.HTTPPathMatch{Type: ptr.To(t), Value: ptr.To(v)}
	}
}

func method(v string) matchOpt {
	return func(m *gatewayv1.HTTPRouteMatch) { m.Method = ptr.To(gatewayv1.HTTPMethod(v)) }
}

func header(n, v string) matchOpt {
	return func(m *gatewayv1.HTTPRouteMatch) {
		m.Headers = append(m.Headers, gatewayv1.HTTPHeaderMatch{Name: gatewayv1.HTTPHeaderName(n), Value: v})
	}
}

func query(n, v string) matchOpt {
	return func(m *gatewayv1.HTTPRouteMatch) {
		m.QueryParams = append(m.QueryParams, gatewayv1.HTTPQueryParamMatch{Name: gatewayv1.HTTPHeaderName(n), Value: v})
	}
}

const (
	exact  = gatewayv1.PathMatchExact
	prefix = gatewayv1.PathMatchPathPrefix
	regex  = gatewayv1.PathMatchRegularExpression
)

// gwInput is a Gateway "gw" in namespace "infra" with an HTTP listener on
// port 80, Services a, b, c and d in "infra" with an endpoint each, and
// the routes.
func gwInput(routes ...*gatewayv1.HTTPRoute) *Input {
	in := &Input{
		GatewayClasses: []*gatewayv1.GatewayClass{ourClass()},
		Gateways:       []*gatewayv1.Gateway{gateway("infra", "gw", 0, listener("http", 80, gatewayv1.HTTPProtocolType, ""))},
		HTTPRoutes:     routes,
	}
	for i, n := range []string{"a", "b", "c", "d"} {
		s := service("infra", n, 80)
		in.Services = append(in.Services, s)
		in.EndpointSlices = append(in.EndpointSlices, sliceFor(s, "10.42.0."+string(rune('1'+i))))
	}
	return in
}

type ingOpt func(*networkingv1.Ingress)

func ingress(ns, name string, age int, opts ...ingOpt) *networkingv1.Ingress {
	ing := &networkingv1.Ingress{ObjectMeta: meta(ns, name, age)}
	for _, o := range opts {
		o(ing)
	}
	return ing
}

func ingRule(host string, paths ...networkingv1.HTTPIngressPath) ingOpt {
	return func(ing *networkingv1.Ingress) {
		ing.Spec.Rules = append(ing.Spec.Rules, networkingv1.IngressRule{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: paths}}})
	}
}

func ingPath(t networkingv1.PathType, p, svc string) networkingv1.HTTPIngressPath {
	return networkingv1.HTTPIngressPath{Path: p, PathType: ptr.To(t), Backend: networkingv1.IngressBackend{
		Service: &networkingv1.IngressServiceBackend{Name: svc, Port: networkingv1.ServiceBackendPort{Number: 80}},
	}}
}

func annotate(k, v string) ingOpt {
	return func(ing *networkingv1.Ingress) {
		if ing.Annotations == nil {
			ing.Annotations = map[string]string{}
		}
		ing.Annotations[k] = v
	}
}

func ourIngressClass(dflt bool) *networkingv1.IngressClass {
	c := &networkingv1.IngressClass{ObjectMeta: meta("", "skiff", 0), Spec: networkingv1.IngressClassSpec{Controller: DefaultIngressController}}
	if dflt {
		c.Annotations = map[string]string{networkingv1.AnnotationIsDefaultIngressClass: "true"}
	}
	return c
}
