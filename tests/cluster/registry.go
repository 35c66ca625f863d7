package cluster

import (
	"archive/tar"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/skiff-dev/skiff/internal/pki"
)

// Registry is an in-memory registry on loopback, over TLS from a CA of its
// own, that lets only its user in (basic auth).
type Registry struct {
	// Host is 127.0.0.1:PORT; the certificate also names localhost.
	Host, CAFile   string
	User, Password string
	srv            *httptest.Server
	tr             *http.Transport
	img            v1.Image
}

// StartRegistry starts a registry with its CA and certificate in dir.
func StartRegistry(dir, user, password string) (*Registry, error) {
	ca, err := pki.LoadOrCreateCA(dir, "registry-ca", "skiff test registry CA")
	if err != nil {
		return nil, err
	}
	certFile, keyFile := filepath.Join(dir, "registry.crt"), filepath.Join(dir, "registry.key")
	if _, err := ca.EnsureCert(certFile, keyFile, pki.Spec{CommonName: "registry", DNSNames: []string{"localhost"},
		IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Usage: pki.Server}); err != nil {
		return nil, err
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	r := &Registry{CAFile: ca.CertFile, User: user, Password: password}
	r.srv = httptest.NewUnstartedServer(r.basicAuth(registry.New(registry.Logger(log.New(io.Discard, "", 0)))))
	r.srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	r.srv.StartTLS()
	r.Host = strings.TrimPrefix(r.srv.URL, "https://")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	r.tr = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	if r.img, err = busyboxImage(filepath.Join(dir, "image")); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// Push pushes the test image (BusyboxImage's content) as each repo:tag.
func (r *Registry) Push(refs ...string) error {
	for _, s := range refs {
		ref, err := name.ParseReference(r.Host + "/" + s)
		if err == nil {
			err = remote.Write(ref, r.img, remote.WithAuth(&authn.Basic{Username: r.User, Password: r.Password}), remote.WithTransport(r.tr))
		}
		if err != nil {
			return fmt.Errorf("pushing %s: %w", s, err)
		}
	}
	return nil
}

// ImageSize is the pushed image's size: its layers and config, compressed.
func (r *Registry) ImageSize() (int64, error) {
	m, err := r.img.Manifest()
	if err != nil {
		return 0, err
	}
	n := m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n, nil
}

// Close stops the registry.
func (r *Registry) Close() { r.srv.Close() }

// basicAuth lets through requests with the registry's credentials only.
func (r *Registry) basicAuth(next http.Handler) http.Handler {
	want := []byte(r.User + ":" + r.Password)
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		u, p, ok := req.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(u+":"+p), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="skiff-test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, req)
	})
}

// busyboxImage is the tests' busybox image, read back from its OCI layout.
func busyboxImage(dir string) (v1.Image, error) {
	if err := WriteBusyboxImage(dir); err != nil {
		return nil, err
	}
	layoutDir := filepath.Join(dir, "layout")
	if err := untar(filepath.Join(dir, "busybox.tar"), layoutDir); err != nil {
		return nil, err
	}
	idx, err := layout.ImageIndexFromPath(layoutDir)
	if err != nil {
		return nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(m.Manifests) != 1 {
		return nil, fmt.Errorf("the test image's layout has %d manifests, want 1", len(m.Manifests))
	}
	return idx.Image(m.Manifests[0].Digest)
}

func untar(file, dst string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		path := filepath.Join(dst, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(path, 0o700)
		case tar.TypeReg:
			if err = os.MkdirAll(filepath.Dir(path), 0o700); err == nil {
				var out *os.File
				if out, err = os.Create(path); err == nil {
					_, err = io.Copy(out, tr)
					out.Close()
				}
			}
		}
		if err != nil {
			return err
		}
	}
}
