package ingress

import (
	"cmp"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// Defaults of Config.
const (
	DefaultGatewayController = "skiff.dev/gateway-controller"
	DefaultIngressController = "skiff.dev/ingress-controller"
	DefaultHTTPPort          = 80
	DefaultHTTPSPort         = 443
)

// Config is what the table depends on besides the objects.
type Config struct {
	// GatewayController is the controllerName of the GatewayClasses this
	// node serves.
	GatewayController string
	// IngressController is the spec.controller of the IngressClasses this
	// node serves.
	IngressController string
	// HTTPPort and HTTPSPort serve Ingresses; 0 serves none on that scheme.
	HTTPPort, HTTPSPort int32
	// Addresses of the nodes, written to Gateway and Ingress status.
	Addresses []string
	// UnavailablePorts are ports the node could not open, with why. Their
	// Gateway listeners are not accepted (PortUnavailable).
	UnavailablePorts map[int32]string
	// GatewayAddresses are addresses the node serves some Gateways on
	// alone, so that Gateways with the same ports route apart. A Gateway
	// not in the map shares the node's addresses (Addresses) with every
	// other such Gateway and with Ingresses.
	GatewayAddresses map[types.NamespacedName][]string
	// AddressPool, when GatewayAddresses is nil, gives each of our
	// Gateways an address of its own (see addresses.go), ascending.
	AddressPool []netip.Addr
	// SupportedFeatures are the Gateway API features (conformance names)
	// the node serves, written to our GatewayClasses' status.
	SupportedFeatures []string
}

// Input is every object the table is computed from. Build never modifies
// them.
type Input struct {
	IngressClasses  []*networkingv1.IngressClass
	Ingresses       []*networkingv1.Ingress
	GatewayClasses  []*gatewayv1.GatewayClass
	Gateways        []*gatewayv1.Gateway
	HTTPRoutes      []*gatewayv1.HTTPRoute
	ReferenceGrants []*gatewayv1beta1.ReferenceGrant
	Services        []*corev1.Service
	EndpointSlices  []*discoveryv1.EndpointSlice
	Secrets         []*corev1.Secret
	// Namespaces are needed for listeners whose allowedRoutes select
	// namespaces by label.
	Namespaces []*corev1.Namespace
}

// Result is the table and the status every object should show. Conditions
// carry the object's generation and no transition time: the writer keeps
// the time of a condition whose status did not change.
type Result struct {
	Table *Table
	// GatewayClasses whose controllerName is ours, by name.
	GatewayClasses map[string]*gatewayv1.GatewayClassStatus
	// Gateways of those classes.
	Gateways map[types.NamespacedName]*gatewayv1.GatewayStatus
	// HTTPRoutes: the parent entries for our Gateways only; the writer
	// keeps the entries of other controllers.
	HTTPRoutes map[types.NamespacedName][]gatewayv1.RouteParentStatus
	// Ingresses served by us.
	Ingresses map[types.NamespacedName]*networkingv1.IngressStatus
	// Events explain why an object, or part of it, is not served.
	Events []Event
}

// Event is a warning about an object.
type Event struct {
	Kind      string
	Namespace string
	Name      string
	Reason    string
	Message   string
}

// Build computes the routing table and the status of every object.
func Build(cfg Config, in *Input) *Result {
	b := newBuilder(cfg, in)
	b.reserveIngressPorts()
	b.gateways()
	b.ingresses()
	b.res.Table = b.table()
	sort.Slice(b.res.Events, func(i, j int) bool {
		x, y := b.res.Events[i], b.res.Events[j]
		return fmt.Sprint(x.Kind, x.Namespace, x.Name, x.Reason, x.Message) < fmt.Sprint(y.Kind, y.Namespace, y.Name, y.Reason, y.Message)
	})
	b.res.Events = slices.Compact(b.res.Events)
	return b.res
}

type builder struct {
	cfg        Config
	in         *Input
	services   map[types.NamespacedName]*corev1.Service
	slices     map[types.NamespacedName][]*discoveryv1.EndpointSlice
	secrets    map[types.NamespacedName]*corev1.Secret
	namespaces map[string]*corev1.Namespace
	grants     map[string][]*gatewayv1beta1.ReferenceGrant // by namespace
	certs      map[types.NamespacedName]certResult
	ports      map[portKey]*portBuilder
	ing        ingressPorts
	res        *Result
	// noAddress: Gateways the pool gave no address, with why.
	noAddress map[types.NamespacedName]string
}

// portKey is a port on the node's addresses (addrs "") or on addresses
// of its own (joined with ",").
type portKey struct {
	addrs string
	port  int32
}

type portBuilder struct {
	addrs    []string
	port     int32
	protocol Protocol
	owner    string // what claimed the port first, for messages
	hosts    map[string]*Host
	seen     map[string]map[*Rule]bool
	certs    map[string]*Certificate
	gwHosts  map[types.NamespacedName][]string // hostnames of each Gateway's listeners
}

type certResult struct {
	cert *tls.Certificate
	err  string
}

func newBuilder(cfg Config, in *Input) *builder {
	if cfg.GatewayController == "" {
		cfg.GatewayController = DefaultGatewayController
	}
	if cfg.IngressController == "" {
		cfg.IngressController = DefaultIngressController
	}
	b := &builder{
		cfg: cfg, in: in,
		services:   map[types.NamespacedName]*corev1.Service{},
		slices:     map[types.NamespacedName][]*discoveryv1.EndpointSlice{},
		secrets:    map[types.NamespacedName]*corev1.Secret{},
		namespaces: map[string]*corev1.Namespace{},
		grants:     map[string][]*gatewayv1beta1.ReferenceGrant{},
		certs:      map[types.NamespacedName]certResult{},
		ports:      map[portKey]*portBuilder{},
		res: &Result{
			GatewayClasses: map[string]*gatewayv1.GatewayClassStatus{},
			Gateways:       map[types.NamespacedName]*gatewayv1.GatewayStatus{},
			HTTPRoutes:     map[types.NamespacedName][]gatewayv1.RouteParentStatus{},
			Ingresses:      map[types.NamespacedName]*networkingv1.IngressStatus{},
		},
	}
	for _, s := range in.Services {
		b.services[nsName(s)] = s
	}
	for _, s := range in.EndpointSlices {
		svc := s.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}
		k := types.NamespacedName{Namespace: s.Namespace, Name: svc}
		b.slices[k] = append(b.slices[k], s)
	}
	for _, s := range in.Secrets {
		b.secrets[nsName(s)] = s
	}
	for _, n := range in.Namespaces {
		b.namespaces[n.Name] = n
	}
	for _, g := range in.ReferenceGrants {
		b.grants[g.Namespace] = append(b.grants[g.Namespace], g)
	}
	return b
}

func nsName(o metav1.Object) types.NamespacedName {
	return types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}
}

func nsNameOf(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}

func isIP(s string) bool { return net.ParseIP(s) != nil }

// olderFirst orders objects by creation, then namespace/name: the order
// in which they claim what they compete for.
func olderFirst(a, b metav1.Object) int {
	if c := a.GetCreationTimestamp().Time.Compare(b.GetCreationTimestamp().Time); c != 0 {
		return c
	}
	return cmp.Compare(a.GetNamespace()+"/"+a.GetName(), b.GetNamespace()+"/"+b.GetName())
}

// claimPort reserves port for protocol on addrs (nil: the node's
// addresses); the message says why it cannot.
func (b *builder) claimPort(addrs []string, port int32, p Protocol, owner string) (*portBuilder, string) {
	// The node opens a port on every address at once: one it could not
	// open serves Gateways of their own addresses no more than others.
	if msg, ok := b.cfg.UnavailablePorts[port]; ok {
		return nil, fmt.Sprintf("port %d cannot be opened: %s", port, msg)
	}
	k := portKey{addrs: strings.Join(addrs, ","), port: port}
	pb := b.ports[k]
	if pb == nil {
		pb = &portBuilder{addrs: addrs, port: port, protocol: p, owner: owner, hosts: map[string]*Host{}, seen: map[string]map[*Rule]bool{}, certs: map[string]*Certificate{}, gwHosts: map[types.NamespacedName][]string{}}
		b.ports[k] = pb
		return pb, ""
	}
	if pb.protocol != p {
		return nil, fmt.Sprintf("port %d serves %s for %s", port, pb.protocol, pb.owner)
	}
	return pb, ""
}

// addRule adds r to a host once, however many listeners of the port
// attach its route.
func (pb *portBuilder) addRule(host string, r *Rule) {
	h := pb.hosts[host]
	if h == nil {
		h = &Host{Name: host}
		pb.hosts[host] = h
		pb.seen[host] = map[*Rule]bool{}
	}
	if !pb.seen[host][r] {
		pb.seen[host][r] = true
		h.Rules = append(h.Rules, r)
	}
}

// addCert offers c for its hostname unless an earlier object did.
func (pb *portBuilder) addCert(c *Certificate) {
	if _, ok := pb.certs[c.Hostname]; !ok {
		pb.certs[c.Hostname] = c
	}
}

func (b *builder) table() *Table {
	t := &Table{}
	for _, pb := range b.ports {
		l := &Listener{Addresses: pb.addrs, Port: pb.port, Protocol: pb.protocol, scopes: pb.gwHosts}
		for _, hs := range pb.gwHosts {
			sort.Slice(hs, func(i, j int) bool { return hostLess(hs[i], hs[j]) })
		}
		for _, h := range pb.hosts {
			slices.SortStableFunc(h.Rules, compareRules)
			l.Hosts = append(l.Hosts, h)
		}
		sort.Slice(l.Hosts, func(i, j int) bool { return hostLess(l.Hosts[i].Name, l.Hosts[j].Name) })
		for _, c := range pb.certs {
			l.Certificates = append(l.Certificates, c)
		}
		sort.Slice(l.Certificates, func(i, j int) bool {
			return hostLess(l.Certificates[i].Hostname, l.Certificates[j].Hostname)
		})
		t.Listeners = append(t.Listeners, l)
	}
	sort.Slice(t.Listeners, func(i, j int) bool {
		x, y := t.Listeners[i], t.Listeners[j]
		if x.Port != y.Port {
			return x.Port < y.Port
		}
		return strings.Join(x.Addresses, ",") < strings.Join(y.Addresses, ",")
	})
	return t
}

// compareRules orders the rules of a host by the HTTPRoute precedence:
// Exact path, then (an implementation's choice) regular expressions by
// length, then the longest prefix; a method match; most header matches;
// most query parameter matches; the oldest route; the route first by
// "namespace/name"; the first rule and match in the route. An Ingress
// default backend comes after every other rule.
func compareRules(a, b *Rule) int {
	if a.defaultBackend != b.defaultBackend {
		if a.defaultBackend {
			return 1
		}
		return -1
	}
	if c := cmp.Compare(pathRank(a.Path.Type), pathRank(b.Path.Type)); c != 0 {
		return c
	}
	if c := cmp.Compare(pathLen(b.Path), pathLen(a.Path)); c != 0 {
		return c
	}
	if c := boolFirst(a.Method != "", b.Method != ""); c != 0 {
		return c
	}
	if c := cmp.Compare(len(b.Headers), len(a.Headers)); c != 0 {
		return c
	}
	if c := cmp.Compare(len(b.QueryParams), len(a.QueryParams)); c != 0 {
		return c
	}
	if c := a.created.Compare(b.created); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Route.Namespace+"/"+a.Route.Name, b.Route.Namespace+"/"+b.Route.Name); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Route.Kind, b.Route.Kind); c != 0 {
		return c
	}
	if c := cmp.Compare(a.RuleIndex, b.RuleIndex); c != 0 {
		return c
	}
	return cmp.Compare(a.MatchIndex, b.MatchIndex)
}

func boolFirst(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return -1
	}
	return 1
}

func pathRank(t PathType) int {
	switch t {
	case PathExact:
		return 0
	case PathRegex:
		return 1
	}
	return 2
}

// pathLen is the length a path match competes with; a prefix's trailing
// slash does not count, since "/a/" and "/a" match the same paths.
func pathLen(p PathMatch) int {
	if p.Type == PathPrefix {
		return len(strings.TrimSuffix(p.Value, "/"))
	}
	return len(p.Value)
}

// backend resolves a Service port for a rule. port is a number; for
// Ingress, portName may name the port instead. When the reference cannot
// be resolved, the backend's Invalid says why and reason is the route
// condition reason.
func (b *builder) backend(ns, name string, port int32, portName string) (be *Backend, reason string) {
	be = &Backend{Service: types.NamespacedName{Namespace: ns, Name: name}, Port: port, Weight: 1}
	svc := b.services[be.Service]
	if svc == nil {
		be.Invalid = "Service " + be.Service.String() + " not found"
		return be, string(gatewayv1.RouteReasonBackendNotFound)
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		be.Invalid = "Service " + be.Service.String() + " is of type ExternalName, which is not served"
		return be, string(gatewayv1.RouteReasonUnsupportedProtocol)
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue
		}
		if (portName != "" && p.Name == portName) || (portName == "" && p.Port == port) {
			sp = p
			break
		}
	}
	if sp == nil {
		what := fmt.Sprint(port)
		if portName != "" {
			what = portName
		}
		be.Invalid = "Service " + be.Service.String() + " has no TCP port " + what
		return be, string(gatewayv1.RouteReasonBackendNotFound)
	}
	be.Port = sp.Port
	if sp.AppProtocol != nil {
		be.AppProtocol = *sp.AppProtocol
	}
	be.Endpoints = b.endpoints(be.Service, sp.Name)
	return be, ""
}

// endpoints are the addresses of a Service port's ready endpoints, or of
// its serving terminating ones when none is ready (as kube-proxy does).
func (b *builder) endpoints(svc types.NamespacedName, portName string) []string {
	var ready, terminating []string
	for _, s := range b.slices[svc] {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		var port int32 = -1
		for _, p := range s.Ports {
			if (p.Name == nil && portName == "" || p.Name != nil && *p.Name == portName) &&
				(p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP) && p.Port != nil {
				port = *p.Port
				break
			}
		}
		if port < 0 {
			continue
		}
		for _, e := range s.Endpoints {
			c := e.Conditions
			isReady := c.Ready == nil || *c.Ready
			serving := c.Serving != nil && *c.Serving
			term := c.Terminating != nil && *c.Terminating
			for _, a := range e.Addresses {
				hp := net.JoinHostPort(a, fmt.Sprint(port))
				switch {
				case isReady:
					ready = append(ready, hp)
				case serving && term:
					terminating = append(terminating, hp)
				}
			}
		}
	}
	if len(ready) == 0 {
		ready = terminating
	}
	sort.Strings(ready)
	return slices.Compact(ready)
}

// granted tells whether an object of fromKind in fromNS may refer to the
// object toNS/toName of toGroup/toKind: always in its own namespace, else
// when a ReferenceGrant of toNS allows it.
func (b *builder) granted(fromGroup, fromKind, fromNS, toGroup, toKind, toNS, toName string) bool {
	if fromNS == toNS {
		return true
	}
	for _, g := range b.grants[toNS] {
		from := slices.ContainsFunc(g.Spec.From, func(f gatewayv1.ReferenceGrantFrom) bool {
			return string(f.Group) == fromGroup && string(f.Kind) == fromKind && string(f.Namespace) == fromNS
		})
		to := slices.ContainsFunc(g.Spec.To, func(t gatewayv1.ReferenceGrantTo) bool {
			return coreGroup(string(t.Group)) == coreGroup(toGroup) && string(t.Kind) == toKind && (t.Name == nil || *t.Name == "" || string(*t.Name) == toName)
		})
		if from && to {
			return true
		}
	}
	return false
}

func coreGroup(g string) string {
	if g == "core" {
		return ""
	}
	return g
}

// certificate parses a kubernetes.io/tls Secret once per build.
func (b *builder) certificate(k types.NamespacedName) certResult {
	if r, ok := b.certs[k]; ok {
		return r
	}
	var r certResult
	s := b.secrets[k]
	switch {
	case s == nil:
		r.err = "Secret " + k.String() + " not found"
	case len(s.Data[corev1.TLSCertKey]) == 0 || len(s.Data[corev1.TLSPrivateKeyKey]) == 0:
		r.err = "Secret " + k.String() + " has no " + corev1.TLSCertKey + " and " + corev1.TLSPrivateKeyKey
	default:
		c, err := tls.X509KeyPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
		if err != nil {
			r.err = "Secret " + k.String() + ": " + err.Error()
		} else {
			r.cert = &c
		}
	}
	b.certs[k] = r
	return r
}

func (b *builder) event(kind string, o metav1.Object, reason, msg string) {
	b.res.Events = append(b.res.Events, Event{Kind: kind, Namespace: o.GetNamespace(), Name: o.GetName(), Reason: reason, Message: msg})
}

func condition(t string, ok bool, reason, msg string, gen int64) metav1.Condition {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen}
}

// parseDuration reads a Gateway API Duration ("1h", "500ms", "1m30s");
// its grammar is a subset of Go's.
func parseDuration(d gatewayv1.Duration) (time.Duration, error) {
	v, err := time.ParseDuration(string(d))
	if err == nil && v < 0 {
		err = fmt.Errorf("negative duration %q", d)
	}
	return v, err
}
