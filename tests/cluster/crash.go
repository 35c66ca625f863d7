package cluster

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// KillUnderCreates has writers clients create ConfigMaps named
// prefix-<writer>-<n> in default, with no client-side rate limit, until
// answered creates have been answered, then kills the server (SIGKILL)
// and returns every answered name with its resourceVersion.
func (s *Server) KillUnderCreates(t *testing.T, prefix string, writers, answered int) map[string]uint64 {
	t.Helper()
	rc, err := s.Config()
	if err != nil {
		t.Fatal(err)
	}
	rc.QPS, rc.Burst = -1, 0
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	acked := map[string]uint64{}
	var mu sync.Mutex
	ctx, stop := context.WithCancel(context.Background())
	var n atomic.Int64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				name := fmt.Sprintf("%s-%d-%d", prefix, w, i)
				cm, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
				if err != nil {
					continue // the server is going down
				}
				rv, _ := strconv.ParseUint(cm.ResourceVersion, 10, 64)
				mu.Lock()
				acked[name] = rv
				mu.Unlock()
				n.Add(1)
			}
		}()
	}
	WaitFor(t, fmt.Sprintf("%s: %d creates answered", prefix, answered), func(context.Context) (bool, error) {
		return n.Load() >= int64(answered), nil
	})
	s.Kill()
	stop()
	wg.Wait()
	return acked
}

// CreatesKept fails the test unless every answered create (name ->
// resourceVersion) is in list at its resourceVersion or later.
func CreatesKept(t *testing.T, what string, list *corev1.ConfigMapList, acked map[string]uint64) {
	t.Helper()
	have := map[string]uint64{}
	for _, cm := range list.Items {
		have[cm.Name], _ = strconv.ParseUint(cm.ResourceVersion, 10, 64)
	}
	lost := 0
	for name, rv := range acked {
		if got, ok := have[name]; !ok || got < rv {
			if lost++; lost <= 5 {
				t.Errorf("%s: %s was created at resourceVersion %d, and after the crash it is %v", what, name, rv, map[bool]string{true: "at " + strconv.FormatUint(got, 10), false: "gone"}[ok])
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%s: %d of %d answered creates lost", what, lost, len(acked))
	}
}

// FailsClearly runs skiff with env and args and checks it exits non-zero
// with one error line that contains want, leaving dir as it was.
func FailsClearly(t *testing.T, dir, want string, env []string, args ...string) {
	t.Helper()
	before := dirState(dir)
	code, out := Run(context.Background(), env, args...)
	if code == 0 {
		t.Fatalf("skiff %s: exit 0, want an error\n%s", strings.Join(args, " "), out)
	}
	var errLines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, "skiff: ") {
			errLines = append(errLines, l)
		}
	}
	if len(errLines) != 1 || !strings.Contains(errLines[0], want) {
		t.Fatalf("skiff %s: want one line \"skiff: ...%s...\", got:\n%s", strings.Join(args, " "), want, out)
	}
	if after := dirState(dir); after != before {
		t.Fatalf("data dir changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// dirState lists every path under dir with a hash of its content and mode.
func dirState(dir string) string {
	var lines []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, _ := d.Info()
		line := fmt.Sprintf("%s %v", path, info.Mode())
		if d.Type().IsRegular() {
			data, _ := os.ReadFile(path)
			line += fmt.Sprintf(" %x", sha256.Sum256(data))
		}
		lines = append(lines, line)
		return nil
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
