// Package registries reads a node's registries.yaml, in k3s's schema, and
// turns it into containerd's own registry configuration: a hosts.toml per
// registry under containerd's config_path, and credentials for the CRI image
// service's config.
package registries

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// DefaultPath is read when it exists and no other file is named.
const DefaultPath = "/etc/skiff/registries.yaml"

// Wildcard is the registry name that stands for every registry.
const Wildcard = "*"

// Registries is the content of a registries.yaml.
type Registries struct {
	Mirrors map[string]Mirror `json:"mirrors"`
	Configs map[string]Config `json:"configs"`
	// Path is the file it was read from; empty when there was none.
	Path string `json:"-"`
	sum  [sha256.Size]byte
}

// Mirror lists the endpoints to pull a registry's images from, in order.
type Mirror struct {
	Endpoints []string `json:"endpoint"`
	// Rewrite maps repository names (a regular expression and its
	// replacement) before they are pulled from these endpoints.
	Rewrite map[string]string `json:"rewrite"`
}

// Config is how to reach one registry host (host or host:port).
type Config struct {
	Auth *Auth `json:"auth"`
	TLS  *TLS  `json:"tls"`
}

// Auth is a registry's credentials.
type Auth struct {
	Username      string `json:"username"`
	Password      string `json:"password"`
	Auth          string `json:"auth"`
	IdentityToken string `json:"identity_token"`
}

// TLS is a registry's TLS client settings.
type TLS struct {
	CAFile             string `json:"ca_file"`
	CertFile           string `json:"cert_file"`
	KeyFile            string `json:"key_file"`
	InsecureSkipVerify bool   `json:"insecure_skip_verify"`
}

// schema lists the keys each level of the file may have; "" stands for a
// map key of the user's (a registry name).
var schema = map[string]any{
	"mirrors": map[string]any{"": map[string]any{"endpoint": nil, "rewrite": nil}},
	"configs": map[string]any{"": map[string]any{
		"auth": map[string]any{"username": nil, "password": nil, "auth": nil, "identity_token": nil},
		"tls":  map[string]any{"ca_file": nil, "cert_file": nil, "key_file": nil, "insecure_skip_verify": nil},
	}},
}

// Load reads and checks the file at path. A file that does not exist is no
// registries unless named (the user gave its path). Errors are one line that
// names the file, the key and the fix; they never hold a secret.
func Load(path string, named bool) (*Registries, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !named {
		return &Registries{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("--private-registry: %w", err)
	}
	r, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r.Path, r.sum = path, sha256.Sum256(data)
	return r, nil
}

// Changed says whether the file now holds something other than what Load
// read.
func (r *Registries) Changed() bool {
	data, err := os.ReadFile(r.Path)
	return err != nil || sha256.Sum256(data) != r.sum
}

// Parse reads and checks a registries.yaml's content.
func Parse(data []byte) (*Registries, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("not valid YAML: %v", err)
	}
	var doc any
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, fmt.Errorf("not valid YAML: %v", err)
	}
	if doc != nil {
		if err := checkKeys(doc, schema, ""); err != nil {
			return nil, err
		}
	}
	r := &Registries{}
	dec := json.NewDecoder(bytes.NewReader(js))
	if err := dec.Decode(r); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("%s must be a %s, not a %s", te.Field, kind(te.Type.String()), te.Value)
		}
		return nil, err
	}
	return r, r.check()
}

func kind(goType string) string {
	switch {
	case strings.HasPrefix(goType, "map["), strings.HasPrefix(goType, "registries."), strings.HasPrefix(goType, "*registries."):
		return "map"
	case strings.HasPrefix(goType, "[]"):
		return "list"
	case goType == "bool":
		return "true or false"
	}
	return goType
}

// checkKeys walks doc along schema and names the first key it does not know,
// with its whole path.
func checkKeys(doc any, schema map[string]any, path string) error {
	m, ok := doc.(map[string]any)
	if !ok {
		if path == "" {
			return errors.New("must be a map with mirrors and configs")
		}
		return fmt.Errorf("%s must be a map", path)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		sub, known := schema[k]
		name := k
		if !known {
			if sub, known = schema[""]; known {
				name = fmt.Sprintf("%q", k)
			}
		}
		p := name
		if path != "" {
			p = path + "." + name
		}
		if !known {
			var want []string
			for s := range schema {
				want = append(want, s)
			}
			sort.Strings(want)
			return fmt.Errorf("unknown key %s: the keys here are %s", p, strings.Join(want, ", "))
		}
		if s, ok := sub.(map[string]any); ok && m[k] != nil {
			if err := checkKeys(m[k], s, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// check validates what a node needs before it writes anything: endpoint
// URLs, rewrite patterns, and that TLS files can be read and used.
func (r *Registries) check() error {
	for _, name := range slices.Sorted(maps.Keys(r.Mirrors)) {
		m := r.Mirrors[name]
		key := fmt.Sprintf("mirrors.%q", name)
		if err := checkHost(name, key); err != nil {
			return err
		}
		for i, e := range m.Endpoints {
			if _, err := ParseEndpoint(e); err != nil {
				return fmt.Errorf("%s.endpoint[%d]: %v", key, i, err)
			}
		}
		for _, pattern := range slices.Sorted(maps.Keys(m.Rewrite)) {
			if _, err := regexp.Compile(pattern); err != nil {
				return fmt.Errorf("%s.rewrite: %q is not a regular expression (%v): fix or quote it", key, pattern, errors.Unwrap(err))
			}
		}
		if len(m.Rewrite) > 0 && len(m.Endpoints) == 0 {
			return fmt.Errorf("%s.rewrite applies to its endpoints, and it has none: add an endpoint list", key)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(r.Configs)) {
		c := r.Configs[name]
		key := fmt.Sprintf("configs.%q", name)
		if err := checkHost(name, key); err != nil {
			return err
		}
		if a := c.Auth; a != nil && a.Auth != "" {
			dec, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil || !strings.Contains(string(dec), ":") {
				return fmt.Errorf("%s.auth.auth is not base64 of username:password: give username and password instead", key)
			}
		}
		if t := c.TLS; t != nil {
			if err := t.check(key + ".tls"); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkHost(name, key string) error {
	if name == Wildcard {
		return nil
	}
	if name == "" || strings.ContainsAny(name, "/ ") || strings.Contains(name, "://") {
		return fmt.Errorf("%s: a registry is named by its host or host:port, as in image names (docker.io, registry.example.com:5000)", key)
	}
	return nil
}

func (t *TLS) check(key string) error {
	for _, f := range []struct{ key, path string }{{"ca_file", t.CAFile}, {"cert_file", t.CertFile}, {"key_file", t.KeyFile}} {
		if f.path != "" && !filepath.IsAbs(f.path) {
			return fmt.Errorf("%s.%s %q is not an absolute path: give the whole path", key, f.key, f.path)
		}
	}
	if t.CAFile != "" {
		data, err := os.ReadFile(t.CAFile)
		if err != nil {
			return fmt.Errorf("%s.ca_file: %v: fix the path or remove the key", key, errors.Unwrap(err))
		}
		if !x509.NewCertPool().AppendCertsFromPEM(data) {
			return fmt.Errorf("%s.ca_file %s holds no PEM certificate: give the CA's certificate", key, t.CAFile)
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return fmt.Errorf("%s: cert_file and key_file go together: give both or neither", key)
	}
	if t.CertFile != "" {
		if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
			return fmt.Errorf("%s: the client certificate and key cannot be used (%v): fix cert_file and key_file", key, err)
		}
	}
	return nil
}

// ParseEndpoint checks a mirror endpoint: an http or https URL with a host.
func ParseEndpoint(e string) (*url.URL, error) {
	u, err := url.Parse(e)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("%q is not an http:// or https:// URL: write it with its scheme, as https://%s", e, strings.TrimPrefix(strings.TrimPrefix(e, "//"), "/"))
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%q: an endpoint has no user, query or fragment: put credentials under configs", redact(u))
	}
	return u, nil
}

func redact(u *url.URL) string {
	c := *u
	c.User, c.RawQuery, c.Fragment = nil, "", ""
	return c.String()
}

// Hosts is every registry host the file names (mirror keys and config keys,
// the wildcard excluded), sorted.
func (r *Registries) Hosts() []string {
	set := map[string]bool{}
	for h := range r.Mirrors {
		set[h] = true
	}
	for h := range r.Configs {
		set[h] = true
	}
	delete(set, Wildcard)
	return slices.Sorted(maps.Keys(set))
}

// ConfigFor is the config of host, or the wildcard's when it has none.
func (r *Registries) ConfigFor(host string) Config {
	if c, ok := r.Configs[host]; ok {
		return c
	}
	return r.Configs[Wildcard]
}
