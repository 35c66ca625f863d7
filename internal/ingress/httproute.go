package ingress

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// compiledRoute is an HTTPRoute's rules, ready to be added to the hosts it
// answers for on each listener it attaches to.
type compiledRoute struct {
	rules []*Rule
	// scoped are the rules' copies for each Gateway listener they come
	// through.
	scoped map[listenerScope][]*Rule
	// refsReason: the first backend reference that did not resolve.
	refsReason, refsMsg string
	// invalid: the first rule dropped and why.
	invalid, invalidMsg string
}

// addTo adds the rules to the hosts of a port, as rules of a listener.
func (c *compiledRoute) addTo(pb *portBuilder, hosts []string, scope listenerScope) {
	rules, ok := c.scoped[scope]
	if !ok {
		sc := &scope
		for _, r := range c.rules {
			cp := *r
			cp.scope = sc
			rules = append(rules, &cp)
		}
		if c.scoped == nil {
			c.scoped = map[listenerScope][]*Rule{}
		}
		c.scoped[scope] = rules
	}
	for _, h := range hosts {
		for _, r := range rules {
			pb.addRule(h, r)
		}
	}
}

func (b *builder) compileHTTPRoute(r *gatewayv1.HTTPRoute) *compiledRoute {
	c := &compiledRoute{}
	ref := RouteRef{Kind: kindHTTP, Namespace: r.Namespace, Name: r.Name}
	for i := range r.Spec.Rules {
		spec := &r.Spec.Rules[i]
		rules, reason, msg := b.compileRule(r, ref, i, spec, c)
		if reason != "" {
			if c.invalid == "" {
				c.invalid, c.invalidMsg = reason, fmt.Sprintf("rule %d: %s", i, msg)
			}
			continue
		}
		c.rules = append(c.rules, rules...)
	}
	return c
}

// compileRule is one rule's matches sharing one action, or why the rule
// cannot be served.
func (b *builder) compileRule(r *gatewayv1.HTTPRoute, ref RouteRef, index int, spec *gatewayv1.HTTPRouteRule, c *compiledRoute) ([]*Rule, string, string) {
	unsupported := string(gatewayv1.RouteReasonUnsupportedValue)
	act := &Action{}
	if reason, msg := b.filters(r, spec.Filters, act, false, c); reason != "" {
		return nil, reason, msg
	}
	for _, br := range spec.BackendRefs {
		be, reason := b.backendRef(r, br.BackendObjectReference)
		if reason != "" && c.refsReason == "" {
			c.refsReason, c.refsMsg = reason, be.Invalid
		}
		be.Weight = 1
		if br.Weight != nil {
			be.Weight = *br.Weight
		}
		if len(br.Filters) > 0 {
			bact := &Action{}
			if reason, msg := b.filters(r, br.Filters, bact, true, c); reason != "" {
				return nil, reason, msg
			}
			be.RequestHeaders = bact.RequestHeaders
		}
		act.Backends = append(act.Backends, be)
	}
	if t := spec.Timeouts; t != nil {
		var err error
		if t.Request != nil {
			if act.Timeouts.Request, err = parseDuration(*t.Request); err != nil {
				return nil, unsupported, "timeouts.request: " + err.Error()
			}
		}
		if t.BackendRequest != nil {
			if act.Timeouts.BackendRequest, err = parseDuration(*t.BackendRequest); err != nil {
				return nil, unsupported, "timeouts.backendRequest: " + err.Error()
			}
		}
		if act.Timeouts.Request > 0 && act.Timeouts.BackendRequest > act.Timeouts.Request {
			return nil, unsupported, "timeouts.backendRequest is longer than timeouts.request"
		}
	}
	if rt := spec.Retry; rt != nil {
		act.Retry = &Retry{}
		for _, code := range rt.Codes {
			act.Retry.Codes = append(act.Retry.Codes, int(code))
		}
		if rt.Attempts != nil {
			act.Retry.Attempts = *rt.Attempts
		}
		if rt.Backoff != nil {
			d, err := parseDuration(*rt.Backoff)
			if err != nil {
				return nil, unsupported, "retry.backoff: " + err.Error()
			}
			act.Retry.Backoff = d
		}
	}
	if spec.SessionPersistence != nil {
		return nil, unsupported, "sessionPersistence is not supported"
	}

	matches := spec.Matches
	if len(matches) == 0 {
		matches = []gatewayv1.HTTPRouteMatch{{}}
	}
	name := ""
	if spec.Name != nil {
		name = string(*spec.Name)
	}
	var out []*Rule
	for j := range matches {
		rule := &Rule{Route: ref, RuleIndex: index, MatchIndex: j, RuleName: name, Action: act, created: r.CreationTimestamp.Time}
		if msg := compileMatch(&matches[j], rule); msg != "" {
			return nil, unsupported, fmt.Sprintf("match %d: %s", j, msg)
		}
		if prefixModifier(act) && rule.Path.Type != PathPrefix {
			return nil, unsupported, "ReplacePrefixMatch needs PathPrefix matches"
		}
		out = append(out, rule)
	}
	return out, "", ""
}

func prefixModifier(a *Action) bool {
	return a.Redirect != nil && a.Redirect.Path != nil && a.Redirect.Path.Type == ReplacePrefixMatch ||
		a.Rewrite != nil && a.Rewrite.Path != nil && a.Rewrite.Path.Type == ReplacePrefixMatch
}

// compileMatch fills the match fields of rule; a message says why the
// match is not supported.
func compileMatch(m *gatewayv1.HTTPRouteMatch, rule *Rule) string {
	rule.Path = PathMatch{Type: PathPrefix, Value: "/"}
	if p := m.Path; p != nil {
		if p.Type != nil {
			rule.Path.Type = PathType(*p.Type)
		}
		if p.Value != nil {
			rule.Path.Value = *p.Value
		}
		switch rule.Path.Type {
		case PathExact, PathPrefix:
			if !strings.HasPrefix(rule.Path.Value, "/") {
				return fmt.Sprintf("path %q does not start with /", rule.Path.Value)
			}
		case PathRegex:
			re, err := compileAnchored(rule.Path.Value)
			if err != nil {
				return "path: " + err.Error()
			}
			rule.Path.re = re
		default:
			return fmt.Sprintf("path match type %q is not supported", rule.Path.Type)
		}
	}
	if m.Method != nil {
		rule.Method = string(*m.Method)
	}
	// Only the first of several matches on one name counts, as the
	// specification requires (header names compared case-insensitively).
	for _, h := range m.Headers {
		name := http.CanonicalHeaderKey(string(h.Name))
		if slices.ContainsFunc(rule.Headers, func(v ValueMatch) bool { return v.Name == name }) {
			continue
		}
		v := ValueMatch{Name: name, Value: h.Value}
		if h.Type != nil && *h.Type == gatewayv1.HeaderMatchRegularExpression {
			re, err := compileAnchored(h.Value)
			if err != nil {
				return "header " + name + ": " + err.Error()
			}
			v.re = re
		} else if h.Type != nil && *h.Type != gatewayv1.HeaderMatchExact {
			return fmt.Sprintf("header match type %q is not supported", *h.Type)
		}
		rule.Headers = append(rule.Headers, v)
	}
	for _, q := range m.QueryParams {
		name := string(q.Name)
		if slices.ContainsFunc(rule.QueryParams, func(v ValueMatch) bool { return v.Name == name }) {
			continue
		}
		v := ValueMatch{Name: name, Value: q.Value}
		if q.Type != nil && *q.Type == gatewayv1.QueryParamMatchRegularExpression {
			re, err := compileAnchored(q.Value)
			if err != nil {
				return "query parameter " + name + ": " + err.Error()
			}
			v.re = re
		} else if q.Type != nil && *q.Type != gatewayv1.QueryParamMatchExact {
			return fmt.Sprintf("query parameter match type %q is not supported", *q.Type)
		}
		rule.QueryParams = append(rule.QueryParams, v)
	}
	return ""
}

// compileAnchored compiles an RE2 expression that must match the whole
// value, as Envoy-based implementations do.
func compileAnchored(expr string) (*regexp.Regexp, error) {
	if _, err := regexp.Compile(expr); err != nil {
		return nil, err
	}
	return regexp.Compile("^(?:" + expr + ")$")
}

// filters compiles a rule's (or a backend's) filters into act.
func (b *builder) filters(r *gatewayv1.HTTPRoute, fs []gatewayv1.HTTPRouteFilter, act *Action, backendLevel bool, c *compiledRoute) (string, string) {
	unsupported := string(gatewayv1.RouteReasonUnsupportedValue)
	for _, f := range fs {
		if backendLevel && f.Type != gatewayv1.HTTPRouteFilterRequestHeaderModifier {
			return unsupported, fmt.Sprintf("filter %s is not supported on a backendRef", f.Type)
		}
		switch f.Type {
		case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
			if act.RequestHeaders != nil || f.RequestHeaderModifier == nil {
				return unsupported, "one RequestHeaderModifier filter with its settings is allowed"
			}
			act.RequestHeaders = headerModifier(f.RequestHeaderModifier)
		case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
			if act.ResponseHeaders != nil || f.ResponseHeaderModifier == nil {
				return unsupported, "one ResponseHeaderModifier filter with its settings is allowed"
			}
			act.ResponseHeaders = headerModifier(f.ResponseHeaderModifier)
		case gatewayv1.HTTPRouteFilterRequestRedirect:
			rd := f.RequestRedirect
			if act.Redirect != nil || rd == nil {
				return unsupported, "one RequestRedirect filter with its settings is allowed"
			}
			act.Redirect = &Redirect{StatusCode: http.StatusFound}
			if rd.Scheme != nil {
				if *rd.Scheme != "http" && *rd.Scheme != "https" {
					return unsupported, fmt.Sprintf("redirect scheme %q is not supported", *rd.Scheme)
				}
				act.Redirect.Scheme = *rd.Scheme
			}
			if rd.Hostname != nil {
				act.Redirect.Hostname = string(*rd.Hostname)
			}
			if rd.Port != nil {
				act.Redirect.Port = *rd.Port
			}
			if rd.StatusCode != nil {
				switch *rd.StatusCode {
				case 301, 302, 303, 307, 308:
					act.Redirect.StatusCode = *rd.StatusCode
				default:
					return unsupported, fmt.Sprintf("redirect status code %d is not supported", *rd.StatusCode)
				}
			}
			if rd.Path != nil {
				pm, msg := pathModifier(rd.Path)
				if msg != "" {
					return unsupported, "redirect: " + msg
				}
				act.Redirect.Path = pm
			}
		case gatewayv1.HTTPRouteFilterURLRewrite:
			rw := f.URLRewrite
			if act.Rewrite != nil || rw == nil {
				return unsupported, "one URLRewrite filter with its settings is allowed"
			}
			act.Rewrite = &Rewrite{}
			if rw.Hostname != nil {
				act.Rewrite.Hostname = string(*rw.Hostname)
			}
			if rw.Path != nil {
				pm, msg := pathModifier(rw.Path)
				if msg != "" {
					return unsupported, "urlRewrite: " + msg
				}
				act.Rewrite.Path = pm
			}
		case gatewayv1.HTTPRouteFilterRequestMirror:
			m := f.RequestMirror
			if m == nil {
				return unsupported, "RequestMirror filter without settings"
			}
			be, reason := b.backendRef(r, m.BackendRef)
			if reason != "" {
				if c.refsReason == "" {
					c.refsReason, c.refsMsg = reason, "mirror: "+be.Invalid
				}
				continue // a mirror that cannot be resolved is left out
			}
			mi := &Mirror{Backend: be, Numerator: 1, Denominator: 1}
			switch {
			case m.Fraction != nil:
				mi.Numerator, mi.Denominator = m.Fraction.Numerator, 100
				if m.Fraction.Denominator != nil {
					mi.Denominator = *m.Fraction.Denominator
				}
				if mi.Denominator <= 0 || mi.Numerator < 0 || mi.Numerator > mi.Denominator {
					return unsupported, "mirror fraction out of range"
				}
			case m.Percent != nil:
				mi.Numerator, mi.Denominator = *m.Percent, 100
			}
			act.Mirrors = append(act.Mirrors, mi)
		default:
			return unsupported, fmt.Sprintf("filter %s is not supported", f.Type)
		}
	}
	if act.Redirect != nil && act.Rewrite != nil {
		return string(gatewayv1.RouteReasonIncompatibleFilters), "RequestRedirect and URLRewrite cannot be on one rule"
	}
	return "", ""
}

func pathModifier(p *gatewayv1.HTTPPathModifier) (*PathModifier, string) {
	switch p.Type {
	case gatewayv1.FullPathHTTPPathModifier:
		if p.ReplaceFullPath == nil {
			return nil, "ReplaceFullPath without a value"
		}
		return &PathModifier{Type: ReplaceFullPath, Value: *p.ReplaceFullPath}, ""
	case gatewayv1.PrefixMatchHTTPPathModifier:
		if p.ReplacePrefixMatch == nil {
			return nil, "ReplacePrefixMatch without a value"
		}
		return &PathModifier{Type: ReplacePrefixMatch, Value: *p.ReplacePrefixMatch}, ""
	}
	return nil, fmt.Sprintf("path modifier %q is not supported", p.Type)
}

func headerModifier(f *gatewayv1.HTTPHeaderFilter) *HeaderModifier {
	m := &HeaderModifier{}
	for _, h := range f.Set {
		m.Set = append(m.Set, Header{Name: http.CanonicalHeaderKey(string(h.Name)), Value: h.Value})
	}
	for _, h := range f.Add {
		m.Add = append(m.Add, Header{Name: http.CanonicalHeaderKey(string(h.Name)), Value: h.Value})
	}
	for _, h := range f.Remove {
		m.Remove = append(m.Remove, http.CanonicalHeaderKey(h))
	}
	return m
}

// backendRef resolves a Gateway API backend reference.
func (b *builder) backendRef(r *gatewayv1.HTTPRoute, ref gatewayv1.BackendObjectReference) (*Backend, string) {
	group, kind := "", "Service"
	if ref.Group != nil {
		group = string(*ref.Group)
	}
	if ref.Kind != nil {
		kind = string(*ref.Kind)
	}
	ns := r.Namespace
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	var port int32
	if ref.Port != nil {
		port = *ref.Port
	}
	be := &Backend{Service: nsNameOf(ns, string(ref.Name)), Port: port, Weight: 1}
	switch {
	case coreGroup(group) != "" || kind != "Service":
		be.Invalid = fmt.Sprintf("backend kind %s/%s is not supported", group, kind)
		return be, string(gatewayv1.RouteReasonInvalidKind)
	case !b.granted(gatewayGroup, kindHTTP, r.Namespace, "", "Service", ns, string(ref.Name)):
		be.Invalid = fmt.Sprintf("Service %s is not granted to HTTPRoutes of namespace %s by a ReferenceGrant", be.Service, r.Namespace)
		return be, string(gatewayv1.RouteReasonRefNotPermitted)
	case ref.Port == nil:
		be.Invalid = "a Service backendRef needs a port"
		return be, string(gatewayv1.RouteReasonUnsupportedValue)
	}
	return b.backend(ns, string(ref.Name), port, "")
}
