package controlplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// TestSnapshotRestore: a snapshot saved while clients write holds every
// object acknowledged before it began; restored into a fresh data dir (with
// the cluster's token), it is the same cluster: objects, CAs, token.
func TestSnapshotRestore(t *testing.T) {
	ctx := cluster.Context(t)
	s := cluster.StartT(t)
	cs := s.ClientT(t)

	// Writers run through the snapshot.
	var created sync.Map // name -> acknowledged
	var n atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("w%d-%d", w, i)
				if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
					ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"k": strings.Repeat("v", 512)},
				}, metav1.CreateOptions{}); err == nil {
					created.Store(name, time.Now())
					n.Add(1)
				}
			}
		}()
	}
	cluster.WaitFor(t, "200 creates", func(context.Context) (bool, error) { return n.Load() >= 200, nil })
	begun := time.Now()
	code, out := cluster.Run(ctx, nil, "snapshot", "save", "--data-dir", s.DataDir, "--name", "test")
	close(stop)
	wg.Wait()
	if code != 0 {
		t.Fatalf("snapshot save: %s", out)
	}
	snap := strings.Fields(out)[0]
	t.Logf("snapshot save: %s", strings.TrimSpace(out))
	if code, out := cluster.Run(ctx, nil, "snapshot", "ls", "--data-dir", s.DataDir); code != 0 || !strings.Contains(out, snap) {
		t.Fatalf("snapshot ls does not list %s: %s", snap, out)
	}
	var before []string
	created.Range(func(k, v any) bool {
		if v.(time.Time).Before(begun) {
			before = append(before, k.(string))
		}
		return true
	})
	token, err := s.JoinToken()
	if err != nil {
		t.Fatal(err)
	}
	oldCA, _ := os.ReadFile(filepath.Join(s.DataDir, "server", "tls", "server-ca.crt"))
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}

	// A fresh data dir: without the token the snapshot does not open.
	fresh := cluster.New(t.TempDir())
	os.MkdirAll(fresh.DataDir, 0o700)
	cluster.FailsClearly(t, fresh.DataDir, "is another cluster's (its CAs do not open with this data dir's token): give that cluster's token with --token", nil,
		append(fresh.Args(), "--cluster-reset", "--cluster-reset-restore-path", snap)...)
	code, out = cluster.Run(ctx, nil, append(fresh.Args(), "--cluster-reset", "--cluster-reset-restore-path", snap, "--token", token)...)
	if code != 0 || !strings.Contains(out, "start skiff server again without --cluster-reset") {
		t.Fatalf("restore: exit %d:\n%s", code, out)
	}
	if err := fresh.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fresh.Stop() })
	if got, _ := fresh.JoinToken(); got != token {
		t.Errorf("the restored server's token %q, want the cluster's %q", got, token)
	}
	if ca, _ := os.ReadFile(filepath.Join(fresh.DataDir, "server", "tls", "server-ca.crt")); string(ca) != string(oldCA) {
		t.Error("the restored server has another CA")
	}
	list, err := fresh.ClientT(t).CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, cm := range list.Items {
		have[cm.Name] = true
	}
	for _, name := range before {
		if !have[name] {
			t.Fatalf("%s, acknowledged before the snapshot began, is missing after the restore", name)
		}
	}
	t.Logf("%d ConfigMaps acknowledged before the snapshot, all restored (%d in all)", len(before), len(list.Items))
}

// TestSnapshotBadInput: each mistake is one line, and the data dir stays
// as it was.
func TestSnapshotBadInput(t *testing.T) {
	dir := t.TempDir()
	s := cluster.New(dir)
	os.MkdirAll(s.DataDir, 0o700)
	notSnap := filepath.Join(dir, "not-a-snapshot")
	os.WriteFile(notSnap, []byte("hello"), 0o600)
	for _, c := range []struct {
		name, want string
		args       []string
	}{
		{"not a snapshot", "is not a skiff snapshot: give a file that `skiff snapshot save` made", []string{"--cluster-reset", "--cluster-reset-restore-path", notSnap}},
		{"missing path", "does not exist: give the path of a snapshot", []string{"--cluster-reset", "--cluster-reset-restore-path", filepath.Join(dir, "nothing")}},
		{"reset without path", "--cluster-reset needs --cluster-reset-restore-path=FILE", []string{"--cluster-reset"}},
		{"path without reset", "--cluster-reset-restore-path restores only with --cluster-reset", []string{"--cluster-reset-restore-path", notSnap}},
		{"bad cron", `--snapshot-schedule-cron "every day": `, []string{"--snapshot-schedule-cron", "every day"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cluster.FailsClearly(t, s.DataDir, c.want, nil, append(s.Args(), c.args...)...)
		})
	}
	t.Run("save without a server", func(t *testing.T) {
		cluster.FailsClearly(t, s.DataDir, "holds no server token", nil, "snapshot", "save", "--data-dir", s.DataDir)
	})
}

// TestScheduledSnapshots: a schedule saves snapshots and keeps the newest
// --snapshot-retention.
func TestScheduledSnapshots(t *testing.T) {
	s := cluster.StartT(t, "--snapshot-schedule-cron", "@every 2s", "--snapshot-retention", "2")
	dir := filepath.Join(s.DataDir, "server", "db", "snapshots")
	seen := map[string]bool{}
	cluster.WaitFor(t, "4 scheduled snapshots, 2 kept", func(context.Context) (bool, error) {
		entries, _ := os.ReadDir(dir)
		var now []string
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "scheduled-") && !strings.HasSuffix(e.Name(), ".part") {
				seen[e.Name()] = true
				now = append(now, e.Name())
			}
		}
		// A third exists for a moment between a save and its prune.
		return len(seen) >= 4 && len(now) == 2, nil
	})
	code, out := cluster.Run(cluster.Context(t), nil, "snapshot", "prune", "--data-dir", s.DataDir, "--name", "scheduled", "--retention", "1")
	if code != 0 || !strings.Contains(out, "deleted ") {
		t.Fatalf("snapshot prune: exit %d: %s", code, out)
	}

	// After `skiff token rotate`, the schedule seals with the new secret:
	// a snapshot begun after the rotation restores with the token file as
	// it now is.
	code, out = cluster.Run(cluster.Context(t), nil, "token", "rotate", "--data-dir", s.DataDir, "--new-token", "rotated-secret-0123456789")
	if code != 0 {
		t.Fatalf("skiff token rotate: exit %d: %s", code, out)
	}
	rotated := time.Now().Unix()
	// The newest scheduled snapshot begun in a second after the rotation.
	newest := func() string {
		entries, _ := os.ReadDir(dir)
		var best int64
		var path string
		for _, e := range entries {
			i := strings.LastIndex(e.Name(), "-")
			began, err := strconv.ParseInt(e.Name()[i+1:], 10, 64)
			if strings.HasPrefix(e.Name(), "scheduled-") && err == nil && began > rotated && began > best {
				best, path = began, filepath.Join(dir, e.Name())
			}
		}
		return path
	}
	cluster.WaitFor(t, "a scheduled snapshot after the rotation", func(context.Context) (bool, error) {
		return newest() != "", nil
	})
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	snap := newest()
	code, out = cluster.Run(cluster.Context(t), nil, append(s.Args(), "--cluster-reset", "--cluster-reset-restore-path", snap)...)
	if code != 0 || !strings.Contains(out, "start skiff server again without --cluster-reset") {
		t.Fatalf("restoring %s, made after the rotation, with the rotated token file: exit %d: %s", snap, code, out)
	}
}
