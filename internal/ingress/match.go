package ingress

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Request is what a rule is chosen by.
type Request struct {
	Host   string // Host header or :authority, port allowed
	Method string
	// Path as the proxy matches it (the request's escaped path, cleaned
	// by the caller if it wants).
	Path   string
	Header http.Header
	Query  url.Values
}

// Listener returns the listener of a port on the node's shared
// addresses, or nil.
func (t *Table) Listener(port int32) *Listener {
	return t.ListenerFor("", port)
}

// ListenerFor returns the listener of a connection to addr:port: the one
// whose own addresses hold addr, else the shared one, else nil.
func (t *Table) ListenerFor(addr string, port int32) *Listener {
	var shared *Listener
	for _, l := range t.Listeners {
		if l.Port != port {
			continue
		}
		if l.Addresses == nil {
			shared = l
		} else if addr != "" && slices.Contains(l.Addresses, addr) {
			return l
		}
	}
	return shared
}

// Match chooses the rule for a request: among the hosts whose name
// matches the request's, from the most specific, the first rule (in
// precedence order) whose match the request satisfies. Nil: no rule
// matches, the answer is 404.
func (l *Listener) Match(req *Request) *Rule {
	host := RequestHost(req.Host)
	for _, h := range l.Hosts {
		if !hostMatches(h.Name, host) {
			continue
		}
		for _, r := range h.Rules {
			if r.oneLabel && !oneLabelMatch(h.Name, host) {
				continue
			}
			if r.scope != nil && !l.isolated(r.scope, host) {
				continue
			}
			if r.Matches(req) {
				return r
			}
		}
	}
	return nil
}

// isolated tells whether a rule that came through a Gateway listener
// may answer for host: its listener is that Gateway's most specific one
// on the port whose hostname matches host (listener isolation).
func (l *Listener) isolated(s *listenerScope, host string) bool {
	for _, h := range l.scopes[s.gateway] {
		if hostMatches(h, host) {
			return h == s.hostname
		}
	}
	return false
}

// Misdirected tells whether a request for host on a TLS connection made
// for serverName (SNI) belongs to another Gateway listener than the one
// the connection was made for, which must be answered 421 (RFC 9110
// 15.5.20): a client that reuses a connection for several names, as HTTP/2
// clients do, must not reach a listener with a certificate or routes the
// connection was not made for. With several Gateways on the port, the
// request is misdirected when every Gateway with a listener for host
// has it apart from its listener for serverName.
func (l *Listener) Misdirected(serverName, host string) bool {
	if serverName == "" || len(l.scopes) == 0 {
		return false
	}
	sni, host := RequestHost(serverName), RequestHost(host)
	matched := false
	for _, hosts := range l.scopes {
		forHost, okHost := mostSpecific(hosts, host)
		if !okHost {
			continue
		}
		matched = true
		if forSNI, ok := mostSpecific(hosts, sni); ok && forSNI == forHost {
			return false
		}
	}
	return matched
}

// mostSpecific is the first of hosts (most specific first) that matches
// name.
func mostSpecific(hosts []string, name string) (string, bool) {
	for _, h := range hosts {
		if hostMatches(h, name) {
			return h, true
		}
	}
	return "", false
}

// Certificate chooses the certificate to present for a TLS server name:
// the most specific whose hostname matches, else the catch-all one, else
// nil (the caller's default).
func (l *Listener) Certificate(serverName string) *Certificate {
	host := RequestHost(serverName)
	for _, c := range l.Certificates {
		if hostMatches(c.Hostname, host) {
			return c
		}
	}
	return nil
}

// Matches tells whether the request satisfies the rule's path, method,
// header and query parameter matches (the host is the caller's).
func (r *Rule) Matches(req *Request) bool {
	if !r.Path.matches(req.Path) {
		return false
	}
	if r.Method != "" && r.Method != req.Method {
		return false
	}
	for _, h := range r.Headers {
		if !h.matchesHeader(req.Header.Values(h.Name)) {
			return false
		}
	}
	for _, q := range r.QueryParams {
		vs, ok := req.Query[q.Name]
		// The first value of a repeated parameter is the one matched.
		if !ok || len(vs) == 0 || !q.matches(vs[0]) {
			return false
		}
	}
	return true
}

func (p PathMatch) matches(path string) bool {
	switch p.Type {
	case PathExact:
		return path == p.Value
	case PathRegex:
		return p.re.MatchString(path)
	}
	return prefixMatch(p.Value, path)
}

// prefixMatch matches path elements: "/abc" matches "/abc", "/abc/" and
// "/abc/def" but not "/abcd"; a trailing "/" of the prefix is ignored.
func prefixMatch(prefix, path string) bool {
	p := strings.TrimSuffix(prefix, "/")
	if !strings.HasPrefix(path, p) {
		return false
	}
	return len(path) == len(p) || path[len(p)] == '/'
}

func (v ValueMatch) matches(s string) bool {
	if v.re != nil {
		return v.re.MatchString(s)
	}
	return s == v.Value
}

// matchesHeader matches a header sent once, or sent several times: then
// either one of its values or all of them joined with "," must match.
func (v ValueMatch) matchesHeader(values []string) bool {
	switch len(values) {
	case 0:
		return false
	case 1:
		return v.matches(values[0])
	}
	for _, s := range values {
		if v.matches(s) {
			return true
		}
	}
	return v.matches(strings.Join(values, ","))
}
