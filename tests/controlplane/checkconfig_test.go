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
	for _, want := range []string{"ok       runc", "ok       memory cgroup", "ok       nftables"} {
		if !strings.Contains(out, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, out)
		}
	}
	// Without runc on the PATH it says what is missing and how to fix it.
	code, out = cluster.Run(context.Background(), []string{"PATH=" + t.TempDir()}, "check-config")
	if code == 0 || !strings.Contains(out, "MISSING  runc: install runc: apt-get install runc") {
		t.Fatalf("check-config without runc: exit %d\n%s", code, out)
	}
}
