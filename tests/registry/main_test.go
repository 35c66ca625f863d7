// Package registry tests a node's registries.yaml against a registry the
// test serves on loopback, with TLS from a CA of its own and basic auth:
// mirrors, credentials, rewrites, the wildcard, endpoint fallback, and the
// file's bad inputs.
package registry

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiff-dev/skiff/tests/cluster"
)

const (
	user     = "skiff"
	password = "registry-pass-4711"
)

var (
	srv *cluster.Server
	// reg is the test registry's host:port (127.0.0.1:PORT); its
	// certificate also names localhost.
	reg string
	// registriesFile is the node's --private-registry.
	registriesFile string
	caFile         string
	dir            string
)

func TestMain(m *testing.M) {
	var stopRegistry func()
	code := cluster.Main(m, "registry", func(d string) (*cluster.Server, error) {
		dir = d
		var err error
		if stopRegistry, err = startRegistry(dir); err != nil {
			return nil, fmt.Errorf("test registry: %w", err)
		}
		registriesFile = filepath.Join(dir, "registries.yaml")
		if err := os.WriteFile(registriesFile, []byte(registriesYAML()), 0o600); err != nil {
			return nil, err
		}
		srv, err = cluster.NewNode(filepath.Join(dir, "node"), "--private-registry", registriesFile, "--disable-default-registry-endpoint")
		return srv, err
	})
	if stopRegistry != nil {
		stopRegistry()
	}
	os.Exit(code)
}

// registriesYAML is the node's registries.yaml: made-up registry names, all
// served by the test registry, and a dead endpoint.
func registriesYAML() string {
	dead := fmt.Sprintf("127.0.0.1:%d", cluster.FreePort())
	port := strings.TrimPrefix(reg, "127.0.0.1:")
	return fmt.Sprintf(`# written by the registry test
mirrors:
  registry.skiff.test:
    endpoint: ["https://%[1]s"]
  fallback.skiff.test:
    endpoint: ["http://%[2]s", "https://%[1]s"]
  badauth.skiff.test:
    endpoint: ["https://localhost:%[3]s"]
  docker.io:
    endpoint: ["https://%[1]s"]
    rewrite:
      "^library/(.*)": "mirror/$1"
  "*":
    endpoint: ["https://%[1]s"]
configs:
  "%[1]s":
    auth:
      username: %[4]s
      password: %[5]s
    tls:
      ca_file: %[6]s
  "localhost:%[3]s":
    auth:
      username: %[4]s
      password: not-the-password
    tls:
      ca_file: %[6]s
`, reg, dead, port, user, password, caFile)
}

// startRegistry serves the test registry and pushes the test image to it
// as busybox:1, mirror/busybox:1 and other/busybox:1.
func startRegistry(dir string) (func(), error) {
	r, err := cluster.StartRegistry(dir, user, password)
	if err != nil {
		return nil, err
	}
	if err := r.Push("busybox:1", "mirror/busybox:1", "other/busybox:1"); err != nil {
		r.Close()
		return nil, err
	}
	reg, caFile = r.Host, r.CAFile
	return r.Close, nil
}
