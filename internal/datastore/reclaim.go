package datastore

import (
	"context"
	"database/sql"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
	// The driver kine's SQLite runs on (without cgo, as skiff is built).
	_ "modernc.org/sqlite"
)

// maintainEvery is how often the free pages and compaction are looked at.
const maintainEvery = time.Minute

// observed is what maintain last saw of the database, for the metrics and
// the daily log line.
var observed struct {
	compactRevision atomic.Int64
	compactedAt     atomic.Int64 // unix seconds it was seen to move; 0 before
	freeBytes       atomic.Int64 // pages compaction freed, reused by new writes
}

// maintain looks at the database every maintainEvery until ctx ends.
func maintain(ctx context.Context, path string) {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(30000)")
	if err != nil {
		klog.ErrorS(err, "datastore: cannot open the database to watch it", "db", path)
		return
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	t := time.NewTicker(maintainEvery)
	defer t.Stop()
	for {
		observe(ctx, db)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// observe records kine's compact revision (and when it moved) and the
// database's free pages.
func observe(ctx context.Context, db *sql.DB) {
	var rev sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT MAX(prev_revision) FROM kine WHERE name = 'compact_rev_key'`).Scan(&rev); err == nil && rev.Valid {
		if old := observed.compactRevision.Swap(rev.Int64); old != 0 && old != rev.Int64 {
			observed.compactedAt.Store(time.Now().Unix())
		}
	}
	var free int64
	if err := db.QueryRowContext(ctx, `SELECT freelist_count * page_size FROM pragma_freelist_count(), pragma_page_size()`).Scan(&free); err == nil {
		observed.freeBytes.Store(free)
	}
}
