// Package datastore tests the embedded SQLite datastore under load on a
// real server: a long churn, then kill -9 in the middle of many writers.
package datastore

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	_ "modernc.org/sqlite" // reads the server's state.db

	"github.com/skiff-dev/skiff/tests/cluster"
)

// walLimit is the datastore's journal_size_limit.
const walLimit = 64 << 20

// TestDatastore churns the server's datastore, then crashes it again and
// again under writers. One server serves both: the crashes find a database
// that has been through compactions.
func TestDatastore(t *testing.T) {
	// Compaction every 10 s, not the API server's default 5 minutes, so
	// that the churn sees it catch up.
	s := cluster.StartT(t, "--kube-apiserver-arg=etcd-compaction-interval=10s")
	cluster.Steps(t,
		cluster.Step{Name: "ChurnStaysBounded", Run: func(t *testing.T) { churn(t, s) }},
		cluster.Step{Name: "KilledUnderWritersLosesNothing", Run: func(t *testing.T) { crashes(t, s) }},
	)
}

func dbFiles(s *cluster.Server) (db, wal string) {
	db = filepath.Join(s.DataDir, "server", "db", "state.db")
	return db, db + "-wal"
}

func size(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// churn creates, updates and deletes 50,000 ConfigMaps, 500 at a time: the
// WAL stays under its limit, and the database stops growing once
// compaction catches up.
func churn(t *testing.T, s *cluster.Server) {
	cs := s.ClientT(t)
	// 150,000 writes: longer than a test's usual wait.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	db, wal := dbFiles(s)
	const batches, batch = 100, 500
	data := map[string]string{"v": strings.Repeat("x", 512)}
	var sizes []int64
	for b := range batches {
		for _, op := range []string{"create", "update", "delete"} {
			err := parallel(16, batch, func(i int) error {
				name := fmt.Sprintf("churn-%d", i)
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}
				var err error
				switch op {
				case "create":
					_, err = cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{})
				case "update":
					cm.Data = map[string]string{"v": strconv.Itoa(b)}
					_, err = cs.CoreV1().ConfigMaps("default").Update(ctx, cm, metav1.UpdateOptions{})
				case "delete":
					err = cs.CoreV1().ConfigMaps("default").Delete(ctx, name, metav1.DeleteOptions{})
				}
				return err
			})
			if err != nil {
				t.Fatalf("batch %d, %s: %v", b, op, err)
			}
			if w := size(wal); w > walLimit+(4<<20) {
				t.Fatalf("after batch %d the WAL is %d MB, over its limit of %d MB", b, w>>20, walLimit>>20)
			}
		}
		sizes = append(sizes, size(db))
		if (b+1)%20 == 0 {
			t.Logf("after %d objects: database %.1f MB, WAL %.1f MB", (b+1)*batch, float64(size(db))/1e6, float64(size(wal))/1e6)
		}
	}
	// The second half of the run reuses what compaction freed: the file
	// grows no more than a little past its size at the half.
	half, end := sizes[batches/2-1], sizes[batches-1]
	if end > half+half/4 {
		t.Errorf("the database grew from %.1f MB at half the churn to %.1f MB at its end: compaction's free pages are not reused", float64(half)/1e6, float64(end)/1e6)
	}
}

// crashes kills the server with SIGKILL while 200 clients create
// ConfigMaps, 20 times: after each restart every create that was answered
// is there at its resourceVersion or later, the list's resourceVersion
// never goes back, and SQLite finds the database intact.
func crashes(t *testing.T, s *cluster.Server) {
	acked := map[string]uint64{} // name -> resourceVersion answered
	var lastListRV uint64
	for round := range 20 {
		maps.Copy(acked, s.KillUnderCreates(t, fmt.Sprintf("crash-%d", round), 200, 400))

		db, _ := dbFiles(s)
		if res := integrity(t, db); res != "ok" {
			t.Fatalf("round %d: PRAGMA integrity_check after kill -9: %s", round, res)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatalf("round %d: the server does not start again after kill -9: %v\n%s", round, err, s.LogTail(30))
		}
		list, err := s.ClientT(t).CoreV1().ConfigMaps("default").List(cluster.Context(t), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		listRV, _ := strconv.ParseUint(list.ResourceVersion, 10, 64)
		if listRV < lastListRV {
			t.Fatalf("round %d: the resourceVersion went back from %d to %d", round, lastListRV, listRV)
		}
		lastListRV = listRV
		for name, rv := range acked {
			if rv > listRV {
				t.Errorf("round %d: %s was answered at resourceVersion %d, beyond the list's %d after the crash", round, name, rv, listRV)
			}
		}
		cluster.CreatesKept(t, fmt.Sprintf("round %d", round), list, acked)
	}
	t.Logf("%d answered creates, all kept through 20 kills", len(acked))
}

// integrity runs SQLite's integrity check on the stopped server's database.
func integrity(t *testing.T, path string) string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil {
		t.Fatal(err)
	}
	return res
}

// parallel runs op for 0..n-1 from clients goroutines and returns the first
// error.
func parallel(clients, n int, op func(i int) error) error {
	next := make(chan int)
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := op(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}
