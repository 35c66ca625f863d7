package controlplane

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// TestDatastoreSizeMetrics: the API server's /metrics shows the embedded
// database's and its WAL's sizes, as they are on disk.
func TestDatastoreSizeMetrics(t *testing.T) {
	out, err := srv.Kubectl(cluster.Context(t), "", "get", "--raw", "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ metric, file string }{
		{"skiff_datastore_db_size_bytes", "state.db"},
		{"skiff_datastore_wal_size_bytes", "state.db-wal"},
	} {
		m := regexp.MustCompile(`(?m)^` + c.metric + ` (\S+)$`).FindStringSubmatch(out)
		if m == nil {
			t.Errorf("/metrics has no %s", c.metric)
			continue
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		fi, err := os.Stat(filepath.Join(srv.DataDir, "server", "db", c.file))
		// The WAL changes with every write; the database file holds still
		// between checkpoints.
		if err != nil || (c.file == "state.db" && (v <= 0 || v != float64(fi.Size()))) {
			t.Errorf("%s = %s, the file: %v %v", c.metric, m[1], fi, err)
		}
	}
	for _, metric := range []string{"skiff_datastore_free_bytes", "skiff_datastore_compact_revision", "skiff_datastore_last_compaction_timestamp_seconds"} {
		if !regexp.MustCompile(`(?m)^` + metric + ` \S+$`).MatchString(out) {
			t.Errorf("/metrics has no %s", metric)
		}
	}
}

// TestMemorySettings: the shared server runs with --memory-limit 512Mi, what
// auto gives on a 1 GB board, and its /metrics show the Go runtime's soft
// limit at that and its collector at the small-board GOGC.
func TestMemorySettings(t *testing.T) {
	out, err := srv.Kubectl(cluster.Context(t), "", "get", "--raw", "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for metric, want := range map[string]float64{"go_gc_gomemlimit_bytes": 512 << 20, "go_gc_gogc_percent": 50} {
		m := regexp.MustCompile(`(?m)^` + metric + ` (\S+)$`).FindStringSubmatch(out)
		if m == nil {
			t.Errorf("/metrics has no %s", metric)
			continue
		}
		if v, _ := strconv.ParseFloat(m[1], 64); v != want {
			t.Errorf("%s = %s, want %.0f", metric, m[1], want)
		}
	}
}
