package ingress

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// echoBackend answers with its name, the request it got and its
// X-Forwarded-* headers.
func echoBackend(t *testing.T, name string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Backend", name)
		w.Header().Set("X-Got-Host", r.Host)
		w.Header().Set("X-Got-Path", r.URL.RequestURI())
		w.Header().Set("X-Got-Proto", r.Proto)
		for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Added"} {
			w.Header().Set("X-Got-"+h, strings.Join(r.Header.Values(h), "|"))
		}
		fmt.Fprintf(w, "%s %s", name, body)
	}))
	t.Cleanup(s.Close)
	return s
}

func hostPort(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

func backendTo(name string, eps ...string) *Backend {
	return &Backend{Service: types.NamespacedName{Namespace: "ns", Name: name}, Port: 80, Weight: 1, Endpoints: eps}
}

func prefixRuleTo(p string, a *Action) *Rule {
	return &Rule{Route: RouteRef{Kind: "HTTPRoute", Namespace: "ns", Name: "r"}, Path: PathMatch{Type: PathPrefix, Value: p}, Action: a}
}

// serving starts a server on a free loopback port with the table that
// table returns for that port, and gives its base URL.
func serving(t *testing.T, cfg ServerConfig, table func(port int32) *Table) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := int32(ln.Addr().(*net.TCPAddr).Port)
	cfg.BindAddress = "127.0.0.1"
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.listen = func(network, addr string) (net.Listener, error) {
		if addr == net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))) && ln != nil {
			l := ln
			ln = nil
			return l, nil
		}
		return net.Listen(network, addr)
	}
	if failed := s.Apply(table(port)); len(failed) > 0 {
		t.Fatalf("ports not opened: %v", failed)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.Close(ctx)
	})
	return s, "http://127.0.0.1:" + strconv.Itoa(int(port))
}

func get(t *testing.T, c *http.Client, url, host string, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func TestServeRouting(t *testing.T) {
	a, b := echoBackend(t, "a"), echoBackend(t, "b")
	_, base := serving(t, ServerConfig{}, func(port int32) *Table {
		return &Table{Listeners: []*Listener{{Port: port, Protocol: ProtocolHTTP, Hosts: []*Host{
			{Name: "a.example", Rules: []*Rule{prefixRuleTo("/", &Action{Backends: []*Backend{backendTo("a", hostPort(a))}})}},
			{Name: "b.example", Rules: []*Rule{
				prefixRuleTo("/old", &Action{Redirect: &Redirect{Path: &PathModifier{Type: ReplacePrefixMatch, Value: "/new"}, Port: 80, StatusCode: 301}}),
				prefixRuleTo("/strip", &Action{
					Rewrite:         &Rewrite{Hostname: "rewritten.example", Path: &PathModifier{Type: ReplacePrefixMatch, Value: "/"}},
					RequestHeaders:  &HeaderModifier{Add: []Header{{Name: "X-Added", Value: "yes"}}},
					ResponseHeaders: &HeaderModifier{Set: []Header{{Name: "X-Resp", Value: "set"}}},
					Backends:        []*Backend{backendTo("b", hostPort(b))},
				}),
				prefixRuleTo("/none", &Action{Backends: []*Backend{backendTo("none")}}),
				prefixRuleTo("/invalid", &Action{Backends: []*Backend{{Invalid: "no such Service", Weight: 1}}}),
				prefixRuleTo("/zero", &Action{Backends: []*Backend{{Weight: 0, Endpoints: []string{hostPort(b)}}}}),
				prefixRuleTo("/", &Action{Backends: []*Backend{backendTo("b", hostPort(b))}}),
			}},
		}}}}
	})
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		host, path string
		code       int
		backend    string
		headers    map[string]string
	}{
		{host: "a.example", path: "/x", code: 200, backend: "a", headers: map[string]string{"X-Got-Host": "a.example", "X-Got-Path": "/x"}},
		{host: "A.Example:80", path: "/x?q=1", code: 200, backend: "a", headers: map[string]string{"X-Got-Path": "/x?q=1"}},
		{host: "b.example", path: "/y", code: 200, backend: "b"},
		{host: "c.example", path: "/", code: 404},
		{host: "b.example", path: "/old/page?x=1", code: 301, headers: map[string]string{"Location": "http://b.example/new/page?x=1"}},
		{host: "b.example", path: "/strip/page", code: 200, backend: "b", headers: map[string]string{
			"X-Got-Host": "rewritten.example", "X-Got-Path": "/page", "X-Got-X-Added": "yes", "X-Resp": "set"}},
		{host: "b.example", path: "/none", code: 503},
		{host: "b.example", path: "/invalid", code: 500},
		{host: "b.example", path: "/zero", code: 500},
	} {
		resp := get(t, c, base+tc.path, tc.host)
		if resp.StatusCode != tc.code || resp.Header.Get("X-Backend") != tc.backend {
			t.Errorf("%s%s: got %d from %q, want %d from %q", tc.host, tc.path, resp.StatusCode, resp.Header.Get("X-Backend"), tc.code, tc.backend)
		}
		for k, v := range tc.headers {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s%s: %s is %q, want %q", tc.host, tc.path, k, got, v)
			}
		}
	}
}

func TestServeForwardedHeaders(t *testing.T) {
	a := echoBackend(t, "a")
	table := func(port int32) *Table {
		return &Table{Listeners: []*Listener{{Port: port, Protocol: ProtocolHTTP, Hosts: []*Host{
			{Rules: []*Rule{prefixRuleTo("/", &Action{Backends: []*Backend{backendTo("a", hostPort(a))}})}},
		}}}}
	}
	spoof := []string{"X-Forwarded-For", "6.6.6.6", "X-Forwarded-Proto", "https", "X-Forwarded-Host", "evil.example", "Forwarded", "for=6.6.6.6"}

	_, base := serving(t, ServerConfig{}, table)
	resp := get(t, http.DefaultClient, base+"/", "app.example", spoof...)
	want := map[string]string{"X-Got-X-Forwarded-For": "127.0.0.1", "X-Got-X-Forwarded-Proto": "http", "X-Got-X-Forwarded-Host": "app.example"}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("untrusted client: %s is %q, want %q", k, got, v)
		}
	}

	_, lo, _ := net.ParseCIDR("127.0.0.0/8")
	_, base = serving(t, ServerConfig{TrustedProxies: []*net.IPNet{lo}}, table)
	resp = get(t, http.DefaultClient, base+"/", "app.example", spoof...)
	want = map[string]string{"X-Got-X-Forwarded-For": "6.6.6.6, 127.0.0.1", "X-Got-X-Forwarded-Proto": "https", "X-Got-X-Forwarded-Host": "evil.example"}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("trusted proxy: %s is %q, want %q", k, got, v)
		}
	}
}

// refusedAddr is a loopback address nothing listens on.
func refusedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestServeRetriesRefusedEndpoints(t *testing.T) {
	a := echoBackend(t, "a")
	dead1, dead2 := refusedAddr(t), refusedAddr(t)
	_, base := serving(t, ServerConfig{}, func(port int32) *Table {
		return &Table{Listeners: []*Listener{{Port: port, Protocol: ProtocolHTTP, Hosts: []*Host{
			{Rules: []*Rule{prefixRuleTo("/", &Action{Backends: []*Backend{backendTo("a", dead1, hostPort(a), dead2)}})}},
		}}}}
	})
	for i := range 30 {
		resp, err := http.Post(base+"/", "text/plain", strings.NewReader("body"+strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "a body"+strconv.Itoa(i) {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	_, base = serving(t, ServerConfig{}, func(port int32) *Table {
		return &Table{Listeners: []*Listener{{Port: port, Protocol: ProtocolHTTP, Hosts: []*Host{
			{Rules: []*Rule{prefixRuleTo("/", &Action{Backends: []*Backend{backendTo("a", dead1, dead2)}})}},
		}}}}
	})
	if resp := get(t, http.DefaultClient, base+"/", "x"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("every endpoint refused: %d, want 503", resp.StatusCode)
	}
}

func TestServeSpreadsAndWeighs(t *testing.T) {
	a, b, c := echoBackend(t, "a"), echoBackend(t, "b"), echoBackend(t, "c")
	heavy := backendTo("c", hostPort(c))
	heavy.Weight = 3
	_, base := serving(t, ServerConfig{}, func(port int32) *Table {
		return &Table{Listeners: []*Listener{{Port: port, Protocol: ProtocolHTTP, Hosts: []*Host{
			{Name: "spread", Rules: []*Rule{prefixRuleTo("/", &Action{Backends: []*Backend{backendTo("ab", hostPort(a), hostPort(b))}})}},
			{Name: "weigh", Rules: []*Rule{prefixRuleTo("/", &Action{Backends: []*Backend{backendTo("a", hostPort(a)), heavy}})}},
		}}}}
	})
	count := func(host string) map[string]int {
		n := map[string]int{}
		for range 400 {
			n[get(t, http.DefaultClient, base+"/", host).Header.Get("X-Backend")]++
		}
		return n
	}
	if n := count("spread"); n["a"] < 120 || n["b"] < 120 {
		t.Errorf("two endpoints got %v of 400 requests", n)
	}
	if n := count("weigh"); n["c"] < 240 || n["c"] > 360 {
		t.Errorf("weights 1:3 gave %v of 400 requests", n)
	}
}

func TestServeWebSocketUpgrade(t *testing.T) {
	// A backend that accepts any upgrade and echoes the bytes it gets.
	ws := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "upgrade expected", 400)
			return
		}
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprint(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		_, _ = io.Copy(conn, rw)
	}))
	t.Cleanup(ws.Close)
	_, base := serving(t, ServerConfig{}, func(port int32) *Table {
		return &Table{Listeners: []*Listener{{Port: port, Protocol: ProtocolHTTP, Hosts: []*Host{
			{Rules: []*Rule{prefixRuleTo("/", &Action{Backends: []*Backend{backendTo("ws", hostPort(ws))}})}},
		}}}}
	})
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(conn, "GET /chat HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	for _, msg := range []string{"hello", "again"} {
		fmt.Fprint(conn, msg)
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo of %q: %q %v", msg, buf, err)
		}
	}
}

func TestServeH2CBackend(t *testing.T) {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2 := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Proto)
	}))
	h2.Config.Protocols = &p
	h2.Start()
	t.Cleanup(h2.Close)
	be := backendTo("grpc", hostPort(h2))
	be.AppProtocol = AppProtocolH2C
	_, base := serving(t, ServerConfig{}, func(port int32) *Table {
		return &Table{Listeners: []*Listener{{Port: port, Protocol: ProtocolHTTP, Hosts: []*Host{
			{Rules: []*Rule{prefixRuleTo("/", &Action{Backends: []*Backend{be}})}},
		}}}}
	})
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "HTTP/2.0" {
		t.Fatalf("h2c backend: %d %q", resp.StatusCode, body)
	}
}

func TestServeLimits(t *testing.T) {
	a := echoBackend(t, "a")
	_, base := serving(t, ServerConfig{MaxHeaderBytes: 4096, ReadHeaderTimeout: 300 * time.Millisecond}, func(port int32) *Table {
		return &Table{Listeners: []*Listener{{Port: port, Protocol: ProtocolHTTP, Hosts: []*Host{
			{Rules: []*Rule{prefixRuleTo("/", &Action{Backends: []*Backend{backendTo("a", hostPort(a))}})}},
		}}}}
	})
	if resp := get(t, http.DefaultClient, base+"/", "x", "X-Big", strings.Repeat("x", 16<<10)); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a 16 KiB header: %d, want 431", resp.StatusCode)
	}
	// A client that never finishes its header is cut off.
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: x\r\n")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, err = io.ReadAll(conn)
	if err != nil || time.Since(start) > 3*time.Second {
		t.Errorf("a slow header: connection not closed by the server (%v after %s)", err, time.Since(start))
	}
}

// testCert is a certificate for names, signed by a CA it returns.
func signedCert(t *testing.T, names ...string) (*tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func TestServeTLS(t *testing.T) {
	a := echoBackend(t, "a")
	cert, pool := signedCert(t, "secure.example")
	_, base := serving(t, ServerConfig{}, func(port int32) *Table {
		return &Table{Listeners: []*Listener{{Port: port, Protocol: ProtocolHTTPS,
			Certificates: []*Certificate{{Hostname: "secure.example", Cert: cert}},
			Hosts:        []*Host{{Rules: []*Rule{prefixRuleTo("/", &Action{Backends: []*Backend{backendTo("a", hostPort(a))}})}}},
		}}}
	})
	addr := strings.TrimPrefix(base, "http://")
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "secure.example"},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	resp := get(t, &http.Client{Transport: tr}, "https://secure.example/", "secure.example")
	if resp.StatusCode != 200 || resp.Header.Get("X-Got-X-Forwarded-Proto") != "https" || resp.Proto != "HTTP/2.0" {
		t.Errorf("https: %d %s, X-Forwarded-Proto %q", resp.StatusCode, resp.Proto, resp.Header.Get("X-Got-X-Forwarded-Proto"))
	}
	// Another name gets the default certificate.
	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "other.example", InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "skiff ingress default certificate" {
		t.Errorf("unknown server name: certificate %q", cn)
	}
}

func TestServeTableSwapKeepsRequests(t *testing.T) {
	a, b := echoBackend(t, "a"), echoBackend(t, "b")
	var port int32
	table := func(be *Backend) *Table {
		return &Table{Listeners: []*Listener{{Port: port, Protocol: ProtocolHTTP, Hosts: []*Host{
			{Rules: []*Rule{prefixRuleTo("/", &Action{Backends: []*Backend{be}})}},
		}}}}
	}
	s, base := serving(t, ServerConfig{}, func(p int32) *Table { port = p; return table(backendTo("a", hostPort(a))) })
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var failures, seenB int
	var mu sync.Mutex
	wg.Go(func() {
		c := &http.Client{}
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := c.Get(base + "/")
			mu.Lock()
			if err != nil || resp.StatusCode != 200 {
				failures++
			} else if resp.Header.Get("X-Backend") == "b" {
				seenB++
			}
			mu.Unlock()
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	})
	for i := range 50 {
		be := backendTo("a", hostPort(a))
		if i%2 == 1 {
			be = backendTo("b", hostPort(b))
		}
		s.Apply(table(be))
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if failures > 0 || seenB == 0 {
		t.Fatalf("%d requests failed while the table changed; %d reached the new backend", failures, seenB)
	}
}

func TestServePortInUse(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	busy := int32(held.Addr().(*net.TCPAddr).Port)
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freePort := int32(free.Addr().(*net.TCPAddr).Port)
	free.Close()
	s, err := NewServer(ServerConfig{BindAddress: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	failed := s.Apply(&Table{Listeners: []*Listener{{Port: busy, Protocol: ProtocolHTTP}, {Port: freePort, Protocol: ProtocolHTTP}}})
	if len(failed) != 1 || failed[busy] != "another program holds it" {
		t.Fatalf("unavailable ports: %v", failed)
	}
	if s.Addr(freePort) == nil {
		t.Fatalf("the free port %d was not opened", freePort)
	}
	// A port the table drops is closed.
	s.Apply(&Table{})
	time.Sleep(100 * time.Millisecond)
	if _, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(freePort)))); err == nil {
		t.Errorf("port %d still open after the table dropped it", freePort)
	}
}
