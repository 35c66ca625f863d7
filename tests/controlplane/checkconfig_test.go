package controlplane

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiff-dev/skiff/tests/cluster"
)

func TestCheckConfigOnThisHost(t *testing.T) {
	code, out := cluster.Run(context.Background(), nil, "check-config")
	if code != 0 {
		t.Fatalf("check-config on the test host: exit %d\n%s", code, out)
	}
	for _, want := range []string{"ok       program runc", "ok       program mount", "ok       program umount", "ok       memory cgroup", "ok       nftables"} {
		if !strings.Contains(out, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, out)
		}
	}
	// Without the host's programs on the PATH it names each one and says
	// how to install it.
	code, out = cluster.Run(context.Background(), []string{"PATH=" + t.TempDir()}, "check-config")
	for _, want := range []string{"MISSING  program runc: runc is not in PATH", "install it: apt-get install runc",
		"MISSING  program mount: mount is not in PATH (the kubelet mounts pods' volumes with it)"} {
		if code == 0 || !strings.Contains(out, want) {
			t.Errorf("check-config without the host's programs: exit %d, want %q in:\n%s", code, want, out)
		}
	}
}

// TestReleaseFileRunsItsPrograms: the binary run under a release file's
// name, as a user may run it without installing it, still answers as
// containerd (the node starts its containerd that way) and kubectl.
func TestReleaseFileRunsItsPrograms(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "skiff-linux-test")
	if err := os.Symlink(cluster.Binary(), bin); err != nil {
		t.Fatal(err)
	}
	for args, want := range map[string]string{"containerd --version": "containerd ", "kubectl version --client": "Client Version: v1."} {
		out, err := exec.Command(bin, strings.Fields(args)...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), want) {
			t.Errorf("skiff-linux-test %s: %v\n%s", args, err, out)
		}
	}
}
