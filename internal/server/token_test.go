package server

import (
	"os"
	"strings"
	"testing"

	"github.com/skiff-dev/skiff/internal/controlplane"
)

func TestAgentSecret(t *testing.T) {
	c := &controlplane.Config{DataDir: t.TempDir()}
	hash := "K10" + strings.Repeat("a", 64) + "::"
	for _, tc := range []struct{ flag, secret, err string }{
		{"", "", ""},
		{"agents-only-0123456789", "agents-only-0123456789", ""},
		{hash + "node:agents-only-0123456789", "agents-only-0123456789", ""},
		{"node:agents-only-0123456789", "agents-only-0123456789", ""},
		{hash + "server:the-server-secret-0123", "", "that is a server token"},
		{"short", "", "shorter than 16 characters"},
		{"abcdef.0123456789abcdef", "", "not an <id>.<secret> token"},
	} {
		secret, err := agentSecret(c, tc.flag)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("agentSecret(%q): %v, want an error saying %q", tc.flag, err, tc.err)
			}
			continue
		}
		if err != nil || secret != tc.secret {
			t.Errorf("agentSecret(%q) = %q, %v; want %q", tc.flag, secret, err, tc.secret)
		}
	}
	// Kept from the last start when the flag is left out; removed when
	// the server has none any more.
	if err := os.MkdirAll(c.DataDir+"/server", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeAgentToken(c, strings.Repeat("a", 64), "agents-only-0123456789"); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(agentTokenFile(c))
	if want := hash + "node:agents-only-0123456789\n"; string(data) != want {
		t.Errorf("agent-token file %q, want %q", data, want)
	}
	if secret, err := agentSecret(c, ""); err != nil || secret != "agents-only-0123456789" {
		t.Errorf("agentSecret with the stored file = %q, %v", secret, err)
	}
	if err := writeAgentToken(c, "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(agentTokenFile(c)); !os.IsNotExist(err) {
		t.Errorf("the agent-token file outlived the agent token: %v", err)
	}
}
