package ingress

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// TestMatchProperty compares the matcher's choice, for random routes and
// requests, with a reference written from the specification's wording
// alone: every (hostname, rule, match) of every route that the request
// satisfies, sorted by the precedence criteria in order; the first wins.

type candidate struct {
	route      *gatewayv1.HTTPRoute
	host       string
	rule, mi   int
	m          gatewayv1.HTTPRouteMatch
	exactPath  bool
	pathLen    int
	hasMethod  bool
	nHeaders   int
	nQuery     int
	createdSec int64
}

// key orders candidates: most specific hostname (exact, then characters),
// Exact path, longest prefix, method, most headers, most query
// parameters, oldest, alphabetical, rule and match order.
func (c candidate) less(o candidate) bool {
	type k = []int64
	hostExact := func(h string) int64 {
		if h != "" && !strings.HasPrefix(h, "*.") {
			return 0
		}
		return 1
	}
	b2i := func(b bool) int64 {
		if b {
			return 0
		}
		return 1
	}
	a := k{hostExact(c.host), -int64(len(c.host)), b2i(c.exactPath), -int64(c.pathLen), b2i(c.hasMethod), -int64(c.nHeaders), -int64(c.nQuery), c.createdSec}
	b := k{hostExact(o.host), -int64(len(o.host)), b2i(o.exactPath), -int64(o.pathLen), b2i(o.hasMethod), -int64(o.nHeaders), -int64(o.nQuery), o.createdSec}
	if d := slices.Compare(a, b); d != 0 {
		return d < 0
	}
	if n, m := c.route.Namespace+"/"+c.route.Name, o.route.Namespace+"/"+o.route.Name; n != m {
		return n < m
	}
	if c.rule != o.rule {
		return c.rule < o.rule
	}
	return c.mi < o.mi
}

func refHostMatch(pattern, host string) bool {
	if pattern == "" {
		return true
	}
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return strings.HasSuffix(host, suffix) && len(host) > len(suffix)
	}
	return pattern == host
}

// refPathPrefix compares path segments.
func refPathPrefix(prefix, path string) bool {
	ps := strings.Split(strings.Trim(prefix, "/"), "/")
	if ps[0] == "" {
		return true
	}
	rs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(rs) < len(ps) {
		return false
	}
	for i := range ps {
		if ps[i] != rs[i] {
			return false
		}
	}
	return true
}

func reference(routes []*gatewayv1.HTTPRoute, host, method, path string, h http.Header, q url.Values) *candidate {
	var best *candidate
	for _, r := range routes {
		hosts := []string{""}
		if len(r.Spec.Hostnames) > 0 {
			hosts = nil
			for _, hn := range r.Spec.Hostnames {
				hosts = append(hosts, string(hn))
			}
		}
		for _, hn := range hosts {
			if !refHostMatch(hn, host) {
				continue
			}
			for ri, rule := range r.Spec.Rules {
				ms := rule.Matches
				if len(ms) == 0 {
					ms = []gatewayv1.HTTPRouteMatch{{}}
				}
				for mi, m := range ms {
					c := candidate{route: r, host: hn, rule: ri, mi: mi, m: m, createdSec: r.CreationTimestamp.Unix()}
					pt, pv := gatewayv1.PathMatchPathPrefix, "/"
					if m.Path != nil {
						pt, pv = *m.Path.Type, *m.Path.Value
					}
					c.exactPath = pt == gatewayv1.PathMatchExact
					c.pathLen = len(strings.TrimRight(pv, "/"))
					if c.exactPath {
						c.pathLen = len(pv)
						if path != pv {
							continue
						}
					} else if !refPathPrefix(pv, path) {
						continue
					}
					if m.Method != nil {
						c.hasMethod = true
						if string(*m.Method) != method {
							continue
						}
					}
					ok := true
					for _, hm := range m.Headers {
						if h.Get(string(hm.Name)) != hm.Value {
							ok = false
						}
					}
					for _, qm := range m.QueryParams {
						if q.Get(string(qm.Name)) != qm.Value {
							ok = false
						}
					}
					if !ok {
						continue
					}
					c.nHeaders, c.nQuery = len(m.Headers), len(m.QueryParams)
					if best == nil || c.less(*best) {
						best = &c
					}
				}
			}
		}
	}
	return best
}

func pick[T any](rnd *rand.Rand, xs ...T) T { return xs[rnd.IntN(len(xs))] }

func randomRoutes(rnd *rand.Rand) []*gatewayv1.HTTPRoute {
	var routes []*gatewayv1.HTTPRoute
	for i := range 1 + rnd.IntN(4) {
		var opts []routeOpt
		var hs []string
		for range rnd.IntN(3) {
			h := pick(rnd, "a.example.com", "*.example.com", "*.a.example.com", "b.example.com")
			if !slices.Contains(hs, h) {
				hs = append(hs, h)
			}
		}
		opts = append(opts, hostnames(hs...))
		for range 1 + rnd.IntN(3) {
			var ms []gatewayv1.HTTPRouteMatch
			for range rnd.IntN(3) {
				var mo []matchOpt
				if rnd.IntN(4) > 0 {
					mo = append(mo, path(pick(rnd, exact, prefix, prefix), pick(rnd, "/", "/a", "/a/", "/a/b", "/ab", "/a/b/c")))
				}
				if rnd.IntN(3) == 0 {
					mo = append(mo, method(pick(rnd, "GET", "POST")))
				}
				for _, n := range []string{"x", "y"} {
					if rnd.IntN(3) == 0 {
						mo = append(mo, header(n, pick(rnd, "1", "2")))
					}
				}
				for _, n := range []string{"q", "r"} {
					if rnd.IntN(3) == 0 {
						mo = append(mo, query(n, pick(rnd, "1", "2")))
					}
				}
				ms = append(ms, match(mo...))
			}
			opts = append(opts, rule("a", ms...))
		}
		routes = append(routes, route("infra", fmt.Sprintf("r%d", pick(rnd, 0, 1, 2, 3)*10+i), rnd.IntN(3), "gw", opts...))
	}
	return routes
}

func TestMatchProperty(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	requests := 0
	for iter := range 2000 {
		routes := randomRoutes(rnd)
		l := Build(testConfig, gwInput(routes...)).Table.Listener(80)
		for range 20 {
			host := pick(rnd, "a.example.com", "b.example.com", "c.a.example.com", "example.com", "other.org")
			p := pick(rnd, "/", "/a", "/a/", "/a/b", "/ab", "/a/b/c/d", "/x")
			m := pick(rnd, "GET", "POST")
			h, q := http.Header{}, url.Values{}
			for _, n := range []string{"x", "y"} {
				if rnd.IntN(2) == 0 {
					h.Set(n, pick(rnd, "1", "2"))
				}
			}
			for _, n := range []string{"q", "r"} {
				if rnd.IntN(2) == 0 {
					q.Set(n, pick(rnd, "1", "2"))
				}
			}
			requests++
			want := reference(routes, host, m, p, h, q)
			got := l.Match(&Request{Host: host, Method: m, Path: p, Header: h, Query: q})
			switch {
			case want == nil && got == nil:
			case want == nil || got == nil ||
				got.Route.Name != want.route.Name || got.RuleIndex != want.rule || got.MatchIndex != want.mi:
				var sb strings.Builder
				for _, r := range routes {
					fmt.Fprintf(&sb, "  %s age %d hostnames %v\n", r.Name, r.CreationTimestamp.Unix()-t0.Unix(), r.Spec.Hostnames)
				}
				wantS := "404"
				if want != nil {
					wantS = fmt.Sprintf("%s rule %d match %d (host %q)", want.route.Name, want.rule, want.mi, want.host)
				}
				gotS := "404"
				if got != nil {
					gotS = strings.TrimSpace(got.String())
				}
				t.Fatalf("iteration %d: %s %s%s headers %v query %v:\n got %s\nwant %s\nroutes:\n%stable:\n%s",
					iter, m, host, p, h, q, gotS, wantS, sb.String(), (&Table{Listeners: []*Listener{l}}).String())
			}
		}
	}
	t.Logf("%d requests", requests)
}
