package teardown

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skiff-dev/skiff/tests/cluster"
)

var installScript, _ = filepath.Abs("../../scripts/install.sh")

// TestUninstallAfterRun installs skiff with the installer (its paths in a
// temp dir, the service not started: the test runs the service's command
// itself), runs a pod on it, then runs skiff-uninstall.sh: the host is left
// as before and the data dir is gone.
func TestUninstallAfterRun(t *testing.T) {
	// The uninstall script also removes /etc/skiff, where a server writes
	// its kubeconfig by default: never on a host that has one.
	if _, err := os.Stat("/etc/skiff"); err == nil {
		t.Skip("/etc/skiff exists: this host has a skiff of its own, which the uninstall script would remove")
	}
	dir := t.TempDir()
	c, err := cluster.NewThrowaway(dir)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	execFlags := strings.Join(c.Args(), " ")
	install := exec.Command("sh", installScript)
	install.Env = append(os.Environ(),
		"INSTALL_SKIFF_BINARY="+cluster.Binary(),
		"INSTALL_SKIFF_BIN_DIR="+bin,
		"INSTALL_SKIFF_SYSTEMD_DIR="+filepath.Join(dir, "systemd"),
		"INSTALL_SKIFF_OPENRC_DIR="+filepath.Join(dir, "init.d"),
		"INSTALL_SKIFF_CONFIG_DIR="+filepath.Join(dir, "etc-skiff"),
		"INSTALL_SKIFF_INIT=systemd",
		"INSTALL_SKIFF_SKIP_START=true",
		"INSTALL_SKIFF_SKIP_ENABLE=true",
		"INSTALL_SKIFF_EXEC="+execFlags,
	)
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("install.sh: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		c.Remove()
		if t.Failed() {
			t.Logf("server log (tail):\n%s", c.LogTail(40))
		}
	})
	c.Bin = filepath.Join(bin, "skiff")
	if err := c.StartCI(); err != nil {
		t.Fatal(err)
	}
	if err := c.RunPod(); err != nil {
		t.Fatal(err)
	}
	podNetns := cluster.PodNetns(c.Names().CgroupRoot)
	if len(podNetns) == 0 {
		t.Fatalf("found no pod network namespace among the processes of cgroup %s", c.Names().CgroupRoot)
	}

	uninstall := exec.Command(filepath.Join(bin, "skiff-uninstall.sh"))
	out, err := uninstall.CombinedOutput()
	t.Logf("skiff-uninstall.sh:\n%s", out)
	if err != nil {
		t.Fatalf("skiff-uninstall.sh: %v", err)
	}
	if !c.ExitsWithin(30 * time.Second) {
		t.Fatal("the server still runs after skiff-uninstall.sh")
	}
	for _, l := range cluster.Leftovers(c.Names(), []string{dir}, podNetns) {
		t.Errorf("left behind: %s", l)
	}
	for _, gone := range []string{c.DataDir, c.Names().RunDir, filepath.Join(bin, "skiff"), filepath.Join(bin, "kubectl"),
		filepath.Join(bin, "skiff-killall.sh"), filepath.Join(bin, "skiff-uninstall.sh"),
		filepath.Join(dir, "systemd", "skiff.service"), filepath.Join(dir, "etc-skiff")} {
		if _, err := os.Lstat(gone); err == nil {
			t.Errorf("%s is still there", gone)
		}
	}
}
