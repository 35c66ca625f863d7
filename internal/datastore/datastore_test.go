package datastore

import (
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	cases := map[string]string{
		"postgres://skiff:hunter2@db:5432/skiff?sslmode=disable": "postgres://skiff:xxxxx@db:5432/skiff?sslmode=disable",
		"postgres://skiff@db/skiff":                              "postgres://skiff@db/skiff",
		"https://etcd-1:2379":                                    "https://etcd-1:2379",
	}
	for in, want := range cases {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWorthVacuum(t *testing.T) {
	header := func(pages, free, counter, validFor uint32) []byte {
		h := make([]byte, 100)
		copy(h, "SQLite format 3\x00")
		for off, v := range map[int]uint32{24: counter, 28: pages, 36: free, 92: validFor} {
			h[off], h[off+1], h[off+2], h[off+3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
		}
		return h
	}
	for _, c := range []struct {
		name                           string
		pages, free, counter, validFor uint32
		want                           bool
	}{
		{"few free pages", 100000, 1000, 7, 7, false},
		{"a quarter free", 100000, 25000, 7, 7, true},
		{"mostly free", 1000, 900, 7, 7, true},
		{"stale page count", 100000, 0, 8, 7, true},
		{"no page count", 0, 0, 7, 7, true},
	} {
		if got := worthVacuum(header(c.pages, c.free, c.counter, c.validFor)); got != c.want {
			t.Errorf("%s: worthVacuum = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestCheckScheme(t *testing.T) {
	for _, ok := range []string{"sqlite:///srv/state.db", "postgres://skiff:pw@db/skiff", "postgresql://db/skiff", "mysql://skiff:pw@tcp(db:3306)/skiff", "https://etcd-1:2379,https://etcd-2:2379", "http://127.0.0.1:2379"} {
		if err := checkScheme(ok); err != nil {
			t.Errorf("checkScheme(%q) = %v", ok, err)
		}
	}
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":  `unknown datastore scheme "nats": use sqlite://`,
		"memory://":              `unknown datastore scheme "memory"`,
		"skiff:hunter2@db:5432/": "the datastore endpoint has no scheme: use sqlite://",
	} {
		err := checkScheme(in)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("checkScheme(%q) = %v, want %q without the password", in, err, want)
		}
	}
}
