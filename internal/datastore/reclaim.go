package datastore

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
	// The driver kine's SQLite runs on (without cgo, as skiff is built).
	_ "modernc.org/sqlite"
)

// Free pages: kine's compaction deletes old revisions, and SQLite keeps the
// pages they held as free pages in the file (its startup VACUUM gives them
// back, at the next start only). The database runs with
// auto_vacuum=INCREMENTAL (a new database from the start, an existing one
// from kine's startup VACUUM on), and maintain gives free pages back in
// small steps, each a short write transaction, so API writes wait for
// milliseconds at most.
const (
	// reclaimAbove: free pages are given back once they are more than this
	// many (16 MiB of 4 KiB pages) and more than a tenth of the file.
	reclaimAbove = 4096
	// reclaimStep is the pages one step gives back (1 MiB).
	reclaimStep = 256
	// maintainEvery is how often the free list and compaction are looked at.
	maintainEvery = time.Minute
)

// compaction is what maintain last saw of kine's compaction, for the
// metrics and the daily log line.
var compaction struct {
	revision atomic.Int64
	at       atomic.Int64 // unix seconds it was seen to move; 0 before
}

// maintain looks at the database every maintainEvery until ctx ends.
func maintain(ctx context.Context, path string) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(30000)&_txlock=immediate")
	if err != nil {
		klog.ErrorS(err, "datastore maintenance cannot open the database", "db", path)
		return
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	t := time.NewTicker(maintainEvery)
	defer t.Stop()
	for {
		observeCompaction(ctx, db)
		if n, err := reclaim(ctx, db); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "datastore: giving free pages back failed; it is tried again", "db", path)
		} else if n > 0 {
			klog.InfoS("datastore: gave free pages back", "db", path, "bytes", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// observeCompaction records kine's compact revision, and when it moved.
func observeCompaction(ctx context.Context, db *sql.DB) {
	var rev sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT MAX(prev_revision) FROM kine WHERE name = 'compact_rev_key'`).Scan(&rev); err != nil || !rev.Valid {
		return
	}
	if old := compaction.revision.Swap(rev.Int64); old != 0 && old != rev.Int64 {
		compaction.at.Store(time.Now().Unix())
	}
}

// reclaim gives free pages back while there are many, in steps, and
// returns the bytes the file shrank by.
func reclaim(ctx context.Context, db *sql.DB) (int64, error) {
	var mode int
	if err := db.QueryRowContext(ctx, `PRAGMA auto_vacuum`).Scan(&mode); err != nil {
		return 0, err
	}
	if mode != 2 { // not INCREMENTAL: kine's next startup VACUUM converts it
		return 0, nil
	}
	var pageSize int64
	if err := db.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&pageSize); err != nil {
		return 0, err
	}
	var given int64
	for ctx.Err() == nil {
		var free, pages int64
		if err := db.QueryRowContext(ctx, `SELECT freelist_count, page_count FROM pragma_freelist_count(), pragma_page_count()`).Scan(&free, &pages); err != nil {
			return given, err
		}
		// Down to half the threshold, so that it does not run again at once.
		if free < reclaimAbove/2 || (given == 0 && (free < reclaimAbove || free*10 < pages)) {
			return given, nil
		}
		if _, err := db.ExecContext(ctx, fmt.Sprintf(`PRAGMA incremental_vacuum(%d)`, reclaimStep)); err != nil {
			return given, err
		}
		given += min(free, reclaimStep) * pageSize
		// Let the API server's writes in between steps.
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	return given, nil
}
