package datastore

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"
)

// The embedded database's size, on the API server's /metrics, so that a
// small disk filling up is seen before it is full.
var (
	register sync.Once
	measured struct {
		sync.Mutex
		db string
	}
)

// fileSize is the size of path in bytes, 0 when it does not exist.
func fileSize(path string) float64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return float64(fi.Size())
}

func dbPath() string {
	measured.Lock()
	defer measured.Unlock()
	return measured.db
}

// exposeSize registers the size gauges (once a process) for the database at
// path, and logs its size now and once a day until ctx ends.
func exposeSize(ctx context.Context, path string) {
	measured.Lock()
	measured.db = path
	measured.Unlock()
	register.Do(func() {
		legacyregistry.RawMustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "skiff_datastore_db_size_bytes", Help: "Size of the embedded SQLite database file."},
				func() float64 { return fileSize(dbPath()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "skiff_datastore_wal_size_bytes", Help: "Size of the embedded SQLite database's write-ahead log."},
				func() float64 { return fileSize(dbPath() + "-wal") }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "skiff_datastore_free_bytes", Help: "Space in the embedded SQLite database that compaction freed: reused by new writes, given back to the disk at the next start."},
				func() float64 { return float64(observed.freeBytes.Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "skiff_datastore_compact_revision", Help: "The revision the embedded datastore's history was last compacted to."},
				func() float64 { return float64(observed.compactRevision.Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "skiff_datastore_last_compaction_timestamp_seconds", Help: "When the embedded datastore's compaction was last seen to move (Unix seconds; 0 if not since start)."},
				func() float64 { return float64(observed.compactedAt.Load()) }),
		)
	})
	logSize := func() {
		kv := []any{"db", path, "dbBytes", int64(fileSize(path)), "walBytes", int64(fileSize(path + "-wal")), "freeBytes", observed.freeBytes.Load()}
		if at := observed.compactedAt.Load(); at != 0 {
			kv = append(kv, "compactRevision", observed.compactRevision.Load(), "lastCompaction", time.Unix(at, 0).UTC().Format(time.RFC3339))
		}
		klog.InfoS("datastore size", kv...)
	}
	logSize()
	go func() {
		t := time.NewTicker(24 * time.Hour)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				logSize()
			}
		}
	}()
}
