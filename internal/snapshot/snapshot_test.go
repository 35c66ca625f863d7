package snapshot

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/skiff-dev/skiff/internal/bootstrap"
)

func TestSaveListPruneRestore(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "state.db")
	db, err := sql.Open("sqlite", "file:"+dbPath+"?_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE kine (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO kine (name) VALUES ('a'), ('b')`); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "server-ca.crt")
	os.WriteFile(ca, []byte("CA"), 0o600)
	src := Source{DB: dbPath, Files: []string{ca}, Secret: "0123456789abcdef"}
	snaps := filepath.Join(dir, "snapshots")
	var paths []string
	for range 3 {
		p, err := Save(context.Background(), src, snaps, "")
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	all, err := List(snaps)
	if err != nil || len(all) != 3 || all[0].Path != paths[2] {
		t.Fatalf("List: %v %+v, want 3, newest %s first", err, all, paths[2])
	}
	deleted, err := Prune(snaps, OnDemandName, 1)
	if err != nil || len(deleted) != 2 {
		t.Fatalf("Prune: %v %v", deleted, err)
	}
	if _, err := Open(paths[2], "another-cluster-secret"); !errors.Is(err, bootstrap.ErrToken) {
		t.Fatalf("Open with another secret: %v, want ErrToken", err)
	}
	if _, err := Open(ca, src.Secret); !errors.Is(err, ErrNotSnapshot) {
		t.Fatalf("Open of a file that is no snapshot: %v", err)
	}
	files, err := Open(paths[2], src.Secret)
	if err != nil || string(files["server-ca.crt"]) != "CA" {
		t.Fatalf("Open: %v %v", files, err)
	}
	target := filepath.Join(dir, "restored", "state.db")
	if err := Restore(paths[2], target); err != nil {
		t.Fatal(err)
	}
	r, _ := sql.Open("sqlite", "file:"+target+"?mode=ro")
	defer r.Close()
	var n int
	if err := r.QueryRow(`SELECT COUNT(*) FROM kine`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("restored rows: %d %v", n, err)
	}
	if err := r.QueryRow(`SELECT COUNT(*) FROM ` + table).Scan(&n); err == nil {
		t.Fatal("the restored database still holds the snapshot's table")
	}
}
