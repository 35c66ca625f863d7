package controlplane

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	_ "modernc.org/sqlite" // reads the server's state.db

	"github.com/skiff-dev/skiff/tests/cluster"
)

// rawSecret is a Secret's newest row in the server's state.db.
func rawSecret(t *testing.T, s *cluster.Server, ns, name string) string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(s.DataDir, "server", "db", "state.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v []byte
	if err := db.QueryRow(`SELECT value FROM kine WHERE name = ? ORDER BY id DESC LIMIT 1`, "/registry/secrets/"+ns+"/"+name).Scan(&v); err != nil {
		t.Fatalf("the row of Secret %s/%s: %v", ns, name, err)
	}
	return string(v)
}

func createSecret(t *testing.T, s *cluster.Server, name string) {
	t.Helper()
	if _, err := s.ClientT(t).CoreV1().Secrets("default").Create(cluster.Context(t), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name}, StringData: map[string]string{"k": "the-value"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestSecretsEncryption: with --secrets-encryption a Secret's row starts
// with the provider's prefix; rotate-keys moves every Secret to a new key,
// and they read back unchanged.
func TestSecretsEncryption(t *testing.T) {
	t.Run("off by default", func(t *testing.T) {
		createSecret(t, srv, "plain")
		if raw := rawSecret(t, srv, "default", "plain"); strings.HasPrefix(raw, "k8s:enc:") {
			t.Fatalf("a server without --secrets-encryption encrypted a Secret: %.40q", raw)
		}
	})
	t.Run("bad provider", func(t *testing.T) {
		s := cluster.New(t.TempDir(), "--secrets-encryption", "--secrets-encryption-provider", "rot13")
		os.MkdirAll(s.DataDir, 0o700)
		cluster.FailsClearly(t, s.DataDir, `--secrets-encryption-provider "rot13": give secretbox (the default) or aescbc`, nil, s.Args()...)
	})

	s := cluster.StartT(t, "--secrets-encryption")
	createSecret(t, s, "mine")
	raw := rawSecret(t, s, "default", "mine")
	if !strings.HasPrefix(raw, "k8s:enc:secretbox:v1:") || strings.Contains(raw, "the-value") {
		t.Fatalf("the Secret's row: %.60q, want it to start with k8s:enc:secretbox:v1:", raw)
	}
	oldKey := strings.Split(raw, ":")[4]

	code, out := cluster.Run(cluster.Context(t), nil, "secrets-encrypt", "rotate-keys", "--data-dir", s.DataDir)
	t.Logf("rotate-keys:\n%s", out)
	if code != 0 {
		t.Fatalf("rotate-keys exit %d", code)
	}
	raw = rawSecret(t, s, "default", "mine")
	if !strings.HasPrefix(raw, "k8s:enc:secretbox:v1:") || strings.Split(raw, ":")[4] == oldKey {
		t.Fatalf("after rotate-keys the Secret's row is %.60q, still with key %s", raw, oldKey)
	}
	got, err := s.ClientT(t).CoreV1().Secrets("default").Get(cluster.Context(t), "mine", metav1.GetOptions{})
	if err != nil || string(got.Data["k"]) != "the-value" {
		t.Fatalf("the Secret after rotate-keys: %v %v", got, err)
	}
	code, out = cluster.Run(context.Background(), nil, "secrets-encrypt", "status", "--data-dir", s.DataDir)
	if code != 0 || !strings.Contains(out, "provider: secretbox") || !strings.Contains(out, " 0 with older keys, 0 not encrypted") || strings.Contains(out, "older keys:") {
		t.Fatalf("status after rotate-keys:\n%s", out)
	}
}
