package registries

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseRejects(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.txt")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	for _, c := range []struct{ name, yaml, want string }{
		{"top-level key", "mirror: {}", `unknown key mirror: the keys here are configs, mirrors`},
		{"mirror key", "mirrors:\n  docker.io:\n    endpoints: [https://m]", `unknown key mirrors."docker.io".endpoints: the keys here are endpoint, rewrite`},
		{"tls key", "configs:\n  m:\n    tls:\n      ca: /x", `unknown key configs."m".tls.ca: the keys here are ca_file, cert_file, insecure_skip_verify, key_file`},
		{"no scheme", "mirrors:\n  docker.io:\n    endpoint: [mirror:5000]", `mirrors."docker.io".endpoint[0]: "mirror:5000" is not an http:// or https:// URL: write it with its scheme, as https://mirror:5000`},
		{"user in URL", "mirrors:\n  docker.io:\n    endpoint: [\"https://u:secret@m\"]", `put credentials under configs`},
		{"bad regex", "mirrors:\n  docker.io:\n    endpoint: [https://m]\n    rewrite:\n      \"^(library\": x", `mirrors."docker.io".rewrite: "^(library" is not a regular expression`},
		{"rewrite without endpoint", "mirrors:\n  docker.io:\n    rewrite:\n      a: b", `has none: add an endpoint list`},
		{"missing CA", "configs:\n  m:\n    tls:\n      ca_file: /no/such/ca.pem", `configs."m".tls.ca_file: no such file or directory: fix the path or remove the key`},
		{"CA not PEM", "configs:\n  m:\n    tls:\n      ca_file: " + notPEM, `holds no PEM certificate`},
		{"relative CA", "configs:\n  m:\n    tls:\n      ca_file: ca.pem", `is not an absolute path`},
		{"cert without key", "configs:\n  m:\n    tls:\n      cert_file: /x.pem", `cert_file and key_file go together`},
		{"bad auth", "configs:\n  m:\n    auth:\n      auth: \"secret!!\"", `configs."m".auth.auth is not base64 of username:password`},
		{"URL as registry", "mirrors:\n  https://docker.io:\n    endpoint: [https://m]", `a registry is named by its host`},
		{"wrong type", "mirrors:\n  docker.io:\n    endpoint: https://m", `must be a list, not a string`},
		{"not a map", "- a", `must be a map with mirrors and configs`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
			if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error holds a secret or several lines: %v", err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	r, err := Load(filepath.Join(t.TempDir(), "none.yaml"), false)
	if err != nil || len(r.Hosts()) != 0 {
		t.Fatalf("missing default file: %v %v", r, err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "none.yaml"), true); err == nil {
		t.Fatal("a named file that does not exist must be an error")
	}
}

func layout(t *testing.T, yaml string, disableDefault bool, proxies map[string]string) Layout {
	t.Helper()
	r, err := Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	r.Path = "/etc/skiff/registries.yaml"
	return r.Containerd(disableDefault, proxies)
}

func body(s string) string {
	_, rest, _ := strings.Cut(s, "\n")
	return rest
}

func TestContainerdLayout(t *testing.T) {
	const file = `
mirrors:
  docker.io:
    endpoint: ["https://mirror.local:5000", "http://10.0.0.1:5000/v2/", "https://harbor.local/v2/proxy-docker"]
  "*":
    endpoint: ["https://mirror.local:5000"]
  rewritten.local:
    endpoint: ["https://mirror.local:5000"]
    rewrite:
      "^library/(.*)": "mirror/$1"
configs:
  mirror.local:5000:
    auth: {username: u, password: p}
    tls: {ca_file: CA}
  own-tls.local:
    tls: {insecure_skip_verify: true}
  docker.io:
    auth: {username: d, password: dp}
`
	ca := filepath.Join(t.TempDir(), "ca.pem")
	writeCA(t, ca)
	l := layout(t, strings.ReplaceAll(file, "CA", ca), false, map[string]string{"rewritten.local https://mirror.local:5000": "http://127.0.0.1:4000/s3/v2"})
	want := map[string]string{
		"docker.io": `
[host."https://mirror.local:5000/v2"]
  capabilities = ["pull", "resolve"]
  ca = "` + ca + `"

[host."http://10.0.0.1:5000/v2"]
  capabilities = ["pull", "resolve"]

[host."https://harbor.local/v2/proxy-docker"]
  capabilities = ["pull", "resolve"]
  override_path = true
`,
		DefaultDir: `
[host."https://mirror.local:5000/v2"]
  capabilities = ["pull", "resolve"]
  ca = "` + ca + `"
`,
		"own-tls.local": `skip_verify = true

[host."https://mirror.local:5000/v2"]
  capabilities = ["pull", "resolve"]
  ca = "` + ca + `"
`,
		// A host with TLS settings of its own has its own directory, which
		// hides the wildcard's: it carries the wildcard's mirrors too.
		"mirror.local:5000": "ca = \"" + ca + "\"\n" + `
[host."https://mirror.local:5000/v2"]
  capabilities = ["pull", "resolve"]
  ca = "` + ca + `"
`,
		"rewritten.local": `
[host."http://127.0.0.1:4000/s3/v2"]
  capabilities = ["pull", "resolve"]
  override_path = true
`,
	}
	if len(l.Hosts) != len(want) {
		t.Errorf("host dirs: got %d, want %d", len(l.Hosts), len(want))
	}
	for dir, w := range want {
		if got := body(string(l.Hosts[dir])); got != w {
			t.Errorf("%s/hosts.toml:\n%s\nwant:\n%s", dir, got, w)
		}
	}
	for host, user := range map[string]string{"mirror.local:5000": "u", "127.0.0.1:4000": "u", "docker.io": "d", "registry-1.docker.io": "d"} {
		if l.Auths[host].Username != user {
			t.Errorf("auth of %s: %+v, want user %s", host, l.Auths[host], user)
		}
	}
	if _, ok := l.Auths["own-tls.local"]; ok {
		t.Errorf("own-tls.local has no credentials")
	}
}

func TestContainerdLayoutNoDefault(t *testing.T) {
	l := layout(t, "mirrors:\n  docker.io:\n    endpoint: [\"http://a:5000\", \"https://b/v2\"]\n", true, nil)
	want := `server = "https://b/v2"
capabilities = ["pull", "resolve"]

[host."http://a:5000/v2"]
  capabilities = ["pull", "resolve"]
`
	if got := body(string(l.Hosts["docker.io"])); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestRewrite(t *testing.T) {
	p, err := NewProxy(Rewritten{Registry: "docker.io", Endpoint: "https://m/v2/proxy", Rules: map[string]string{
		"^library/(.*)": "mirror/$1",
		"^z/(.*)":       "zz/$1",
	}}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if p.target.String() != "https://m/v2/proxy" {
		t.Errorf("target %s", p.target)
	}
	for in, want := range map[string]string{
		"library/busybox/manifests/1":             "mirror/busybox/manifests/1",
		"library/a/blobs/b/manifests/sha256:1":    "mirror/a/blobs/b/manifests/sha256:1",
		"library/busybox/blobs/sha256:abc":        "mirror/busybox/blobs/sha256:abc",
		"other/busybox/manifests/1":               "other/busybox/manifests/1",
		"z/library/x/tags/list":                   "zz/library/x/tags/list",
		"":                                        "",
		"library/busybox/referrers/sha256:abcdef": "mirror/busybox/referrers/sha256:abcdef",
	} {
		if got := p.Rewrite(in); got != want {
			t.Errorf("Rewrite(%q) = %q, want %q", in, got, want)
		}
	}
}

func writeCA(t *testing.T, path string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
}

func TestProxy(t *testing.T) {
	var seen []string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		if strings.Contains(r.URL.Path, "/blobs/") && !strings.Contains(r.URL.Path, "/moved/") {
			w.Header().Set("Location", "/v2/mirror/moved/blobs/sha256:1")
			w.WriteHeader(http.StatusTemporaryRedirect)
		}
	}))
	defer upstream.Close()
	p, err := NewProxy(Rewritten{Registry: "docker.io", Endpoint: upstream.URL, Rules: map[string]string{"^library/(.*)": "mirror/$1"}}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(p)
	defer front.Close()
	get := func(method, path string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, front.URL+path, nil)
		req.Header.Set("Authorization", "Basic eDp5")
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := get("GET", "/v2/library/busybox/manifests/1"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("a path without the proxy's secret: %d, want 404", resp.StatusCode)
	}
	if resp := get("GET", p.Root()+"/library/busybox/manifests/1"); resp.StatusCode != http.StatusOK {
		t.Errorf("manifest: %d", resp.StatusCode)
	}
	resp := get("GET", p.Root()+"/library/busybox/blobs/sha256:1")
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, p.raw()+"/v2/mirror/moved/") {
		t.Fatalf("redirect: %d %q", resp.StatusCode, loc)
	}
	get("GET", loc)
	if resp := get("POST", p.Root()+"/library/busybox/blobs/uploads/"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("a push: %d, want 405", resp.StatusCode)
	}
	want := []string{
		"GET /v2/mirror/busybox/manifests/1 Basic eDp5",
		"GET /v2/mirror/busybox/blobs/sha256:1 Basic eDp5",
		"GET /v2/mirror/moved/blobs/sha256:1 Basic eDp5",
	}
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Errorf("the endpoint saw:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
}
