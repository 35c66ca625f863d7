package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// containerdPid finds the node's containerd: the server's child running
// `skiff containerd`.
func containerdPid(t *testing.T) int {
	t.Helper()
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, st := range stats {
		data, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
		if len(fields) < 2 || fields[1] != fmt.Sprint(srv.Pid()) {
			continue
		}
		if cmdline, _ := os.ReadFile(filepath.Join(filepath.Dir(st), "cmdline")); strings.Contains(string(cmdline), "containerd\x00--config") {
			var pid int
			fmt.Sscan(filepath.Base(filepath.Dir(st)), &pid)
			return pid
		}
	}
	return 0
}

// Not parallel: it kills the shared node's containerd.
func TestContainerdIsRestartedWhenItDies(t *testing.T) {
	ns := namespace(t)
	old := containerdPid(t)
	if old == 0 {
		t.Fatal("no containerd child of the server")
	}
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new containerd", func(ctx context.Context) (bool, error) {
		pid := containerdPid(t)
		return pid != 0 && pid != old, nil
	})
	// The node goes on running new pods.
	kubectl(t, fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: after-crash}\nspec:\n  containers: [{name: c, image: %s, command: [sleep, '3600']}]\n", image), "apply", "-n", ns, "-f", "-")
	waitPod(t, ns, "after-crash", "running after containerd was restarted", running)
}
