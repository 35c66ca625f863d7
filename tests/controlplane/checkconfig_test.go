package controlplane

import (
	"context"
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
