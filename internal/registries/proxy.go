package registries

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"maps"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
)

// Proxy serves one mirror endpoint to containerd with repository names
// rewritten by the mirror's rules.
//
// Written by hand: containerd reads no rewrite setting (k3s patches its
// containerd to add one), and a patched containerd is not an option. This is
// the standard library's reverse proxy with a path rewrite; credentials,
// tokens and retries stay containerd's, which talks to it over loopback.
type Proxy struct {
	target *url.URL // scheme, host and the API's root path
	// secret starts every path the proxy serves: only containerd, which
	// reads it from its 0600 hosts.toml, can use the endpoint's client
	// certificate through the proxy.
	secret string
	rules  []rule
	rp     *httputil.ReverseProxy
}

type rule struct {
	re   *regexp.Regexp
	repl string
}

// Proxies returns a proxy for each rewritten endpoint, by Rewritten.Key(),
// each reaching its endpoint with the endpoint host's TLS settings.
func (r *Registries) Proxies() (map[string]*Proxy, error) {
	out := map[string]*Proxy{}
	for _, rw := range r.Rewrites() {
		p, err := NewProxy(rw, r.ConfigFor(hostOf(rw.Endpoint)))
		if err != nil {
			return nil, fmt.Errorf("%s: mirror %s, endpoint %s: %v", r.Path, rw.Registry, rw.Endpoint, err)
		}
		out[rw.Key()] = p
	}
	return out, nil
}

// NewProxy returns the proxy for rw, reaching its endpoint with the TLS
// settings of cfg.
func NewProxy(rw Rewritten, cfg Config) (*Proxy, error) {
	u, err := ParseEndpoint(rw.Endpoint)
	if err != nil {
		return nil, err
	}
	root := endpointEntry(rw.Endpoint, nil)
	target, _ := url.Parse(root.url)
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	p := &Proxy{target: target, secret: "/" + hex.EncodeToString(b[:])}
	for _, pattern := range slices.Sorted(maps.Keys(rw.Rules)) {
		re, err := regexp.Compile(pattern)
		if err != nil {
			return nil, err
		}
		p.rules = append(p.rules, rule{re, rw.Rules[pattern]})
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{ServerName: u.Hostname()}
	if t := cfg.TLS; t != nil {
		tr.TLSClientConfig.InsecureSkipVerify = t.InsecureSkipVerify
		if t.CAFile != "" {
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			data, err := os.ReadFile(t.CAFile)
			if err != nil {
				return nil, err
			}
			pool.AppendCertsFromPEM(data)
			tr.TLSClientConfig.RootCAs = pool
		}
		if t.CertFile != "" {
			pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
			if err != nil {
				return nil, err
			}
			tr.TLSClientConfig.Certificates = []tls.Certificate{pair}
		}
	}
	p.rp = &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host, pr.Out.Host = p.target.Scheme, p.target.Host, p.target.Host
			pr.Out.URL.Path, pr.Out.URL.RawPath = pr.In.URL.Path, ""
		},
		ModifyResponse: p.localRedirect,
	}
	return p, nil
}

// Root is the API root containerd reaches the proxy at (override_path).
func (p *Proxy) Root() string { return p.secret + "/v2" }

// raw starts the paths the proxy forwards unchanged: the endpoint's own
// redirects, whose repository names are already the endpoint's.
func (p *Proxy) raw() string { return p.secret + "/raw" }

// ServeHTTP forwards a registry API request to the endpoint, its repository
// name rewritten.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var upstream string
	if raw, ok := strings.CutPrefix(r.URL.Path, p.raw()); ok {
		upstream = raw
	} else if rest, ok := strings.CutPrefix(r.URL.Path, p.Root()+"/"); ok {
		upstream = p.target.Path + "/" + p.Rewrite(rest)
	} else if r.URL.Path == p.Root() {
		upstream = p.target.Path + "/"
	} else {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "this mirror serves pulls only", http.StatusMethodNotAllowed)
		return
	}
	out := r.Clone(r.Context())
	out.URL.Path = strings.ReplaceAll(upstream, "//", "/")
	p.rp.ServeHTTP(w, out)
}

// Rewrite maps an API path below /v2/ (NAME/manifests/REF, NAME/blobs/DIGEST,
// NAME/tags/list, NAME/referrers/DIGEST) by the first rule, in the rules'
// sorted order, that matches NAME.
func (p *Proxy) Rewrite(path string) string {
	cut := -1
	for _, kind := range []string{"/manifests/", "/blobs/", "/tags/", "/referrers/"} {
		if i := strings.LastIndex(path, kind); i > cut {
			cut = i
		}
	}
	if cut <= 0 {
		return path
	}
	name, rest := path[:cut], path[cut:]
	for _, r := range p.rules {
		if r.re.MatchString(name) {
			return r.re.ReplaceAllString(name, r.repl) + rest
		}
	}
	return name + rest
}

// localRedirect keeps a redirect to the endpoint itself on the proxy (the
// endpoint's TLS settings are the proxy's, not containerd's), unchanged by
// the rules.
func (p *Proxy) localRedirect(resp *http.Response) error {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return nil
	}
	u, err := url.Parse(loc)
	if err != nil {
		return fmt.Errorf("the mirror's redirect %q: %w", loc, err)
	}
	if u.Host == "" || (u.Host == p.target.Host && u.Scheme == p.target.Scheme) {
		if !strings.HasPrefix(u.Path, "/") {
			u.Path = resp.Request.URL.ResolveReference(&url.URL{Path: u.Path}).Path
		}
		resp.Header.Set("Location", (&url.URL{Path: p.raw() + u.Path, RawQuery: u.RawQuery}).String())
	}
	return nil
}
