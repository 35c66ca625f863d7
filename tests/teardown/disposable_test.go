// Package teardown tests that a node goes without a trace: the throwaway
// cluster of the README's "Use in CI" recipe, ended by `skiff killall`, and
// an installed server removed by skiff-uninstall.sh after a real run.
package teardown

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// TestThrowawayClustersSideBySide: two throwaway clusters of the README's
// recipe on this host at once, the second with ranges of its own. Each runs
// a pod that resolves its own cluster's kubernetes Service; a third with the
// first one's ranges is refused. `skiff killall` of one leaves the other
// running; after killall of both, no process, mount, cgroup, pod network
// namespace, interface or nftables table of either is left, and their data
// dirs stay, removable with rm -rf.
func TestThrowawayClustersSideBySide(t *testing.T) {
	first, second := t.TempDir(), t.TempDir()
	// The installed node's names, which a throwaway cluster must not take.
	defaults := map[string]bool{}
	for _, dev := range []string{"cni0", "flannel.1"} {
		_, err := net.InterfaceByName(dev)
		defaults[dev] = err == nil
	}
	var a, b *cluster.Server
	var wg sync.WaitGroup
	wg.Go(func() { a = start(t, first, cluster.Binary()) })
	wg.Go(func() {
		b = start(t, second, cluster.Binary(), "--cluster-cidr", "10.142.0.0/16", "--service-cidr", "10.143.0.0/16")
	})
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	ctx := cluster.Context(t)
	for _, c := range []struct {
		*cluster.Server
		pods, kubernetes, vni string
	}{{a, "10.42.", "10.43.0.1", "1"}, {b, "10.142.", "10.143.0.1", "691712"}} {
		// Both VXLAN devices on UDP 8472, told apart by their VNIs.
		link, err := exec.Command("ip", "-d", "link", "show", c.Names().Overlay).CombinedOutput()
		if err != nil || !strings.Contains(string(link), "vxlan id "+c.vni+" ") || !strings.Contains(string(link), "dstport 8472") {
			t.Errorf("%s is not VXLAN VNI %s on port 8472 (%v):\n%s", c.Names().Overlay, c.vni, err, link)
		}
		// exec below goes through the kubelet, on a port of its own.
		port, err := c.Kubectl(ctx, "", "get", "nodes", "-o", "jsonpath={.items[0].status.daemonEndpoints.kubeletEndpoint.Port}")
		if err != nil || port == "10250" || port == "" {
			t.Errorf("%s: the kubelet listens on %q (%v), want a free port rather than the installed node's 10250", c.DataDir, port, err)
		}
		ip, err := c.Kubectl(ctx, "", "get", "pod", "p", "-o", "jsonpath={.status.podIP}")
		if err != nil || !strings.HasPrefix(ip, c.pods) {
			t.Errorf("%s: pod IP %q (%v), want one in %s0.0/16", c.DataDir, ip, err, c.pods)
		}
		out, err := c.Kubectl(ctx, "", "exec", "p", "--", "nslookup", "kubernetes.default.svc.cluster.local")
		if err != nil || !strings.Contains(out, "Address: "+c.kubernetes) {
			t.Errorf("%s: a pod resolves the kubernetes Service to something else than %s (%v):\n%s", c.DataDir, c.kubernetes, err, out)
		}
	}

	for dev, was := range defaults {
		if _, err := net.InterfaceByName(dev); err == nil && !was {
			t.Errorf("a throwaway cluster created %s, the installed node's name", dev)
		}
	}

	// A third cluster with the first one's pod range would take its routes:
	// refused in one line, before anything is written.
	// On the first one's API port too: if the range were not checked, it
	// would stop there rather than run.
	third := filepath.Join(t.TempDir(), "data")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cluster.Binary(), "server", "--data-dir", third, "--https-listen-port", fmt.Sprint(a.Port),
		"--write-kubeconfig", filepath.Join(third, "kubeconfig"))
	cmd.Env = append(os.Environ(), "SKIFF_CONFIG_FILE=")
	out, err := cmd.CombinedOutput()
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); err == nil ||
		!strings.Contains(lines[len(lines)-1], "--cluster-cidr 10.42.0.0/16") || !strings.Contains(lines[len(lines)-1], a.Names().Bridge) {
		t.Errorf("a third cluster on the first one's range: %v, want a line naming --cluster-cidr and %s:\n%s", err, a.Names().Bridge, out)
	} else {
		t.Logf("a third cluster on the first one's range: %s", lines[len(lines)-1])
	}
	if _, err := os.Stat(third); err == nil {
		t.Errorf("the refused server created its data dir %s", third)
	}

	podNetns := map[*cluster.Server]map[string]bool{}
	for _, c := range []*cluster.Server{a, b} {
		if podNetns[c] = cluster.PodNetns(c.Names().CgroupRoot); len(podNetns[c]) == 0 {
			t.Fatalf("found no pod network namespace among the processes of cgroup %s", c.Names().CgroupRoot)
		}
	}

	// killall of the second leaves the first alone.
	killall(t, b)
	if a.ExitsWithin(0) || len(cluster.PodNetns(a.Names().CgroupRoot)) == 0 {
		t.Fatal("killall of the second cluster stopped the first or its pod")
	}
	for _, dev := range []string{a.Names().Bridge, a.Names().Overlay} {
		if _, err := net.InterfaceByName(dev); err != nil {
			t.Errorf("killall of the second cluster deleted the first one's %s: %v", dev, err)
		}
	}
	if ok, err := cluster.TableExists(a.Names().Table); !ok {
		t.Errorf("killall of the second cluster deleted the first one's nftables table %s (%v)", a.Names().Table, err)
	}
	if out, err := a.Kubectl(ctx, "", "exec", "p", "--", "nslookup", "kubernetes.default.svc.cluster.local"); err != nil {
		t.Errorf("the first cluster's pod no longer resolves names after killall of the second: %v\n%s", err, out)
	}
	killall(t, a)

	for _, c := range []*cluster.Server{a, b} {
		for _, l := range cluster.Leftovers(c.Names(), []string{c.Dir}, podNetns[c]) {
			t.Errorf("left behind: %s", l)
		}
		if _, err := os.Stat(filepath.Join(c.DataDir, "server", "db", "state.db")); err != nil {
			t.Errorf("the data is gone: %v", err)
		}
		if err := os.RemoveAll(c.DataDir); err != nil {
			t.Errorf("removing the data dir: %v", err)
		}
	}
}

// killall runs `skiff killall --data-dir` for c and waits for its server to
// end.
func killall(t *testing.T, c *cluster.Server) {
	t.Helper()
	out, err := c.Skiff(time.Minute, "killall", "--data-dir", c.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("skiff killall --data-dir %s: %s", c.DataDir, strings.TrimSpace(out))
	if !c.ExitsWithin(30 * time.Second) {
		t.Fatalf("the server of %s still runs after skiff killall", c.DataDir)
	}
	if _, err := os.Stat(c.Names().RunDir); err == nil {
		t.Errorf("run dir %s is still there", c.Names().RunDir)
	}
}

// start starts a throwaway cluster in dir from bin with a pod running on
// it; whatever happens, the test ends with it gone. It may run in its own
// goroutine: it reports failures with Error and returns nil.
func start(t *testing.T, dir, bin string, extra ...string) *cluster.Server {
	t.Helper()
	c, err := cluster.NewThrowaway(dir, extra...)
	if err != nil {
		t.Error(err)
		return nil
	}
	t.Cleanup(func() {
		c.Remove()
		if t.Failed() {
			t.Logf("server log of %s (tail):\n%s", dir, c.LogTail(40))
		}
	})
	c.Bin = bin
	if err := c.StartCI(); err != nil {
		t.Error(err)
		return nil
	}
	if err := c.RunPod(); err != nil {
		t.Error(err)
		return nil
	}
	return c
}
