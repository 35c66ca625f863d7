package ingress

import (
	"net"
	"net/http"
	"strconv"
	"strings"
)

// The filter semantics that need no network: the target of a redirect,
// the rewritten path and host, header modifications.

// ModifyPath applies a path modifier to path; the rule gives the prefix a
// ReplacePrefixMatch replaces. Element by element, a trailing "/" of the
// prefix and of the replacement ignored:
//
//	/foo/bar, prefix /foo, replacement /xyz  -> /xyz/bar
//	/foo/,    prefix /foo, replacement /xyz  -> /xyz/
//	/foo/bar, prefix /foo, replacement ""    -> /bar
//	/foo,     prefix /foo, replacement "/"   -> /
func ModifyPath(pm *PathModifier, rule *Rule, path string) string {
	if pm == nil {
		return path
	}
	if pm.Type == ReplaceFullPath {
		return pm.Value
	}
	prefix := strings.TrimSuffix(rule.Path.Value, "/")
	if rule.Path.Type != PathPrefix || !prefixMatch(prefix, path) {
		return path
	}
	out := strings.TrimSuffix(pm.Value, "/") + path[len(prefix):]
	if !strings.HasPrefix(out, "/") {
		out = "/" + out
	}
	return out
}

// RedirectLocation is the Location of a redirect for a request with the
// given scheme, host (port allowed), path and raw query that came in on
// listenerPort. The port is derived as the specification says: the
// filter's; else the scheme's well-known port when the filter sets the
// scheme; else the listener's; and it is left out when it is the
// scheme's default.
func RedirectLocation(rd *Redirect, rule *Rule, scheme, host string, listenerPort int32, path, rawQuery string) string {
	if rd.Scheme != "" {
		scheme = rd.Scheme
	}
	hostname := RequestHost(host)
	if rd.Hostname != "" {
		hostname = rd.Hostname
	}
	port := listenerPort
	switch {
	case rd.Port != 0:
		port = rd.Port
	case rd.Scheme == "https":
		port = 443
	case rd.Scheme == "http":
		port = 80
	}
	authority := hostname
	if (scheme == "http" && port == 80) || (scheme == "https" && port == 443) {
		if strings.Contains(hostname, ":") {
			authority = "[" + hostname + "]"
		}
	} else {
		authority = net.JoinHostPort(hostname, strconv.Itoa(int(port)))
	}
	loc := scheme + "://" + authority + ModifyPath(rd.Path, rule, path)
	if rawQuery != "" {
		loc += "?" + rawQuery
	}
	return loc
}

// Apply modifies h: Set replaces, Add appends to an existing value with
// "," (one header line, as the specification's examples show), Remove
// deletes.
func (m *HeaderModifier) Apply(h http.Header) {
	if m == nil {
		return
	}
	for _, s := range m.Set {
		h.Set(s.Name, s.Value)
	}
	for _, a := range m.Add {
		if old := h.Values(a.Name); len(old) > 0 {
			h.Set(a.Name, strings.Join(old, ",")+","+a.Value)
		} else {
			h.Set(a.Name, a.Value)
		}
	}
	for _, r := range m.Remove {
		h.Del(r)
	}
}
