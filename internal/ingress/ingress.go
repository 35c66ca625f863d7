package ingress

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
)

// Annotations of Ingresses. The Traefik ones are those k3s users carry:
// which entry points (web: HTTP, websecure: HTTPS) serve the Ingress, and
// Traefik 1's redirect to HTTPS and prefix stripping.
const (
	AnnotationIngressClass       = "kubernetes.io/ingress.class"
	AnnotationEntryPoints        = "traefik.ingress.kubernetes.io/router.entrypoints"
	AnnotationRouterTLS          = "traefik.ingress.kubernetes.io/router.tls"
	AnnotationSSLRedirect        = "ingress.kubernetes.io/ssl-redirect"
	AnnotationRedirectEntryPoint = "traefik.ingress.kubernetes.io/redirect-entry-point"
	AnnotationRedirectPermanent  = "traefik.ingress.kubernetes.io/redirect-permanent"
	AnnotationRuleType           = "traefik.ingress.kubernetes.io/rule-type"
)

const kindIngress = "Ingress"

// ingressPorts are the ports Ingresses are served on, nil when disabled
// or unavailable.
type ingressPorts struct {
	http, https *portBuilder
}

// reserveIngressPorts claims the Ingress ports before any Gateway: their
// protocol is set by the node's configuration.
func (b *builder) reserveIngressPorts() {
	if b.cfg.HTTPPort > 0 {
		b.ing.http, _ = b.claimPort(nil, b.cfg.HTTPPort, ProtocolHTTP, "Ingresses")
	}
	if b.cfg.HTTPSPort > 0 {
		b.ing.https, _ = b.claimPort(nil, b.cfg.HTTPSPort, ProtocolHTTPS, "Ingresses")
	}
}

// servedIngresses are the Ingresses of our IngressClasses, and those with
// no class when one of ours is the default.
func (b *builder) servedIngresses() []*networkingv1.Ingress {
	ours := map[string]bool{}
	dflt := false
	for _, c := range b.in.IngressClasses {
		if c.Spec.Controller == b.cfg.IngressController {
			ours[c.Name] = true
			if c.Annotations[networkingv1.AnnotationIsDefaultIngressClass] == "true" {
				dflt = true
			}
		}
	}
	var out []*networkingv1.Ingress
	for _, ing := range b.in.Ingresses {
		class := ing.Annotations[AnnotationIngressClass]
		if ing.Spec.IngressClassName != nil {
			class = *ing.Spec.IngressClassName
		}
		if class == "" && dflt || ours[class] {
			out = append(out, ing)
		}
	}
	slices.SortFunc(out, func(x, y *networkingv1.Ingress) int { return olderFirst(x, y) })
	return out
}

func (b *builder) ingresses() {
	for _, ing := range b.servedIngresses() {
		b.ingress(ing)
	}
}

func (b *builder) ingress(ing *networkingv1.Ingress) {
	st := &networkingv1.IngressStatus{}
	for _, a := range b.cfg.Addresses {
		if isIP(a) {
			st.LoadBalancer.Ingress = append(st.LoadBalancer.Ingress, networkingv1.IngressLoadBalancerIngress{IP: a})
		} else {
			st.LoadBalancer.Ingress = append(st.LoadBalancer.Ingress, networkingv1.IngressLoadBalancerIngress{Hostname: a})
		}
	}
	b.res.Ingresses[nsName(ing)] = st

	httpPort, httpsPort := b.ing.http, b.ing.https
	if eps, ok := ing.Annotations[AnnotationEntryPoints]; ok {
		var web, secure bool
		for _, e := range strings.Split(eps, ",") {
			switch strings.TrimSpace(e) {
			case "web":
				web = true
			case "websecure":
				secure = true
			}
		}
		if !web {
			httpPort = nil
		}
		if !secure {
			httpsPort = nil
		}
	}
	if ing.Annotations[AnnotationRouterTLS] == "true" {
		httpPort = nil
	}
	var redirect *Redirect
	if ing.Annotations[AnnotationSSLRedirect] == "true" || ing.Annotations[AnnotationRedirectEntryPoint] == "https" {
		redirect = &Redirect{Scheme: "https", StatusCode: http.StatusFound}
		if b.cfg.HTTPSPort != DefaultHTTPSPort {
			redirect.Port = b.cfg.HTTPSPort
		}
		if ing.Annotations[AnnotationRedirectPermanent] == "true" {
			redirect.StatusCode = http.StatusMovedPermanently
		}
	}
	strip := ing.Annotations[AnnotationRuleType] == "PathPrefixStrip"

	if httpsPort != nil {
		for _, t := range ing.Spec.TLS {
			k := nsNameOf(ing.Namespace, t.SecretName)
			r := b.certificate(k)
			if r.err != "" {
				b.event(kindIngress, ing, "InvalidCertificate", r.err)
				continue
			}
			hosts := t.Hosts
			if len(hosts) == 0 {
				hosts = []string{""}
			}
			for _, h := range hosts {
				httpsPort.addCert(&Certificate{Hostname: strings.ToLower(h), Secret: k, Cert: r.cert})
			}
		}
	}

	ref := RouteRef{Kind: kindIngress, Namespace: ing.Namespace, Name: ing.Name}
	add := func(host string, rule *Rule, be *Backend) {
		act := &Action{Backends: []*Backend{be}}
		if strip && rule.Path.Type == PathPrefix {
			act.Rewrite = &Rewrite{Path: &PathModifier{Type: ReplacePrefixMatch, Value: "/"}}
		}
		rule.Action = act
		if httpsPort != nil {
			httpsPort.addRule(host, rule)
		}
		if httpPort != nil {
			if redirect != nil {
				r := *rule
				r.Action = &Action{Redirect: redirect}
				rule = &r
			}
			httpPort.addRule(host, rule)
		}
	}

	if db := ing.Spec.DefaultBackend; db != nil {
		if be := b.ingressBackend(ing, db); be != nil {
			add("", &Rule{Route: ref, RuleIndex: -1, Path: PathMatch{Type: PathPrefix, Value: "/"}, created: ing.CreationTimestamp.Time, defaultBackend: true}, be)
		}
	}
	for i, ir := range ing.Spec.Rules {
		host := strings.ToLower(ir.Host)
		if ir.HTTP == nil {
			continue
		}
		for j, p := range ir.HTTP.Paths {
			rule := &Rule{Route: ref, RuleIndex: i, MatchIndex: j, created: ing.CreationTimestamp.Time, oneLabel: isWildcard(host)}
			value := p.Path
			if value == "" {
				value = "/"
			}
			switch {
			case p.PathType != nil && *p.PathType == networkingv1.PathTypeExact:
				rule.Path = PathMatch{Type: PathExact, Value: value}
			default: // Prefix, and ImplementationSpecific taken as Prefix
				rule.Path = PathMatch{Type: PathPrefix, Value: value}
			}
			if !strings.HasPrefix(value, "/") {
				b.event(kindIngress, ing, "InvalidPath", fmt.Sprintf("path %q does not start with /", value))
				continue
			}
			if be := b.ingressBackend(ing, &p.Backend); be != nil {
				add(host, rule, be)
			}
		}
	}
}

// ingressBackend resolves an Ingress backend; an unresolved Service is
// kept (answering 500) and reported.
func (b *builder) ingressBackend(ing *networkingv1.Ingress, ib *networkingv1.IngressBackend) *Backend {
	if ib.Service == nil {
		b.event(kindIngress, ing, "UnsupportedBackend", "resource backends are not supported")
		return nil
	}
	be, reason := b.backend(ing.Namespace, ib.Service.Name, ib.Service.Port.Number, ib.Service.Port.Name)
	if reason != "" {
		b.event(kindIngress, ing, reason, be.Invalid)
	}
	return be
}
