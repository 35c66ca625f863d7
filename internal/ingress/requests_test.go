package ingress

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	pathpkg "path"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"sigs.k8s.io/gateway-api/conformance"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"

	"github.com/skiff-dev/skiff/internal/golden"
)

// The core tests' expected responses, read from their source (the suite
// ships it with the manifests): each request sent to the table must
// reach the expected backend, or get the expected 404, 500 or redirect.
// The Go parser reads the expectations because they are written as Go
// literals in the test functions, not as data.

type expectedResponse struct {
	line            int
	host, method    string
	path            string
	headers         map[string]string
	backend, ns     string
	status          int
	redirect        map[string]string // Scheme, Host, Port, Path
	expectedPath    string
	expectedHost    string
	expectedHeaders map[string]string
}

// Values of the suite's constants the literals use.
var confConsts = map[string]string{
	"InfraBackendServiceNameV1": "infra-backend-v1",
	"InfraBackendServiceNameV2": "infra-backend-v2",
	"InfraBackendServiceNameV3": "infra-backend-v3",
	"InfrastructureNamespace":   "gateway-conformance-infra",
	"AppBackendNamespace":       "gateway-conformance-app-backend",
	"WebBackendNamespace":       "gateway-conformance-web-backend",
	"MethodGet":                 "GET",
	"MethodPost":                "POST",
	"MethodHead":                "HEAD",
	"StatusFound":               "302",
	"StatusMovedPermanently":    "301",
}

// parseExpectations finds the http.ExpectedResponse literals of a test
// source file; those with a value it cannot read are left out.
// changeLine is the first line after which the test changes objects
// (0: never): later expectations are of another state.
func parseExpectations(t *testing.T, file string) (out []expectedResponse, skipped, changeLine int) {
	src, err := fs.ReadFile(conformance.Manifests, file)
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, src, 0)
	if err != nil {
		t.Fatal(err)
	}
	isER := func(e ast.Expr) bool {
		s, ok := e.(*ast.SelectorExpr)
		return ok && s.Sel.Name == "ExpectedResponse"
	}
	var lits []*ast.CompositeLit
	ast.Inspect(f, func(n ast.Node) bool {
		if call, ok := n.(*ast.CallExpr); ok {
			if sel, ok := call.Fun.(*ast.SelectorExpr); ok {
				switch sel.Sel.Name {
				case "Delete", "Update", "Patch", "Create":
					if l := fset.Position(call.Pos()).Line; changeLine == 0 || l < changeLine {
						changeLine = l
					}
				}
			}
		}
		cl, ok := n.(*ast.CompositeLit)
		if !ok {
			return true
		}
		if isER(cl.Type) {
			lits = append(lits, cl)
			return false
		}
		if at, ok := cl.Type.(*ast.ArrayType); ok && isER(at.Elt) {
			for _, e := range cl.Elts {
				if c, ok := e.(*ast.CompositeLit); ok {
					lits = append(lits, c)
				}
			}
			return false
		}
		return true
	})
	for _, cl := range lits {
		er := expectedResponse{line: fset.Position(cl.Pos()).Line, ns: "gateway-conformance-infra"}
		if readExpectation(cl, &er) {
			out = append(out, er)
		} else {
			skipped++
		}
	}
	return out, skipped, changeLine
}

func readExpectation(cl *ast.CompositeLit, er *expectedResponse) bool {
	ok := true
	fields(cl, func(key string, v ast.Expr) {
		switch key {
		case "Request":
			fields(v, func(k string, v ast.Expr) {
				switch k {
				case "Host":
					er.host, ok = str(v, ok)
				case "Method":
					er.method, ok = str(v, ok)
				case "Path":
					er.path, ok = str(v, ok)
				case "Headers":
					er.headers, ok = strMap(v, ok)
				case "UnfollowRedirect":
				default:
					ok = false // protocols, bodies, SNI: not modelled here
				}
			})
		case "ExpectedRequest":
			fields(unaddr(v), func(k string, v ast.Expr) {
				switch k {
				case "Request":
					fields(v, func(k string, v ast.Expr) {
						switch k {
						case "Path":
							er.expectedPath, ok = str(v, ok)
						case "Host":
							er.expectedHost, ok = str(v, ok)
						case "Headers":
							er.expectedHeaders, ok = strMap(v, ok)
						}
					})
				}
			})
		case "RedirectRequest":
			er.redirect = map[string]string{}
			fields(unaddr(v), func(k string, v ast.Expr) {
				er.redirect[k], ok = str(v, ok)
			})
		case "Response":
			fields(v, func(k string, v ast.Expr) {
				switch k {
				case "StatusCode":
					var s string
					s, ok = str(v, ok)
					er.status, _ = strconv.Atoi(s)
				case "StatusCodes":
					ok = false
				}
			})
		case "Backend":
			er.backend, ok = str(v, ok)
		case "Namespace":
			er.ns, ok = str(v, ok)
		}
	})
	return ok
}

func unaddr(e ast.Expr) ast.Expr {
	if u, ok := e.(*ast.UnaryExpr); ok && u.Op == token.AND {
		return u.X
	}
	return e
}

func fields(e ast.Expr, f func(string, ast.Expr)) {
	cl, ok := e.(*ast.CompositeLit)
	if !ok {
		return
	}
	for _, el := range cl.Elts {
		if kv, ok := el.(*ast.KeyValueExpr); ok {
			if id, ok := kv.Key.(*ast.Ident); ok {
				f(id.Name, kv.Value)
			}
		}
	}
}

// str reads a string or number literal, a suite constant, or the
// namespace variable the tests name ns.
func str(e ast.Expr, ok bool) (string, bool) {
	switch v := e.(type) {
	case *ast.BasicLit:
		if v.Kind == token.STRING {
			s, err := strconv.Unquote(v.Value)
			return s, ok && err == nil
		}
		return v.Value, ok
	case *ast.SelectorExpr:
		s, found := confConsts[v.Sel.Name]
		return s, ok && found
	case *ast.Ident:
		if v.Name == "ns" {
			return "gateway-conformance-infra", ok
		}
	}
	return "", false
}

func strMap(e ast.Expr, ok bool) (map[string]string, bool) {
	cl, isLit := e.(*ast.CompositeLit)
	if !isLit {
		return nil, false
	}
	m := map[string]string{}
	for _, el := range cl.Elts {
		kv, isKV := el.(*ast.KeyValueExpr)
		if !isKV {
			return nil, false
		}
		k, ok1 := str(kv.Key, true)
		v, ok2 := str(kv.Value, true)
		if !ok1 || !ok2 {
			return nil, false
		}
		m[k] = v
	}
	return m, ok
}

// requestPorts are the listener ports a test's requests go to, when not
// port 80.
var requestPorts = map[string]int32{
	"HTTPRouteHTTPSListener": 443,
}

// changes are what tests do to their objects midway, for the
// expectations that follow.
var changes = map[string]func(*Input){
	"HTTPRouteReferenceGrant": func(in *Input) { in.ReferenceGrants = nil },
}

// perGateway are tests whose requests go to different Gateways; they
// have tests of their own.
var perGateway = map[string]bool{"HTTPRouteMultipleGateways": true}

func TestConformanceRequests(t *testing.T) {
	checkConformanceRequests(t, coreTests())
}

func checkConformanceRequests(t *testing.T, tests []suite.ConformanceTest) {
	checked := 0
	for _, ct := range tests {
		file := "tests/" + strings.TrimSuffix(pathpkg.Base(ct.Manifests[0]), ".yaml") + ".go"
		if _, err := fs.Stat(conformance.Manifests, file); err != nil {
			continue
		}
		ers, skipped, changeLine := parseExpectations(t, file)
		if len(ers) == 0 || perGateway[ct.ShortName] {
			continue
		}
		t.Run(ct.ShortName, func(t *testing.T) {
			in, _ := conformanceInput(t, ct.Manifests...)
			res := Build(testConfig, in)
			port := int32(80)
			if p, ok := requestPorts[ct.ShortName]; ok {
				port = p
			}
			l := res.Table.Listener(port)
			if l == nil {
				t.Fatalf("no listener on port %d", port)
			}
			if skipped > 0 {
				t.Logf("%d expectations not read", skipped)
			}
			var after *Listener
			if change := changes[ct.ShortName]; change != nil {
				change(in)
				after = Build(testConfig, in).Table.Listener(port)
			}
			for _, er := range ers {
				el, ea := l, after
				// A request to another port names it in its Host.
				if _, p, err := net.SplitHostPort(er.host); err == nil {
					n, _ := strconv.Atoi(p)
					if o := res.Table.Listener(int32(n)); o != nil {
						el, ea = o, nil
					}
				}
				switch {
				case changeLine == 0 || er.line < changeLine:
					checkExpectation(t, el, er)
				case ea != nil:
					checkExpectation(t, ea, er)
				default:
					t.Logf("line %d: after a change of the objects, not checked", er.line)
					continue
				}
				checked++
			}
		})
	}
	t.Logf("%d expected responses checked", checked)
}

func checkExpectation(t *testing.T, l *Listener, er expectedResponse) {
	t.Helper()
	host := er.host
	if host == "" {
		host = "192.0.2.10" // the Gateway's address
	}
	u, err := url.ParseRequestURI(er.path)
	if err != nil {
		t.Errorf("line %d: %v", er.line, err)
		return
	}
	req := &Request{Host: host, Method: er.method, Path: u.Path, Header: http.Header{}, Query: u.Query()}
	if req.Method == "" {
		req.Method = "GET"
	}
	for k, v := range er.headers {
		req.Header.Set(k, v)
	}
	what := func() string {
		return "line " + strconv.Itoa(er.line) + ": " + req.Method + " " + host + er.path + " " + strings.TrimSpace(strings.ReplaceAll(strings.Join(strings.Fields(strings.TrimPrefix(strings.TrimSuffix(fmtHeaders(er.headers), "]"), "map[")), " "), "\n", " "))
	}
	r := l.Match(req)
	status := er.status
	if status == 0 {
		status = 200
	}
	switch {
	case status == 404:
		if r != nil {
			t.Errorf("%s: want 404, got %s", what(), strings.TrimSpace(r.String()))
		}
		return
	case r == nil:
		t.Errorf("%s: want %d, got 404", what(), status)
		return
	}
	if er.redirect != nil || (status >= 300 && status < 400) {
		if r.Redirect == nil {
			t.Errorf("%s: want a redirect, got %s", what(), strings.TrimSpace(r.String()))
			return
		}
		if r.Redirect.StatusCode != status {
			t.Errorf("%s: want status %d, got %d", what(), status, r.Redirect.StatusCode)
		}
		loc, err := url.Parse(RedirectLocation(r.Redirect, r, "http", host, l.Port, u.Path, u.RawQuery))
		if err != nil {
			t.Errorf("%s: %v", what(), err)
			return
		}
		want := er.redirect
		if s := want["Scheme"]; s != "" && s != loc.Scheme {
			t.Errorf("%s: redirect scheme %s, want %s", what(), loc.Scheme, s)
		}
		if h := want["Host"]; h != "" && h != loc.Hostname() {
			t.Errorf("%s: redirect host %s, want %s", what(), loc.Hostname(), h)
		}
		if p, ok := want["Port"]; ok && p != loc.Port() {
			t.Errorf("%s: redirect port %q, want %q", what(), loc.Port(), p)
		}
		if p := want["Path"]; p != "" && p != loc.Path {
			t.Errorf("%s: redirect path %s, want %s", what(), loc.Path, p)
		}
		return
	}
	valid := 0
	for _, be := range r.Backends {
		if be.Invalid == "" && be.Weight > 0 {
			valid++
		}
	}
	if status == 500 {
		if valid == len(r.Backends) && valid > 0 {
			t.Errorf("%s: want 500, got %s", what(), strings.TrimSpace(r.String()))
		}
		return
	}
	if er.backend != "" {
		found := false
		for _, be := range r.Backends {
			if be.Invalid == "" && be.Weight > 0 && be.Service.Name == er.backend && be.Service.Namespace == er.ns {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: want backend %s/%s, got %s", what(), er.ns, er.backend, strings.TrimSpace(r.String()))
		}
	}
	if er.expectedPath != "" && r.Rewrite != nil {
		if got := ModifyPath(r.Rewrite.Path, r, u.Path); got != strings.SplitN(er.expectedPath, "?", 2)[0] {
			t.Errorf("%s: rewritten path %s, want %s", what(), got, er.expectedPath)
		}
	}
	if er.expectedHost != "" && r.Rewrite != nil && r.Rewrite.Hostname != er.expectedHost {
		t.Errorf("%s: rewritten host %s, want %s", what(), r.Rewrite.Hostname, er.expectedHost)
	}
	if er.expectedHeaders != nil {
		h := req.Header.Clone()
		r.RequestHeaders.Apply(h)
		for k, v := range er.expectedHeaders {
			if got := strings.Join(h.Values(k), ","); got != v {
				t.Errorf("%s: request header %s %q, want %q", what(), k, got, v)
			}
		}
	}
}

func fmtHeaders(h map[string]string) string {
	if len(h) == 0 {
		return ""
	}
	var parts []string
	for k, v := range h {
		parts = append(parts, k+": "+v)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// TestConformanceMultipleGateways: Gateways with the same port route
// apart when each has addresses of its own.
func TestConformanceMultipleGateways(t *testing.T) {
	in, _ := conformanceInput(t, "tests/httproute-multiple-gateways.yaml")
	cfg := testConfig
	cfg.GatewayAddresses = map[types.NamespacedName][]string{
		{Namespace: "gateway-conformance-infra", Name: "same-namespace"}: {"192.0.2.21"},
		{Namespace: "gateway-conformance-infra", Name: "all-namespaces"}: {"192.0.2.22"},
	}
	res := Build(cfg, in)
	for _, c := range []struct {
		addr, path, backend string
	}{
		{"192.0.2.21", "/shared", "infra-backend-v1"},
		{"192.0.2.21", "/", "infra-backend-v2"},
		{"192.0.2.22", "/shared", "infra-backend-v1"},
		{"192.0.2.22", "/", "infra-backend-v3"},
	} {
		l := res.Table.ListenerFor(c.addr, 80)
		r := l.Match(&Request{Host: c.addr, Method: "GET", Path: c.path})
		if r == nil || r.Backends[0].Service.Name != c.backend {
			t.Errorf("%s%s: want %s, got %v", c.addr, c.path, c.backend, r)
		}
	}
	if a := res.Gateways[types.NamespacedName{Namespace: "gateway-conformance-infra", Name: "all-namespaces"}].Addresses; len(a) != 1 || a[0].Value != "192.0.2.22" {
		t.Errorf("all-namespaces addresses %v", a)
	}
	golden.Check(t, "conformance/HTTPRouteMultipleGateways-own-addresses", renderResult(res))
}

// TestConformanceRequestsExtended: the same for the tests of the
// profile's extended features the model expresses.
func TestConformanceRequestsExtended(t *testing.T) {
	var tests []suite.ConformanceTest
	for _, ct := range extendedTests() {
		if !notExpressed[ct.ShortName] {
			tests = append(tests, ct)
		}
	}
	checkConformanceRequests(t, tests)
}

// notExpressed are extended tests whose expectations the model does not
// meet yet, or that this harness cannot replay.
var notExpressed = map[string]bool{
	// Not in the model yet.
	"HTTPRouteCORS": true, // the CORS filter
	"GatewayFrontendClientCertificateValidation":                 true, // client certificates
	"GatewayFrontendClientCertificateValidationInsecureFallback": true,
	"ListenerSetAllowedRoutesNamespaces":                         true, // ListenerSets
	"ListenerSetDualParentRefIndependence":                       true,
	"ListenerSetGatewayParentSectionNameNotFound":                true,
	"ListenerSetHTTPRouting":                                     true,
	// Requests to several listeners of one port the literals do not
	// tell apart; TestRedirectLocation covers the derivation of ports.
	"HTTPRouteRedirectPortAndScheme": true,
}
