package datastore

import "testing"

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
