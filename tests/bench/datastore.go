package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// benchDatastore times ConfigMap creates and deletes by 16 clients on the
// embedded SQLite, as the server runs it (synchronous=FULL) and with kine's
// own default (synchronous=NORMAL), side by side.
func benchDatastore() error {
	for _, mode := range []string{"FULL", "NORMAL"} {
		dir, err := os.MkdirTemp("", "skiff-bench-db-")
		if err != nil {
			return err
		}
		var extra []string
		if mode == "NORMAL" {
			extra = []string{"--datastore-endpoint", "sqlite://" + filepath.Join(dir, "data", "server", "db", "state.db") +
				"?_journal=WAL&_synchronous=NORMAL&_busy_timeout=30000&_txlock=immediate"}
		}
		s := cluster.New(dir, extra...)
		err = func() error {
			defer s.Stop()
			ctx := context.Background()
			if err := s.Start(ctx); err != nil {
				return err
			}
			// No client-side rate limit: the figures are the server's.
			rc, err := s.Config()
			if err != nil {
				return err
			}
			rc.QPS, rc.Burst = -1, 0
			cs, err := kubernetes.NewForConfig(rc)
			if err != nil {
				return err
			}
			const clients, objects = 16, 2000
			data := map[string]string{"v": strings.Repeat("x", 1024)}
			create, err := parallel(clients, objects, func(i int) error {
				_, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%d", i)}, Data: data}, metav1.CreateOptions{})
				return err
			})
			if err != nil {
				return err
			}
			del, err := parallel(clients, objects, func(i int) error {
				return cs.CoreV1().ConfigMaps("default").Delete(ctx, fmt.Sprintf("cm-%d", i), metav1.DeleteOptions{})
			})
			if err != nil {
				return err
			}
			fmt.Printf("datastore synchronous=%s, %d clients, %d ConfigMaps of 1 KiB: %s creates, %s deletes\n", mode, clients, objects, create, del)
			// After the deletes, so that both modes delete from a table of
			// the same size.
			if mode == "FULL" {
				return benchManifestsAndSnapshot(ctx, s, cs, data)
			}
			return nil
		}()
		os.RemoveAll(dir)
		if err != nil {
			return err
		}
	}
	return nil
}

// benchManifestsAndSnapshot times a file dropped into the manifests dir
// to its object, a HelmChart to its release, and a snapshot of 10,000
// ConfigMaps.
func benchManifestsAndSnapshot(ctx context.Context, s *cluster.Server, cs *kubernetes.Clientset, data map[string]string) error {
	// A file dropped into the manifests dir, then a HelmChart dropped the
	// same way with its chart inline: each to the ConfigMap it makes.
	drop := func(name, content, configMap, what string) error {
		file := filepath.Join(s.DataDir, "server", "manifests", name)
		start := time.Now()
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			return err
		}
		defer os.Remove(file)
		if err := poll(ctx, func(ctx context.Context) bool {
			_, err := cs.CoreV1().ConfigMaps("default").Get(ctx, configMap, metav1.GetOptions{})
			return err == nil
		}); err != nil {
			return fmt.Errorf("%s: ConfigMap %s never appeared: %w", what, configMap, err)
		}
		fmt.Printf("%s after %.2f s\n", what, time.Since(start).Seconds())
		return nil
	}
	if err := drop("bench.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dropped, namespace: default}\n",
		"dropped", "manifests dir: a dropped file's object exists"); err != nil {
		return err
	}
	chart := fmt.Sprintf("apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata: {name: bench, namespace: default}\nspec:\n  chartContent: %s\n",
		base64.StdEncoding.EncodeToString(cluster.DemoChart("0.1.0")))
	if err := drop("helm.yaml", chart, "bench-cm", "HelmChart: a dropped chart's release is deployed"); err != nil {
		return err
	}

	if _, err := parallel(16, 10000, func(i int) error {
		_, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("snap-%d", i)}, Data: data}, metav1.CreateOptions{})
		return err
	}); err != nil {
		return err
	}
	start := time.Now()
	code, out := cluster.Run(ctx, nil, "snapshot", "save", "--data-dir", s.DataDir)
	if code != 0 {
		return fmt.Errorf("snapshot save: %s", out)
	}
	took := time.Since(start)
	fi, err := os.Stat(strings.Fields(out)[0])
	if err != nil {
		return err
	}
	fmt.Printf("snapshot of 10,000 ConfigMaps of 1 KiB (server running): %.2f s, %.1f MB\n", took.Seconds(), float64(fi.Size())/1e6)

	// Start-up with 100,000 objects in the database (kine's start-up
	// VACUUM and compaction, the API server's caches).
	if _, err := parallel(16, 90000, func(i int) error {
		_, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("big-%d", i)}, Data: data}, metav1.CreateOptions{})
		return err
	}); err != nil {
		return err
	}
	if err := s.Stop(); err != nil {
		return err
	}
	db := filepath.Join(s.DataDir, "server", "db", "state.db")
	fi, err = os.Stat(db)
	if err != nil {
		return err
	}
	start = time.Now()
	if err := s.Start(ctx); err != nil {
		return err
	}
	fmt.Printf("start to /readyz with 100,000 ConfigMaps (%.0f MB database): %.2f s\n", float64(fi.Size())/1e6, time.Since(start).Seconds())
	return nil
}

// rate is a throughput and its 99th percentile latency.
type rate struct {
	perSecond float64
	p99       time.Duration
}

func (r rate) String() string {
	return fmt.Sprintf("%.0f/s (p99 %d ms)", r.perSecond, r.p99.Milliseconds())
}

// parallel runs op for 0..n-1 from clients goroutines.
func parallel(clients, n int, op func(i int) error) (rate, error) {
	var mu sync.Mutex
	var lat []time.Duration
	var first error
	next := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				t := time.Now()
				err := op(i)
				d := time.Since(t)
				mu.Lock()
				lat = append(lat, d)
				if err != nil && first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	total := time.Since(start)
	if first != nil {
		return rate{}, first
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return rate{perSecond: float64(n) / total.Seconds(), p99: lat[len(lat)*99/100]}, nil
}
