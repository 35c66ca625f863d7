// Package registry tests a node's registries.yaml against a registry the
// test serves on loopback, with TLS from a CA of its own and basic auth:
// mirrors, credentials, rewrites, the wildcard, endpoint fallback, and the
// file's bad inputs.
package registry

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

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

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	var err error
	if dir, err = os.MkdirTemp("", "skiff-registry-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	stop, err := startRegistry(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "test registry:", err)
		return 1
	}
	defer stop()
	registriesFile = filepath.Join(dir, "registries.yaml")
	if err := os.WriteFile(registriesFile, []byte(registriesYAML()), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv, err = cluster.NewNode(filepath.Join(dir, "node"), "--private-registry", registriesFile, "--disable-default-registry-endpoint")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := srv.Teardown(); err != nil {
			fmt.Fprintln(os.Stderr, "teardown:", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		srv.Stop()
		return 1
	}
	code := 1
	if err := waitNodeReady(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "node not ready: %v\n%s\n", err, srv.LogTail(60))
	} else {
		code = m.Run()
	}
	if err := srv.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping the node: %v\n", err)
		code = 1
	}
	if code != 0 {
		fmt.Fprintf(os.Stderr, "node log:\n%s\n", srv.LogTail(60))
	}
	return code
}

func waitNodeReady(ctx context.Context) error {
	cs, err := srv.Client()
	if err != nil {
		return err
	}
	return wait.PollUntilContextCancel(ctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if srv.Exited() {
			return false, fmt.Errorf("the node exited")
		}
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		return err == nil && len(nodes.Items) == 1 && cluster.NodeReady(ctx, cs, nodes.Items[0].Name), nil
	})
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
