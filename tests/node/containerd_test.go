package node

import (
	"context"
	"fmt"
	"syscall"
	"testing"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// Not parallel: it kills the shared node's containerd.
func TestContainerdIsRestartedWhenItDies(t *testing.T) {
	ns := srv.Namespace(t)
	old := srv.ContainerdPid()
	if old == 0 {
		t.Fatal("no containerd child of the server")
	}
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cluster.WaitFor(t, "a new containerd", func(ctx context.Context) (bool, error) {
		pid := srv.ContainerdPid()
		return pid != 0 && pid != old, nil
	})
	// The node goes on running new pods.
	srv.KubectlT(t, fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: after-crash}\nspec:\n  containers: [{name: c, image: %s, command: [sleep, '3600']}]\n", image), "apply", "-n", ns, "-f", "-")
	waitPod(t, ns, "after-crash", "running after containerd was restarted", running)
}
