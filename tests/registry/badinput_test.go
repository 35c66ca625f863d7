package registry

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// tree lists what is under dir.
func tree(dir string) string {
	var paths []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		paths = append(paths, path)
		return nil
	})
	sort.Strings(paths)
	return strings.Join(paths, "\n")
}

// TestBadInput: a node with a bad registries.yaml stops at start with one
// line naming the key and the fix, and writes nothing.
func TestBadInput(t *testing.T) {
	for _, c := range []struct{ name, yaml, want string }{
		{"unknown key", "mirrors:\n  docker.io:\n    endpoints: [\"https://m\"]\n", `unknown key mirrors."docker.io".endpoints: the keys here are endpoint, rewrite`},
		{"no scheme", "mirrors:\n  docker.io:\n    endpoint: [\"mirror.local:5000\"]\n", `"mirror.local:5000" is not an http:// or https:// URL: write it with its scheme, as https://mirror.local:5000`},
		{"unreadable CA", "configs:\n  mirror.local:\n    tls:\n      ca_file: /no/such/ca.crt\n", `configs."mirror.local".tls.ca_file: no such file or directory: fix the path or remove the key`},
		{"unusable key", "configs:\n  mirror.local:\n    tls:\n      cert_file: CA\n      key_file: CA\n", `the client certificate and key cannot be used`},
		{"bad regex", "mirrors:\n  docker.io:\n    endpoint: [\"https://m\"]\n    rewrite:\n      \"^library/(.*\": \"mirror/$1\"\n", `mirrors."docker.io".rewrite: "^library/(.*" is not a regular expression`},
		{"not YAML", "mirrors: [\n", `not valid YAML`},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := t.TempDir()
			file := filepath.Join(d, "registries.yaml")
			os.WriteFile(file, []byte(strings.ReplaceAll(c.yaml, "CA", caFile)+"# "+password+"\n"), 0o600)
			data := filepath.Join(d, "data")
			os.Mkdir(data, 0o700)
			before := tree(data)
			code, out := cluster.Run(context.Background(), nil, "agent", "--server", "https://127.0.0.1:1", "--token", "K10abc::server:0123456789abcdef",
				"--data-dir", data, "--private-registry", file)
			checkFailure(t, code, out, c.want)
			if after := tree(data); after != before {
				t.Errorf("the data dir changed:\n%s\nwas:\n%s", after, before)
			}
		})
	}
	t.Run("named file missing", func(t *testing.T) {
		d := t.TempDir()
		code, out := cluster.Run(context.Background(), nil, "agent", "--server", "https://127.0.0.1:1", "--token", "K10abc::server:0123456789abcdef",
			"--data-dir", filepath.Join(d, "data"), "--private-registry", filepath.Join(d, "none.yaml"))
		checkFailure(t, code, out, "--private-registry: open "+filepath.Join(d, "none.yaml")+": no such file or directory")
		if _, err := os.Stat(filepath.Join(d, "data")); err == nil {
			t.Errorf("the data dir was made")
		}
	})
	t.Run("server node", func(t *testing.T) {
		d := t.TempDir()
		file := filepath.Join(d, "registries.yaml")
		os.WriteFile(file, []byte("mirrors:\n  docker.io:\n    endpoint: [\"ftp://m\"]\n"), 0o600)
		data := filepath.Join(d, "data")
		os.Mkdir(data, 0o700)
		code, out := cluster.Run(context.Background(), nil, "server", "--data-dir", data, "--https-listen-port", fmt.Sprint(cluster.FreePort()),
			"--cluster-cidr", "10.99.0.0/16", "--service-cidr", "10.98.0.0/16", "--write-kubeconfig", filepath.Join(d, "kubeconfig.yaml"),
			"--private-registry", file)
		checkFailure(t, code, out, `mirrors."docker.io".endpoint[0]: "ftp://m" is not an http:// or https:// URL`)
		if got := tree(data); got != data {
			t.Errorf("the data dir changed:\n%s", got)
		}
	})
}

// checkFailure wants a non-zero exit and one error line holding want, and no
// secret from the file in the output.
func checkFailure(t *testing.T, code int, out, want string) {
	t.Helper()
	if code == 0 {
		t.Fatalf("exit 0, want an error:\n%s", out)
	}
	var errLines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, "skiff: ") {
			errLines = append(errLines, l)
		}
	}
	if len(errLines) != 1 || !strings.Contains(errLines[0], want) {
		t.Fatalf("want one line \"skiff: ...%s...\", got:\n%s", want, out)
	}
	if strings.Contains(out, password) {
		t.Fatalf("the output holds a secret of the file:\n%s", out)
	}
}
