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
		v, ok := metricValue(out, c.metric)
		if !ok {
			t.Errorf("/metrics has no %s", c.metric)
			continue
		}
		fi, err := os.Stat(filepath.Join(srv.DataDir, "server", "db", c.file))
		// The WAL changes with every write; the database file holds still
		// between checkpoints.
		if err != nil || (c.file == "state.db" && (v <= 0 || v != float64(fi.Size()))) {
			t.Errorf("%s = %v, the file: %v %v", c.metric, v, fi, err)
		}
	}
	for _, metric := range []string{"skiff_datastore_free_bytes", "skiff_datastore_compact_revision", "skiff_datastore_last_compaction_timestamp_seconds"} {
		if _, ok := metricValue(out, metric); !ok {
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
		v, ok := metricValue(out, metric)
		if !ok {
			t.Errorf("/metrics has no %s", metric)
			continue
		}
		if v != want {
			t.Errorf("%s = %v, want %.0f", metric, v, want)
		}
	}
}

// metricValue is the value of an unlabelled metric in a /metrics page.
func metricValue(page, metric string) (float64, bool) {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(metric) + ` (\S+)$`).FindStringSubmatch(page)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}
