package ingress

// The node's HTTP server: a socket per port of the table, TLS with the
// table's certificates, and a reverse proxy to the ready endpoints of the
// chosen backend. Unlike the model's files, this one does network I/O.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// AppProtocolH2C is the appProtocol of a Service port whose backends
// speak HTTP/2 without TLS.
const AppProtocolH2C = "kubernetes.io/h2c"

// Defaults of ServerConfig.
const (
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
)

// ServerConfig configures the node's HTTP server.
type ServerConfig struct {
	// BindAddress is the address ports are opened on: "" for all of the
	// node's.
	BindAddress string
	// TrustedProxies are the clients whose X-Forwarded-For, -Host and
	// -Proto headers are kept (and appended to); every other client's
	// are replaced.
	TrustedProxies []*net.IPNet
	// MaxHeaderBytes bounds a request's header; larger ones get 431.
	MaxHeaderBytes int
	// ReadHeaderTimeout bounds the time a client takes to send a
	// request's header (and the TLS handshake); IdleTimeout the time a
	// kept-alive connection waits for the next request.
	ReadHeaderTimeout, IdleTimeout time.Duration
}

// Server serves a Table on the node's ports. Apply swaps the table: a
// request in flight finishes with the table it started with, the next one
// sees the new one, and connections stay open.
type Server struct {
	cfg         ServerConfig
	table       atomic.Pointer[Table]
	defaultCert *tls.Certificate
	tlsConfig   *tls.Config
	http1, h2c  *http.Transport
	proxy       *httputil.ReverseProxy

	mu    sync.Mutex
	ports map[int32]*port

	// listen opens a port; tests replace it.
	listen func(network, addr string) (net.Listener, error)
}

type port struct {
	ln  net.Listener
	srv *http.Server
}

// NewServer returns a server with an empty table and no port open.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.MaxHeaderBytes == 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.ReadHeaderTimeout == 0 {
		cfg.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	cert, err := selfSigned()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, defaultCert: cert, ports: map[int32]*port{}, listen: net.Listen,
		http1: newTransport(false), h2c: newTransport(true)}
	s.table.Store(&Table{})
	s.tlsConfig = &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: s.certificate,
	}
	s.proxy = &httputil.ReverseProxy{
		Rewrite:        func(pr *httputil.ProxyRequest) { s.rewrite(pr.In, pr.Out, routedFrom(pr.In.Context()).backend) },
		Transport:      roundTripper{s},
		ModifyResponse: modifyResponse,
		ErrorHandler:   s.proxyError,
		ErrorLog:       log.New(io.Discard, "", 0),
		BufferPool:     &bufferPool{},
	}
	return s, nil
}

// bufferPool keeps the proxy's copy buffers between requests: without
// one, the reverse proxy allocates 32 KiB for each, and the garbage
// collector, which also marks the rest of the node's heap, costs more
// than the copying.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }

// Table is the table being served.
func (s *Server) Table() *Table { return s.table.Load() }

// Apply serves t: it swaps the table, opens the ports t has that are not
// open yet, and closes those it no longer has (connections in flight on
// them finish). It returns the ports that could not be opened, with why.
func (s *Server) Apply(t *Table) map[int32]string {
	s.table.Store(t)
	wanted := map[int32]bool{}
	for _, l := range t.Listeners {
		wanted[l.Port] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	unavailable := map[int32]string{}
	for p := range wanted {
		if s.ports[p] != nil {
			continue
		}
		ln, err := s.listen("tcp", net.JoinHostPort(s.cfg.BindAddress, strconv.Itoa(int(p))))
		if err != nil {
			msg := err.Error()
			if errors.Is(err, syscall.EADDRINUSE) {
				msg = "another program holds it"
			} else if errors.Is(err, syscall.EACCES) {
				msg = "permission denied"
			}
			unavailable[p] = msg
			continue
		}
		s.ports[p] = s.serve(ln, p)
	}
	for p, open := range s.ports {
		if !wanted[p] {
			delete(s.ports, p)
			go open.shutdown()
		}
	}
	return unavailable
}

// Close closes every port; requests in flight get until ctx ends.
func (s *Server) Close(ctx context.Context) {
	s.mu.Lock()
	ports := s.ports
	s.ports = map[int32]*port{}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range ports {
		wg.Go(func() {
			if err := p.srv.Shutdown(ctx); err != nil {
				p.srv.Close()
			}
		})
	}
	wg.Wait()
	s.http1.CloseIdleConnections()
	s.h2c.CloseIdleConnections()
}

func (p *port) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.srv.Shutdown(ctx); err != nil {
		p.srv.Close()
	}
}

// Addr is the address a port is open on, or nil.
func (s *Server) Addr(p int32) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.ports[p]; o != nil {
		return o.ln.Addr()
	}
	return nil
}

func (s *Server) serve(ln net.Listener, p int32) *port {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           s,
		TLSConfig:         s.tlsConfig,
		Protocols:         &protocols,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ErrorLog:          log.New(klogWriter{}, "", 0),
	}
	o := &port{ln: ln, srv: srv}
	go func() {
		if err := srv.Serve(&protoListener{Listener: ln, s: s, port: p}); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "ingress: port stopped serving", "port", p)
		}
	}()
	return o
}

// protoListener gives the HTTP server TLS connections on the addresses
// where the port is an HTTPS listener, plain ones elsewhere: one socket
// serves a port whatever its listeners' addresses.
type protoListener struct {
	net.Listener
	s    *Server
	port int32
}

func (l *protoListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if li := l.s.listenerAt(c.LocalAddr()); li != nil && li.Protocol == ProtocolHTTPS {
		return tls.Server(c, l.s.tlsConfig), nil
	}
	return c, nil
}

// listenerAt is the table's listener for a connection's local address.
func (s *Server) listenerAt(a net.Addr) *Listener {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return nil
	}
	return s.table.Load().ListenerFor(ta.IP.String(), int32(ta.Port))
}

// certificate is the listener's certificate for the client's server name,
// or the default one.
func (s *Server) certificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if hello.Conn != nil {
		if l := s.listenerAt(hello.Conn.LocalAddr()); l != nil {
			if c := l.Certificate(hello.ServerName); c != nil && c.Cert != nil {
				return c.Cert, nil
			}
		}
	}
	return s.defaultCert, nil
}

// routed is what a request was matched to, for the proxy's hooks.
type routed struct {
	rule    *Rule
	backend *Backend
}

type routedKey struct{}

func routedFrom(ctx context.Context) *routed {
	r, _ := ctx.Value(routedKey{}).(*routed)
	return r
}

// ServeHTTP routes a request by the current table.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	la, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	l := s.listenerAt(la)
	if l == nil {
		http.Error(w, "no route", http.StatusNotFound)
		return
	}
	if r.TLS != nil && l.Misdirected(r.TLS.ServerName, r.Host) {
		http.Error(w, "misdirected request: this connection was made for another host", http.StatusMisdirectedRequest)
		return
	}
	path := r.URL.EscapedPath()
	rule := l.Match(&Request{Host: r.Host, Method: r.Method, Path: path, Header: r.Header, Query: r.URL.Query()})
	if rule == nil || rule.Action == nil {
		http.Error(w, "no route", http.StatusNotFound)
		return
	}
	a := rule.Action
	if rd := a.Redirect; rd != nil {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		a.ResponseHeaders.Apply(w.Header())
		w.Header().Set("Location", RedirectLocation(rd, rule, scheme, r.Host, l.Port, path, r.URL.RawQuery))
		code := rd.StatusCode
		if code == 0 {
			code = http.StatusFound
		}
		w.WriteHeader(code)
		return
	}
	be := pickBackend(a.Backends)
	switch {
	case be == nil || be.Invalid != "":
		http.Error(w, "no valid backend", http.StatusInternalServerError)
		return
	case len(be.Endpoints) == 0:
		http.Error(w, "no ready endpoint", http.StatusServiceUnavailable)
		return
	}
	ctx := r.Context()
	if d := a.Timeouts.Request; d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	for _, m := range a.Mirrors {
		s.mirror(m, rule, r)
	}
	s.proxy.ServeHTTP(w, r.WithContext(context.WithValue(ctx, routedKey{}, &routed{rule: rule, backend: be})))
}

// pickBackend chooses a backend by weight; nil when every weight is 0.
func pickBackend(bs []*Backend) *Backend {
	var total int64
	for _, b := range bs {
		total += int64(max(b.Weight, 0))
	}
	if total == 0 {
		return nil
	}
	n := mrand.Int64N(total)
	for _, b := range bs {
		if n -= int64(max(b.Weight, 0)); n < 0 {
			return b
		}
	}
	return nil
}

var forwardedHeaders = []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// rewrite makes the request to a backend: X-Forwarded-* set by the node
// (kept from trusted proxies only), the rule's rewrite and header filters,
// then the backend's own. The Host header stays the client's unless a
// rewrite sets it.
func (s *Server) rewrite(in, out *http.Request, be *Backend) {
	rule := routedFrom(in.Context()).rule
	out.URL.Scheme = "http"
	out.URL.Host = "backend" // the round tripper picks an endpoint
	trusted := s.trusted(in.RemoteAddr)
	if trusted {
		for _, h := range forwardedHeaders[:1] {
			if v := in.Header.Values(h); len(v) > 0 {
				out.Header[h] = v
			}
		}
	}
	(&httputil.ProxyRequest{In: in, Out: out}).SetXForwarded()
	if trusted {
		for _, h := range forwardedHeaders[1:] {
			if v := in.Header.Get(h); v != "" {
				out.Header.Set(h, v)
			}
		}
	}
	if rw := rule.Rewrite; rw != nil {
		if rw.Hostname != "" {
			out.Host = rw.Hostname
		}
		if rw.Path != nil {
			setPath(out.URL, ModifyPath(rw.Path, rule, in.URL.EscapedPath()))
		}
	}
	rule.RequestHeaders.Apply(out.Header)
	be.RequestHeaders.Apply(out.Header)
}

// setPath sets an escaped path.
func setPath(u *url.URL, escaped string) {
	p, err := url.PathUnescape(escaped)
	if err != nil {
		u.Path, u.RawPath = escaped, ""
		return
	}
	u.Path, u.RawPath = p, escaped
}

func (s *Server) trusted(remote string) bool {
	if len(s.cfg.TrustedProxies) == 0 {
		return false
	}
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	for _, n := range s.cfg.TrustedProxies {
		if ip != nil && n.Contains(ip) {
			return true
		}
	}
	return false
}

func modifyResponse(resp *http.Response) error {
	if rt := routedFrom(resp.Request.Context()); rt != nil {
		rt.rule.ResponseHeaders.Apply(resp.Header)
	}
	return nil
}

func (s *Server) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusBadGateway
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
	case unreachable(err):
		code = http.StatusServiceUnavailable
	case r.Context().Err() != nil:
		return // the client went away
	}
	if rt := routedFrom(r.Context()); rt != nil {
		klog.V(2).InfoS("ingress: backend request failed", "route", rt.rule.Route, "backend", rt.backend.Service, "err", err)
	}
	http.Error(w, http.StatusText(code), code)
}

// unreachable tells whether a connection to an endpoint failed before
// anything was sent: another endpoint may take the request.
func unreachable(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}

// roundTripper sends a request to one of its backend's endpoints, from a
// random one on, and to the next when a connection is refused.
type roundTripper struct{ s *Server }

func (t roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	rt := routedFrom(req.Context())
	tr := t.s.http1
	if rt.backend.AppProtocol == AppProtocolH2C {
		tr = t.s.h2c
	}
	eps := rt.backend.Endpoints
	var body *trackedBody
	if req.Body != nil && req.Body != http.NoBody {
		// The server closes the client's body when the handler returns;
		// each attempt reads it through a wrapper that never closes it.
		body = &trackedBody{r: req.Body}
	}
	start := mrand.IntN(len(eps))
	for i := range eps {
		out := *req
		u := *req.URL
		u.Host = eps[(start+i)%len(eps)]
		out.URL, out.GetBody = &u, nil
		if body != nil {
			out.Body = body
		}
		ctx, cancel := req.Context(), context.CancelFunc(func() {})
		if d := rt.rule.Timeouts.BackendRequest; d > 0 {
			ctx, cancel = context.WithTimeout(ctx, d)
		}
		resp, err := tr.RoundTrip(out.WithContext(ctx))
		if err == nil {
			if rwc, ok := resp.Body.(io.ReadWriteCloser); ok && resp.StatusCode == http.StatusSwitchingProtocols {
				resp.Body = &cancelConn{ReadWriteCloser: rwc, cancel: cancel}
			} else {
				resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
			}
			return resp, nil
		}
		cancel()
		if !unreachable(err) || (body != nil && body.read.Load()) || i == len(eps)-1 {
			return nil, err
		}
		klog.V(4).InfoS("ingress: endpoint unreachable, trying another", "endpoint", u.Host, "err", err)
	}
	return nil, errors.New("no endpoint")
}

type trackedBody struct {
	r    io.Reader
	read atomic.Bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		b.read.Store(true)
	}
	return n, err
}

func (b *trackedBody) Close() error { return nil }

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// cancelConn is an upgraded connection: the proxy writes to it too.
type cancelConn struct {
	io.ReadWriteCloser
	cancel context.CancelFunc
}

func (c *cancelConn) Close() error {
	err := c.ReadWriteCloser.Close()
	c.cancel()
	return err
}

// mirror sends a copy of the request, without its body, to a mirror's
// backend, and forgets the answer.
func (s *Server) mirror(m *Mirror, rule *Rule, in *http.Request) {
	be := m.Backend
	if be == nil || be.Invalid != "" || len(be.Endpoints) == 0 || in.Header.Get("Upgrade") != "" {
		return
	}
	if m.Denominator > 0 && mrand.Int32N(m.Denominator) >= m.Numerator {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	rin := in.WithContext(context.WithValue(ctx, routedKey{}, &routed{rule: rule, backend: be}))
	out := rin.Clone(rin.Context())
	out.Body, out.ContentLength, out.RequestURI, out.Close = http.NoBody, 0, "", false
	for _, h := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		out.Header.Del(h)
	}
	s.rewrite(rin, out, be)
	out.URL.Host = be.Endpoints[mrand.IntN(len(be.Endpoints))]
	tr := s.http1
	if be.AppProtocol == AppProtocolH2C {
		tr = s.h2c
	}
	go func() {
		defer cancel()
		resp, err := tr.RoundTrip(out)
		if err != nil {
			klog.V(4).InfoS("ingress: mirror request failed", "backend", be.Service, "err", err)
			return
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
	}()
}

func newTransport(h2c bool) *http.Transport {
	t := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// What the client accepts goes to the backend as it is.
		DisableCompression: true,
	}
	if h2c {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		t.Protocols = &p
	}
	return t
}

// selfSigned is the certificate presented when no listener's matches.
func selfSigned() (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "skiff ingress default certificate"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"ingress.skiff.invalid"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("ingress: default certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// klogWriter takes the HTTP servers' own messages (TLS handshake errors
// and the like) to klog at a level where they do not flood.
type klogWriter struct{}

func (klogWriter) Write(p []byte) (int, error) {
	klog.V(3).InfoS("ingress: http server", "msg", string(p))
	return len(p), nil
}
