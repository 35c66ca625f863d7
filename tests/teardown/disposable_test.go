// Package teardown tests that a node goes without a trace: the throwaway
// cluster of the README's "Use in CI" recipe, ended by `skiff killall`, and
// an installed server removed by skiff-uninstall.sh after a real run.
package teardown

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// TestThrowawayCluster: a server in a temp data dir on another API port,
// `skiff wait`, a pod, then `skiff killall --data-dir`. Afterwards no
// process, mount, cgroup, pod network namespace, interface or nftables
// table of it is left, and the data dir stays, removable with rm -rf.
func TestThrowawayCluster(t *testing.T) {
	dir := t.TempDir()
	n := newNode(t, dir)
	n.start(t, cluster.Binary())
	n.runPod(t)
	podNetns := cluster.PodNetns(n.cgroupRoot)
	if len(podNetns) == 0 {
		t.Fatalf("found no pod network namespace among the processes of cgroup %s", n.cgroupRoot)
	}

	out := n.skiff(t, time.Minute, "killall", "--data-dir", n.data)
	t.Logf("skiff killall: %s", strings.TrimSpace(out))
	n.waitExited(t)
	for _, l := range cluster.Leftovers([]string{dir, n.runDir}, n.cgroupRoot, podNetns) {
		t.Errorf("left behind: %s", l)
	}
	if _, err := os.Stat(n.runDir); err == nil {
		t.Errorf("run dir %s is still there", n.runDir)
	}
	if _, err := os.Stat(filepath.Join(n.data, "server", "db", "state.db")); err != nil {
		t.Errorf("the data is gone: %v", err)
	}
	if err := os.RemoveAll(n.data); err != nil {
		t.Errorf("removing the data dir: %v", err)
	}
}
