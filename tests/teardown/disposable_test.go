// Package teardown tests that a node goes without a trace: the throwaway
// cluster of the README's "Use in CI" recipe, ended by `skiff killall`, and
// an installed server removed by skiff-uninstall.sh after a real run.
package teardown

import (
	"net"
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
	c := start(t, dir, cluster.Binary())
	podNetns := cluster.PodNetns(c.CgroupRoot)
	if len(podNetns) == 0 {
		t.Fatalf("found no pod network namespace among the processes of cgroup %s", c.CgroupRoot)
	}

	// killall of another data dir leaves this node alone, its network too.
	out, err := c.Skiff(time.Minute, "killall", "--data-dir", filepath.Join(dir, "other"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "kept cni0") {
		t.Errorf("killall of another data dir: %q, want it to keep cni0", out)
	}
	if c.Exited(0) || len(cluster.PodNetns(c.CgroupRoot)) == 0 {
		t.Fatal("killall of another data dir stopped this node or its pod")
	}
	if _, err := net.InterfaceByName("cni0"); err != nil {
		t.Fatalf("killall of another data dir deleted cni0: %v", err)
	}

	out, err = c.Skiff(time.Minute, "killall", "--data-dir", c.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("skiff killall: %s", strings.TrimSpace(out))
	if !c.Exited(30 * time.Second) {
		t.Fatal("the server still runs after skiff killall")
	}
	for _, l := range cluster.Leftovers([]string{dir, c.RunDir}, c.CgroupRoot, podNetns) {
		t.Errorf("left behind: %s", l)
	}
	if _, err := os.Stat(c.RunDir); err == nil {
		t.Errorf("run dir %s is still there", c.RunDir)
	}
	if _, err := os.Stat(filepath.Join(c.DataDir, "server", "db", "state.db")); err != nil {
		t.Errorf("the data is gone: %v", err)
	}
	if err := os.RemoveAll(c.DataDir); err != nil {
		t.Errorf("removing the data dir: %v", err)
	}
}

// start starts a throwaway cluster in dir from bin with a pod running on
// it; whatever happens, the test ends with it gone.
func start(t *testing.T, dir, bin string) *cluster.Throwaway {
	t.Helper()
	c, err := cluster.NewThrowaway(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Remove()
		if t.Failed() {
			t.Logf("server log (tail):\n%s", c.LogTail(40))
		}
	})
	if err := c.Start(bin); err != nil {
		t.Fatal(err)
	}
	if err := c.RunPod(); err != nil {
		t.Fatal(err)
	}
	return c
}
