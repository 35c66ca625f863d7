package datastore

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
)

// TestObserve: the compact revision, when it moves, and the free pages.
func TestObserve(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	for _, q := range []string{
		`CREATE TABLE kine (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, prev_revision INTEGER, value BLOB)`,
		`INSERT INTO kine (name, prev_revision) VALUES ('compact_rev_key', 10)`,
		`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 2000) INSERT INTO kine (name, prev_revision, value) SELECT 'k' || i, 0, randomblob(1000) FROM n`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	observe(ctx, db)
	if observed.compactRevision.Load() != 10 || observed.compactedAt.Load() != 0 || observed.freeBytes.Load() != 0 {
		t.Fatalf("first look: %d %d %d", observed.compactRevision.Load(), observed.compactedAt.Load(), observed.freeBytes.Load())
	}
	db.ExecContext(ctx, `INSERT INTO kine (name, prev_revision) VALUES ('compact_rev_key', 20)`)
	db.ExecContext(ctx, `DELETE FROM kine WHERE name LIKE 'k%'`)
	db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
	observe(ctx, db)
	if observed.compactRevision.Load() != 20 || observed.compactedAt.Load() == 0 || observed.freeBytes.Load() < 1_000_000 {
		t.Fatalf("after a compaction: %d %d %d", observed.compactRevision.Load(), observed.compactedAt.Load(), observed.freeBytes.Load())
	}
}
