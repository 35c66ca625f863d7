// Package ingress turns the cluster's Ingress and Gateway API objects into
// an immutable routing table, the status each object should show, and the
// request matching and filter semantics the node's HTTP proxy applies.
//
// The files of this package that build the table, compute status and match
// requests are pure: no network, no clock, no API calls. The same objects
// always give the same table, so it can be tested with golden files and
// swapped atomically under a running proxy.
//
// component.go, serve.go, status.go and certificates.go are the node
// component that serves the table: listeners, the reverse proxy, TLS, status
// and the certificates Secret. Nodes do not run it yet: its wiring (flags,
// the Gateway API CRDs and classes the server applies, RBAC, --disable
// ingress) and its end-to-end and conformance tests come next.
package ingress

import (
	"crypto/tls"
	"regexp"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Protocol is what a listener speaks.
type Protocol string

const (
	ProtocolHTTP  Protocol = "HTTP"
	ProtocolHTTPS Protocol = "HTTPS"
)

// Table is the whole routing configuration of a node. It is never modified
// once built.
type Table struct {
	// Listeners by port, ascending, then addresses. One port of a set of
	// addresses has one protocol.
	Listeners []*Listener
}

// Listener is one port the node serves.
type Listener struct {
	// Addresses the port is served on alone (a Gateway's own), or nil:
	// every address of the node that no other listener of the port has.
	Addresses []string
	Port      int32
	Protocol  Protocol
	// Hosts from the most specific name to the catch-all: exact names
	// (alphabetical), then wildcards ("*.example.com") longest first, then
	// "" which matches any host.
	Hosts []*Host
	// Certificates of an HTTPS port, in the same order as Hosts: the first
	// whose Hostname matches the client's SNI is the one to present.
	Certificates []*Certificate

	// scopes are the hostnames of each Gateway's listeners on the port,
	// most specific first: a request reaches the rules of a Gateway's
	// most specific listener that matches its host only.
	scopes map[types.NamespacedName][]string
}

// listenerScope is the Gateway listener a rule came through.
type listenerScope struct {
	gateway  types.NamespacedName
	hostname string
}

// Certificate is a TLS key pair offered for a hostname pattern.
type Certificate struct {
	Hostname string // "", "*.example.com" or "a.example.com"
	Secret   types.NamespacedName
	Cert     *tls.Certificate
}

// Host is a virtual host: the rules of every route that answers for Name.
type Host struct {
	Name  string // "", "*.example.com" or "a.example.com"
	Rules []*Rule
}

// RouteRef names the object a rule comes from.
type RouteRef struct {
	Kind      string // "HTTPRoute" or "Ingress"
	Namespace string
	Name      string
}

func (r RouteRef) String() string { return r.Kind + " " + r.Namespace + "/" + r.Name }

// PathType is how a rule matches the request path.
type PathType string

const (
	PathExact  PathType = "Exact"
	PathPrefix PathType = "PathPrefix"
	PathRegex  PathType = "RegularExpression"
)

// PathMatch matches the request path.
type PathMatch struct {
	Type  PathType
	Value string
	re    *regexp.Regexp
}

// ValueMatch matches a header or query parameter by name and value.
type ValueMatch struct {
	Name  string // header names canonical (textproto), query names as given
	Value string
	re    *regexp.Regexp // RegularExpression type, else nil: exact
}

// Rule is one match of a route rule with what to do when it is chosen.
// Rules of a Host are ordered by the HTTPRoute precedence; Ingress rules
// take their place in the same order.
type Rule struct {
	Route      RouteRef
	RuleIndex  int    // index in spec.rules (Ingress: rule, or -1 for the default backend)
	MatchIndex int    // index in the rule's matches (Ingress: path)
	RuleName   string // HTTPRoute rule name, if any

	Path        PathMatch
	Method      string
	Headers     []ValueMatch
	QueryParams []ValueMatch

	// oneLabel: an Ingress wildcard host matches a single DNS label only.
	oneLabel bool
	// scope is the Gateway listener of the rule; nil for Ingresses.
	scope *listenerScope

	*Action

	// Precedence keys beyond the match itself.
	created        time.Time
	defaultBackend bool // an Ingress default backend: after every other rule
}

// Action is what a route rule does with a request; the matches of a rule
// share one.
type Action struct {
	// RequestHeaders and ResponseHeaders modify headers before forwarding
	// and before answering.
	RequestHeaders  *HeaderModifier
	ResponseHeaders *HeaderModifier
	// Redirect answers with a redirection instead of forwarding.
	Redirect *Redirect
	// Rewrite changes host and path before forwarding.
	Rewrite *Rewrite
	// Mirrors receive a copy of requests; their answers are discarded.
	Mirrors []*Mirror
	// Backends share the requests by weight. An Invalid backend's share is
	// answered with 500, as the Gateway API requires; so is every request
	// of a rule whose backends all have zero weight or that has none.
	Backends []*Backend
	Timeouts Timeouts
	Retry    *Retry
}

// Header is one header name and value.
type Header struct {
	Name  string // canonical
	Value string
}

// HeaderModifier is an HTTPHeaderFilter: Set, then Add, then Remove.
type HeaderModifier struct {
	Set    []Header
	Add    []Header
	Remove []string // canonical
}

// PathModifierType is how a redirect or rewrite changes the path.
type PathModifierType string

const (
	ReplaceFullPath    PathModifierType = "ReplaceFullPath"
	ReplacePrefixMatch PathModifierType = "ReplacePrefixMatch"
)

// PathModifier replaces the full path or the matched prefix.
type PathModifier struct {
	Type  PathModifierType
	Value string
}

// Redirect is an HTTPRequestRedirectFilter. Empty fields keep the request's.
type Redirect struct {
	Scheme     string
	Hostname   string
	Path       *PathModifier
	Port       int32 // 0: derived as the specification says
	StatusCode int
}

// Rewrite is an HTTPURLRewriteFilter. Empty fields keep the request's.
type Rewrite struct {
	Hostname string
	Path     *PathModifier
}

// Mirror sends a copy of a share of the requests to a backend.
type Mirror struct {
	Backend *Backend
	// Numerator/Denominator of the requests mirrored (1/1: all).
	Numerator, Denominator int32
}

// Timeouts of a rule; zero is none.
type Timeouts struct {
	Request        time.Duration
	BackendRequest time.Duration
}

// Retry is an HTTPRouteRetry.
type Retry struct {
	Codes    []int
	Attempts int
	Backoff  time.Duration
}

// Backend is a Service port a rule sends requests to, with the ready
// addresses of its endpoints.
type Backend struct {
	Service types.NamespacedName
	Port    int32 // the Service port
	Weight  int32
	// AppProtocol of the Service port ("kubernetes.io/h2c",
	// "kubernetes.io/ws", ...), empty if unset.
	AppProtocol string
	// Endpoints are "ip:port" addresses, sorted: the ready ones, or, when
	// none is ready, the serving ones that are terminating.
	Endpoints []string
	// RequestHeaders is a backend's own header modification.
	RequestHeaders *HeaderModifier
	// Invalid is why the reference could not be resolved; requests for
	// this backend are answered with 500.
	Invalid string
}
