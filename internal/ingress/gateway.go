package ingress

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

const (
	gatewayGroup = gatewayv1.GroupName
	kindGateway  = "Gateway"
	kindHTTP     = "HTTPRoute"
)

// gwListener is a Gateway listener being evaluated.
type gwListener struct {
	gw   *gatewayv1.Gateway
	spec *gatewayv1.Listener
	host string

	// Accepted; when false, notAccepted is the reason.
	notAccepted, notAcceptedMsg string
	conflict                    string // HostnameConflict or ProtocolConflict
	refsReason, refsMsg         string // ResolvedRefs false reason
	kinds                       []gatewayv1.RouteGroupKind
	allowsHTTPRoute             bool
	certs                       []*Certificate
	port                        *portBuilder
	attached                    map[types.NamespacedName]bool
}

// usable: routes may attach.
func (l *gwListener) usable() bool { return l.notAccepted == "" && l.conflict == "" }

// programmed: the listener serves traffic.
func (l *gwListener) programmed() bool {
	return l.usable() && l.port != nil && l.allowsHTTPRoute && (l.spec.Protocol == gatewayv1.HTTPProtocolType || len(l.certs) > 0)
}

type gwState struct {
	gw        *gatewayv1.Gateway
	listeners []*gwListener
}

func (b *builder) gateways() {
	ours := map[string]bool{}
	for _, c := range b.in.GatewayClasses {
		if string(c.Spec.ControllerName) != b.cfg.GatewayController {
			continue
		}
		st := &gatewayv1.GatewayClassStatus{}
		if c.Spec.ParametersRef != nil {
			st.Conditions = append(st.Conditions, condition(string(gatewayv1.GatewayClassConditionStatusAccepted), false,
				string(gatewayv1.GatewayClassReasonInvalidParameters), "parametersRef is not supported", c.Generation))
			b.event("GatewayClass", c, string(gatewayv1.GatewayClassReasonInvalidParameters), "parametersRef is not supported")
		} else {
			ours[c.Name] = true
			st.Conditions = append(st.Conditions, condition(string(gatewayv1.GatewayClassConditionStatusAccepted), true,
				string(gatewayv1.GatewayClassReasonAccepted), "", c.Generation))
		}
		for _, f := range slices.Sorted(slices.Values(b.cfg.SupportedFeatures)) {
			st.SupportedFeatures = append(st.SupportedFeatures, gatewayv1.SupportedFeature{Name: gatewayv1.FeatureName(f)})
		}
		b.res.GatewayClasses[c.Name] = st
	}

	gws := slices.Clone(b.in.Gateways)
	slices.SortFunc(gws, func(x, y *gatewayv1.Gateway) int { return olderFirst(x, y) })
	gws = slices.DeleteFunc(gws, func(gw *gatewayv1.Gateway) bool { return !ours[string(gw.Spec.GatewayClassName)] })
	b.assignAddresses(gws)
	states := map[types.NamespacedName]*gwState{}
	var order []*gwState
	for _, gw := range gws {
		s := b.gatewayListeners(gw)
		states[nsName(gw)] = s
		order = append(order, s)
	}

	routes := slices.Clone(b.in.HTTPRoutes)
	slices.SortFunc(routes, func(x, y *gatewayv1.HTTPRoute) int { return olderFirst(x, y) })
	for _, r := range routes {
		b.httpRoute(r, states)
	}

	for _, s := range order {
		b.gatewayStatus(s)
	}
}

// gatewayListeners validates a Gateway's listeners and claims their ports.
func (b *builder) gatewayListeners(gw *gatewayv1.Gateway) *gwState {
	s := &gwState{gw: gw}
	for i := range gw.Spec.Listeners {
		spec := &gw.Spec.Listeners[i]
		l := &gwListener{gw: gw, spec: spec, attached: map[types.NamespacedName]bool{}}
		if spec.Hostname != nil {
			l.host = strings.ToLower(string(*spec.Hostname))
		}
		s.listeners = append(s.listeners, l)

		switch spec.Protocol {
		case gatewayv1.HTTPProtocolType, gatewayv1.HTTPSProtocolType:
		default:
			l.notAccepted = string(gatewayv1.ListenerReasonUnsupportedProtocol)
			l.notAcceptedMsg = fmt.Sprintf("protocol %s is not supported", spec.Protocol)
			l.kinds = []gatewayv1.RouteGroupKind{}
			continue
		}
		l.routeKinds()
		if spec.Protocol == gatewayv1.HTTPSProtocolType {
			b.listenerCerts(l)
		}
	}

	// Conflicts within the Gateway: one protocol per port, one listener
	// per port and hostname.
	for _, l := range s.listeners {
		if l.notAccepted != "" {
			continue
		}
		for _, o := range s.listeners {
			if o == l || o.notAccepted != "" || o.spec.Port != l.spec.Port {
				continue
			}
			if o.spec.Protocol != l.spec.Protocol {
				l.conflict = string(gatewayv1.ListenerReasonProtocolConflict)
				break
			}
			if o.host == l.host {
				l.conflict = string(gatewayv1.ListenerReasonHostnameConflict)
			}
		}
	}

	// Ports shared with other Gateways and Ingresses: the first claim
	// sets the protocol.
	for _, l := range s.listeners {
		if !l.usable() || b.noAddress[nsName(gw)] != "" {
			continue
		}
		pb, msg := b.claimPort(b.gatewayAddresses(gw), l.spec.Port, Protocol(l.spec.Protocol), "Gateway "+nsName(gw).String())
		if pb == nil {
			l.notAccepted = string(gatewayv1.ListenerReasonPortUnavailable)
			l.notAcceptedMsg = msg
			continue
		}
		l.port = pb
		for _, c := range l.certs {
			pb.addCert(c)
		}
		if l.programmed() {
			k := nsName(gw)
			pb.gwHosts[k] = append(pb.gwHosts[k], l.host)
		}
	}
	return s
}

// routeKinds sets the listener's supported kinds from allowedRoutes.kinds.
func (l *gwListener) routeKinds() {
	var ar *gatewayv1.AllowedRoutes = l.spec.AllowedRoutes
	if ar == nil || len(ar.Kinds) == 0 {
		g := gatewayv1.Group(gatewayGroup)
		l.kinds = []gatewayv1.RouteGroupKind{{Group: &g, Kind: kindHTTP}}
		l.allowsHTTPRoute = true
		return
	}
	l.kinds = []gatewayv1.RouteGroupKind{}
	for _, k := range ar.Kinds {
		if (k.Group == nil || *k.Group == gatewayGroup) && k.Kind == kindHTTP {
			if !l.allowsHTTPRoute {
				g := gatewayv1.Group(gatewayGroup)
				l.kinds = append(l.kinds, gatewayv1.RouteGroupKind{Group: &g, Kind: kindHTTP})
			}
			l.allowsHTTPRoute = true
			continue
		}
		g := ""
		if k.Group != nil {
			g = string(*k.Group)
		}
		l.refsReason = string(gatewayv1.ListenerReasonInvalidRouteKinds)
		l.refsMsg = fmt.Sprintf("route kind %s/%s is not supported", g, k.Kind)
	}
}

// listenerCerts resolves an HTTPS listener's certificateRefs.
func (b *builder) listenerCerts(l *gwListener) {
	tc := l.spec.TLS
	if tc == nil || (tc.Mode != nil && *tc.Mode != gatewayv1.TLSModeTerminate) {
		l.notAccepted = string(gatewayv1.ListenerReasonUnsupportedValue)
		l.notAcceptedMsg = "HTTPS listeners need tls.mode Terminate"
		return
	}
	for _, ref := range tc.CertificateRefs {
		ns := l.gw.Namespace
		if ref.Namespace != nil {
			ns = string(*ref.Namespace)
		}
		k := types.NamespacedName{Namespace: ns, Name: string(ref.Name)}
		group, kind := "", "Secret"
		if ref.Group != nil {
			group = string(*ref.Group)
		}
		if ref.Kind != nil {
			kind = string(*ref.Kind)
		}
		switch {
		case coreGroup(group) != "" || kind != "Secret":
			l.refsReason = string(gatewayv1.ListenerReasonInvalidCertificateRef)
			l.refsMsg = fmt.Sprintf("certificateRef %s/%s %s: only Secrets are supported", group, kind, k)
		case !b.granted(gatewayGroup, kindGateway, l.gw.Namespace, "", "Secret", ns, k.Name):
			l.refsReason = string(gatewayv1.ListenerReasonRefNotPermitted)
			l.refsMsg = fmt.Sprintf("Secret %s is not granted to Gateways of namespace %s by a ReferenceGrant", k, l.gw.Namespace)
		default:
			r := b.certificate(k)
			if r.err != "" {
				l.refsReason = string(gatewayv1.ListenerReasonInvalidCertificateRef)
				l.refsMsg = r.err
				continue
			}
			l.certs = append(l.certs, &Certificate{Hostname: l.host, Secret: k, Cert: r.cert})
		}
	}
	if len(tc.CertificateRefs) == 0 {
		l.refsReason = string(gatewayv1.ListenerReasonInvalidCertificateRef)
		l.refsMsg = "an HTTPS listener needs a certificateRef"
	}
}

// allowsNamespace tells whether the listener accepts routes from ns.
func (b *builder) allowsNamespace(l *gwListener, ns string) bool {
	from := gatewayv1.NamespacesFromSame
	var sel *metav1.LabelSelector
	if ar := l.spec.AllowedRoutes; ar != nil && ar.Namespaces != nil {
		if ar.Namespaces.From != nil {
			from = *ar.Namespaces.From
		}
		sel = ar.Namespaces.Selector
	}
	switch from {
	case gatewayv1.NamespacesFromAll:
		return true
	case gatewayv1.NamespacesFromSame:
		return ns == l.gw.Namespace
	case gatewayv1.NamespacesFromSelector:
		if sel == nil {
			return false
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		n := b.namespaces[ns]
		return err == nil && n != nil && s.Matches(labels.Set(n.Labels))
	}
	return false
}

// httpRoute attaches a route to the listeners its parentRefs select and
// records the status of each of our parents.
func (b *builder) httpRoute(r *gatewayv1.HTTPRoute, states map[types.NamespacedName]*gwState) {
	key := nsName(r)
	var compiled *compiledRoute
	for _, pr := range r.Spec.ParentRefs {
		if (pr.Group != nil && *pr.Group != gatewayGroup) || (pr.Kind != nil && *pr.Kind != kindGateway) {
			continue
		}
		ns := r.Namespace
		if pr.Namespace != nil {
			ns = string(*pr.Namespace)
		}
		s := states[types.NamespacedName{Namespace: ns, Name: string(pr.Name)}]
		if s == nil {
			continue // not a Gateway of ours
		}
		if compiled == nil {
			compiled = b.compileHTTPRoute(r)
		}
		ps := gatewayv1.RouteParentStatus{ParentRef: pr, ControllerName: gatewayv1.GatewayController(b.cfg.GatewayController)}

		var candidates []*gwListener
		for _, l := range s.listeners {
			if (pr.SectionName == nil || *pr.SectionName == l.spec.Name) && (pr.Port == nil || *pr.Port == l.spec.Port) {
				candidates = append(candidates, l)
			}
		}
		reason, msg := "", ""
		accepted := false
		var attachTo []*gwListener
		if len(candidates) == 0 {
			reason, msg = string(gatewayv1.RouteReasonNoMatchingParent), "no listener matches the parentRef's sectionName and port"
		} else {
			allowed := false
			for _, l := range candidates {
				if !l.usable() || !l.allowsHTTPRoute || !b.allowsNamespace(l, r.Namespace) {
					continue
				}
				allowed = true
				hosts := routeHosts(l.host, r.Spec.Hostnames)
				if len(hosts) == 0 {
					continue
				}
				accepted = true
				attachTo = append(attachTo, l)
				if l.programmed() {
					compiled.addTo(l.port, hosts, listenerScope{gateway: nsName(s.gw), hostname: l.host})
				}
			}
			switch {
			case !allowed:
				reason, msg = string(gatewayv1.RouteReasonNotAllowedByListeners), "no listener of the parent allows this route"
			case !accepted:
				reason, msg = string(gatewayv1.RouteReasonNoMatchingListenerHostname), "no hostname of the route intersects a listener's"
			}
		}
		if accepted && len(compiled.rules) == 0 && compiled.invalid != "" {
			accepted = false
			reason, msg = compiled.invalid, compiled.invalidMsg
		}
		if accepted {
			for _, l := range attachTo {
				l.attached[key] = true
			}
			ps.Conditions = append(ps.Conditions, condition(string(gatewayv1.RouteConditionAccepted), true, string(gatewayv1.RouteReasonAccepted), "", r.Generation))
		} else {
			ps.Conditions = append(ps.Conditions, condition(string(gatewayv1.RouteConditionAccepted), false, reason, msg, r.Generation))
			if reason != compiled.invalid {
				b.event(kindHTTP, r, reason, msg)
			}
		}
		if compiled.refsReason != "" {
			ps.Conditions = append(ps.Conditions, condition(string(gatewayv1.RouteConditionResolvedRefs), false, compiled.refsReason, compiled.refsMsg, r.Generation))
		} else {
			ps.Conditions = append(ps.Conditions, condition(string(gatewayv1.RouteConditionResolvedRefs), true, string(gatewayv1.RouteReasonResolvedRefs), "", r.Generation))
		}
		if accepted && compiled.invalid != "" {
			ps.Conditions = append(ps.Conditions, condition(string(gatewayv1.RouteConditionPartiallyInvalid), true, compiled.invalid, compiled.invalidMsg, r.Generation))
		}
		b.res.HTTPRoutes[key] = append(b.res.HTTPRoutes[key], ps)
	}
	if compiled != nil {
		if compiled.refsReason != "" {
			b.event(kindHTTP, r, compiled.refsReason, compiled.refsMsg)
		}
		if compiled.invalid != "" {
			b.event(kindHTTP, r, compiled.invalid, compiled.invalidMsg)
		}
	}
}

// routeHosts are the hostnames a route answers for on a listener: the
// intersection of its hostnames with the listener's, or the listener's
// when it names none. Empty: they do not intersect.
func routeHosts(listener string, hostnames []gatewayv1.Hostname) []string {
	if len(hostnames) == 0 {
		return []string{listener}
	}
	var out []string
	for _, h := range hostnames {
		if i, ok := intersect(listener, strings.ToLower(string(h))); ok && !slices.Contains(out, i) {
			out = append(out, i)
		}
	}
	return out
}

func (b *builder) gatewayStatus(s *gwState) {
	gw := s.gw
	st := &gatewayv1.GatewayStatus{}
	addrs := b.gatewayAddresses(gw)
	noAddress := b.noAddress[nsName(gw)]
	if addrs == nil && noAddress == "" {
		addrs = b.cfg.Addresses
	}
	for _, a := range addrs {
		t := gatewayv1.IPAddressType
		if !isIP(a) {
			t = gatewayv1.HostnameAddressType
		}
		st.Addresses = append(st.Addresses, gatewayv1.GatewayStatusAddress{Type: &t, Value: a})
	}
	valid, programmed := 0, 0
	for _, l := range s.listeners {
		ls := gatewayv1.ListenerStatus{Name: l.spec.Name, SupportedKinds: l.kinds, AttachedRoutes: int32(len(l.attached))}
		gen := gw.Generation
		switch {
		case l.notAccepted != "":
			ls.Conditions = append(ls.Conditions, condition(string(gatewayv1.ListenerConditionAccepted), false, l.notAccepted, l.notAcceptedMsg, gen))
		case l.conflict != "":
			ls.Conditions = append(ls.Conditions, condition(string(gatewayv1.ListenerConditionAccepted), false, l.conflict, "another listener of the Gateway conflicts", gen))
		default:
			valid++
			ls.Conditions = append(ls.Conditions, condition(string(gatewayv1.ListenerConditionAccepted), true, string(gatewayv1.ListenerReasonAccepted), "", gen))
		}
		if l.conflict != "" {
			ls.Conditions = append(ls.Conditions, condition(string(gatewayv1.ListenerConditionConflicted), true, l.conflict, "another listener of the Gateway conflicts", gen))
		} else {
			ls.Conditions = append(ls.Conditions, condition(string(gatewayv1.ListenerConditionConflicted), false, string(gatewayv1.ListenerReasonNoConflicts), "", gen))
		}
		if l.refsReason != "" {
			ls.Conditions = append(ls.Conditions, condition(string(gatewayv1.ListenerConditionResolvedRefs), false, l.refsReason, l.refsMsg, gen))
			b.event(kindGateway, gw, l.refsReason, fmt.Sprintf("listener %s: %s", l.spec.Name, l.refsMsg))
		} else {
			ls.Conditions = append(ls.Conditions, condition(string(gatewayv1.ListenerConditionResolvedRefs), true, string(gatewayv1.ListenerReasonResolvedRefs), "", gen))
		}
		if l.programmed() {
			programmed++
			ls.Conditions = append(ls.Conditions, condition(string(gatewayv1.ListenerConditionProgrammed), true, string(gatewayv1.ListenerReasonProgrammed), "", gen))
		} else {
			ls.Conditions = append(ls.Conditions, condition(string(gatewayv1.ListenerConditionProgrammed), false, string(gatewayv1.ListenerReasonInvalid), "the listener is not served", gen))
			if l.notAccepted != "" || l.conflict != "" {
				b.event(kindGateway, gw, cmpOr(l.notAccepted, l.conflict), fmt.Sprintf("listener %s: %s", l.spec.Name, cmpOr(l.notAcceptedMsg, "another listener of the Gateway conflicts")))
			}
		}
		st.Listeners = append(st.Listeners, ls)
	}
	switch {
	case valid == len(s.listeners):
		st.Conditions = append(st.Conditions, condition(string(gatewayv1.GatewayConditionAccepted), true, string(gatewayv1.GatewayReasonAccepted), "", gw.Generation))
	case valid > 0:
		st.Conditions = append(st.Conditions, condition(string(gatewayv1.GatewayConditionAccepted), true, string(gatewayv1.GatewayReasonListenersNotValid), "some listeners are not valid", gw.Generation))
	default:
		st.Conditions = append(st.Conditions, condition(string(gatewayv1.GatewayConditionAccepted), false, string(gatewayv1.GatewayReasonListenersNotValid), "no listener is valid", gw.Generation))
	}
	switch {
	case noAddress != "":
		st.Conditions = append(st.Conditions, condition(string(gatewayv1.GatewayConditionProgrammed), false, string(gatewayv1.GatewayReasonAddressNotAssigned), noAddress, gw.Generation))
		b.event(kindGateway, gw, string(gatewayv1.GatewayReasonAddressNotAssigned), noAddress)
	case len(addrs) == 0:
		st.Conditions = append(st.Conditions, condition(string(gatewayv1.GatewayConditionProgrammed), false, string(gatewayv1.GatewayReasonAddressNotAssigned), "no node address is known", gw.Generation))
	case programmed == 0:
		st.Conditions = append(st.Conditions, condition(string(gatewayv1.GatewayConditionProgrammed), false, string(gatewayv1.GatewayReasonInvalid), "no listener is served", gw.Generation))
	default:
		st.Conditions = append(st.Conditions, condition(string(gatewayv1.GatewayConditionProgrammed), true, string(gatewayv1.GatewayReasonProgrammed), "", gw.Generation))
	}
	b.res.Gateways[nsName(gw)] = st
}

// gatewayAddresses are the addresses a Gateway has alone, sorted, or nil.
func (b *builder) gatewayAddresses(gw *gatewayv1.Gateway) []string {
	a := b.cfg.GatewayAddresses[nsName(gw)]
	if len(a) == 0 {
		return nil
	}
	a = slices.Clone(a)
	slices.Sort(a)
	return a
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
