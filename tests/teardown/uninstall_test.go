package teardown

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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
	n := newNode(t, dir)
	bin := filepath.Join(dir, "bin")
	execFlags := strings.Join(append([]string{"server"}, n.flags...), " ")
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
	n.start(t, filepath.Join(bin, "skiff"))
	n.runPod(t)
	podNetns := cluster.PodNetns(n.cgroupRoot)
	if len(podNetns) == 0 {
		t.Fatalf("found no pod network namespace among the processes of cgroup %s", n.cgroupRoot)
	}

	uninstall := exec.Command(filepath.Join(bin, "skiff-uninstall.sh"))
	out, err := uninstall.CombinedOutput()
	t.Logf("skiff-uninstall.sh:\n%s", out)
	if err != nil {
		t.Fatalf("skiff-uninstall.sh: %v", err)
	}
	n.waitExited(t)
	for _, l := range cluster.Leftovers([]string{dir, n.runDir}, n.cgroupRoot, podNetns) {
		t.Errorf("left behind: %s", l)
	}
	for _, gone := range []string{n.data, n.runDir, filepath.Join(bin, "skiff"), filepath.Join(bin, "kubectl"),
		filepath.Join(bin, "skiff-killall.sh"), filepath.Join(bin, "skiff-uninstall.sh"),
		filepath.Join(dir, "systemd", "skiff.service"), filepath.Join(dir, "etc-skiff")} {
		if _, err := os.Lstat(gone); err == nil {
			t.Errorf("%s is still there", gone)
		}
	}
}

// node is a single-node cluster in a temp dir, run as a user would in CI.
type node struct {
	dir, data, kubeconfig, runDir, cgroupRoot string
	flags                                     []string
	cmd                                       *exec.Cmd
	exited                                    chan struct{}
	log                                       string
}

// newNode prepares a node in dir: its data dir with the test image in the
// air-gap folder, the tests' resolver, a free API port.
func newNode(t *testing.T, dir string) *node {
	t.Helper()
	n := &node{dir: dir, data: filepath.Join(dir, "data"), kubeconfig: filepath.Join(dir, "kubeconfig"), log: filepath.Join(dir, "skiff.log")}
	n.runDir = cluster.RunDir(n.data)
	n.cgroupRoot = "/" + filepath.Base(n.runDir)
	if err := cluster.WriteBusyboxImage(filepath.Join(n.data, "agent", "images")); err != nil {
		t.Fatal(err)
	}
	resolv, err := cluster.WriteResolvConf(dir)
	if err != nil {
		t.Fatal(err)
	}
	n.flags = []string{"--data-dir", n.data, "--https-listen-port", fmt.Sprint(cluster.FreePort()),
		"--write-kubeconfig", n.kubeconfig, "--resolv-conf", resolv}
	return n
}

// start runs `bin server` with the node's flags and waits with `skiff wait`.
// Whatever happens, the test ends with the node gone: killall again (it is
// idempotent).
func (n *node) start(t *testing.T, bin string) {
	t.Helper()
	logf, err := os.Create(n.log)
	if err != nil {
		t.Fatal(err)
	}
	n.cmd = exec.Command(bin, append([]string{"server"}, n.flags...)...)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	n.cmd.Env = append(os.Environ(), "SKIFF_CONFIG_FILE=")
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := n.cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	n.exited = make(chan struct{})
	go func() { n.cmd.Wait(); logf.Close(); close(n.exited) }()
	t.Cleanup(func() {
		syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.exited
		exec.Command(cluster.Binary(), "killall", "--data-dir", n.data).Run()
		if t.Failed() {
			log, _ := os.ReadFile(n.log)
			lines := strings.Split(string(log), "\n")
			t.Logf("server log (tail):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	n.skiff(t, 4*time.Minute, "wait", "--kubeconfig", n.kubeconfig, "--timeout", "3m")
}

// runPod runs the test image and waits until it is Ready.
func (n *node) runPod(t *testing.T) {
	t.Helper()
	n.skiff(t, time.Minute, "kubectl", "--kubeconfig", n.kubeconfig, "run", "p", "--image", cluster.BusyboxImage,
		"--restart", "Never", "--image-pull-policy", "Never", "--", "sleep", "3600")
	n.skiff(t, 3*time.Minute, "kubectl", "--kubeconfig", n.kubeconfig, "wait", "--for", "condition=Ready", "pod/p", "--timeout", "2m")
}

// skiff runs the built binary and fails the test if it fails.
func (n *node) skiff(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, cluster.Binary(), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("skiff %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// waitExited waits for the server process to end.
func (n *node) waitExited(t *testing.T) {
	t.Helper()
	select {
	case <-n.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the server still runs")
	}
}
