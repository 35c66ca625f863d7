package ingress

import (
	"net"
	"strings"
)

// Hostname patterns are "" (any host), "*.suffix" (any host ending with
// ".suffix", however many labels precede it, as the Gateway API defines
// wildcards) or an exact name. They are kept in lower case.

// hostMatches tells whether host (lower case, no port) matches pattern.
func hostMatches(pattern, host string) bool {
	switch {
	case pattern == "":
		return true
	case strings.HasPrefix(pattern, "*."):
		return len(host) > len(pattern)-1 && strings.HasSuffix(host, pattern[1:])
	default:
		return pattern == host
	}
}

// oneLabelMatch tells whether host matches the wildcard pattern with a
// single label in place of "*", as Ingress wildcards do.
func oneLabelMatch(pattern, host string) bool {
	if !strings.HasPrefix(pattern, "*.") {
		return true
	}
	label := host[:len(host)-len(pattern)+1]
	return !strings.Contains(label, ".")
}

// intersect is the hostname a route's hostname answers for on a listener
// with the listener's hostname, and whether they intersect at all: the
// more specific of the two when one matches the other.
func intersect(listener, route string) (string, bool) {
	switch {
	case listener == "":
		return route, true
	case route == "":
		return listener, true
	case listener == route:
		return route, true
	case hostMatches(listener, route) && !isWildcard(route):
		return route, true
	case hostMatches(route, listener) && !isWildcard(listener):
		return listener, true
	case isWildcard(listener) && isWildcard(route):
		// *.b.example.com within *.example.com: the longer one.
		if strings.HasSuffix(route, listener[1:]) {
			return route, true
		}
		if strings.HasSuffix(listener, route[1:]) {
			return listener, true
		}
	}
	return "", false
}

func isWildcard(h string) bool { return strings.HasPrefix(h, "*.") }

// hostLess orders hostname patterns from the most specific: exact names
// (alphabetically), wildcards by length (longest first), then "".
func hostLess(a, b string) bool {
	ka, kb := hostRank(a), hostRank(b)
	if ka != kb {
		return ka < kb
	}
	if len(a) != len(b) && isWildcard(a) {
		return len(a) > len(b)
	}
	return a < b
}

func hostRank(h string) int {
	switch {
	case h == "":
		return 2
	case isWildcard(h):
		return 1
	}
	return 0
}

// RequestHost is the host of a Host header or :authority in the form
// patterns are compared with: lower case, without port or trailing dot.
func RequestHost(hostport string) string {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	} else if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}
