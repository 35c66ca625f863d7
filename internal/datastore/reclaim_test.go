package datastore

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
)

// TestReclaim: free pages left by deleted rows go back to the file system
// in steps, with the database's settings.
func TestReclaim(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=auto_vacuum(2)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	ctx := context.Background()
	for _, q := range []string{
		`CREATE TABLE kine (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, prev_revision INTEGER, value BLOB)`,
		`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 40000) INSERT INTO kine (name, prev_revision, value) SELECT 'k' || i, 0, randomblob(1000) FROM n`,
		`DELETE FROM kine`,
		`PRAGMA wal_checkpoint(TRUNCATE)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	free := func() (n int64) {
		db.QueryRow(`PRAGMA freelist_count`).Scan(&n)
		return n
	}
	before, sizeBefore := free(), fileSize(path)
	if before < reclaimAbove {
		t.Fatalf("only %d free pages to start with", before)
	}
	given, err := reclaim(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
	after, sizeAfter := free(), fileSize(path)
	t.Logf("free pages %d -> %d, file %.0f -> %.0f bytes, %d given back", before, after, sizeBefore, sizeAfter, given)
	if after >= reclaimAbove/2 || sizeAfter > sizeBefore/4 || given == 0 {
		t.Fatalf("free pages %d -> %d, file %.0f -> %.0f bytes", before, after, sizeBefore, sizeAfter)
	}
	if n, _ := reclaim(ctx, db); n != 0 {
		t.Fatalf("a second pass gave back %d bytes, want nothing left to do", n)
	}
}
