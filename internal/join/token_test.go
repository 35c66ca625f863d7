package join

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseToken(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	for _, c := range []struct {
		in   string
		want Token
		err  string
	}{
		{in: "K10" + hash + "::server:s3cret", want: Token{CAHash: hash, Server: "s3cret"}},
		{in: "K10" + strings.ToUpper(hash) + "::server:s3cret", want: Token{CAHash: hash, Server: "s3cret"}},
		{in: "K10" + hash + "::abcdef.0123456789abcdef", want: Token{CAHash: hash, ID: "abcdef", Secret: "0123456789abcdef"}},
		{in: "abcdef.0123456789abcdef", want: Token{ID: "abcdef", Secret: "0123456789abcdef"}},
		{in: "server:plain", want: Token{Server: "plain"}},
		{in: "  my-own-secret\n", want: Token{Server: "my-own-secret"}},
		// A secret of the server's own choosing may look like anything
		// but an <id>.<secret> token.
		{in: "K10" + hash + "::server:abcdef.0123456789abcdef", want: Token{CAHash: hash, Server: "abcdef.0123456789abcdef"}},
		{in: "", err: "empty"},
		{in: "K10" + hash, err: "no \"::\""},
		{in: "K10abc::server:x", err: "not 64 hex digits"},
		{in: "K10" + strings.Repeat("zz", 32) + "::server:x", err: "not 64 hex digits"},
		{in: "K10" + hash + "::", err: "nothing after"},
		{in: "K10" + hash + "::server:", err: "empty server secret"},
	} {
		got, err := ParseToken(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseToken(%q) error = %v, want one containing %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseToken(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}

func TestTokenRoundTrip(t *testing.T) {
	hash := CAHash([]byte("a CA bundle"))
	id, secret, err := NewBootstrap()
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []Token{
		{CAHash: hash, Server: NewServerSecret()},
		{CAHash: hash, ID: id, Secret: secret},
		{Server: "no-hash"},
	} {
		got, err := ParseToken(tok.String())
		if err != nil || got != tok {
			t.Errorf("ParseToken(%q) = %+v, %v; want %+v", tok.String(), got, err, tok)
		}
		if r := tok.Redacted(); strings.Contains(r, tok.Secret+tok.Server) {
			t.Errorf("Redacted() = %q shows the secret", r)
		}
	}
	if s := (Token{CAHash: hash, ID: id, Secret: secret}).String(); !strings.HasPrefix(s, "K10"+hash+"::"+id+".") {
		t.Errorf("String() = %q, want K10<hash>::<id>.<secret>", s)
	}
}

func TestCAHash(t *testing.T) {
	// sha256 of the bundle's exact bytes, in lower-case hex.
	if got, want := CAHash([]byte("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; got != want {
		t.Errorf("CAHash = %s, want %s", got, want)
	}
	if NewServerSecret() == NewServerSecret() {
		t.Error("two server secrets are equal")
	}
}

func TestReadServerToken(t *testing.T) {
	dir := t.TempDir()
	hash := strings.Repeat("ab", 32)
	server := Token{CAHash: hash, Server: "server-secret-0123456789"}
	agent := Token{CAHash: hash, Agent: "agent-secret-0123456789"}
	write := func(name string, tok Token) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(tok.String()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if got, err := ReadServerToken(write("token", server)); err != nil || got != server {
		t.Errorf("the server's token file reads %+v, %v; want %+v", got, err, server)
	}
	if _, err := ReadServerToken(write("agent-token", agent)); err == nil || !strings.Contains(err.Error(), "is not a server token") {
		t.Errorf("an agent token file reads with %v, want it is not a server token", err)
	}
	var unread *fs.PathError
	if _, err := ReadServerToken(filepath.Join(dir, "missing")); !errors.As(err, &unread) {
		t.Errorf("a missing file reads with %v, want the *fs.PathError", err)
	}
}
