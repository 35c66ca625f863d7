package node

import (
	"context"
	"fmt"
	"testing"
)

// Not parallel: it restarts the shared server while nothing else runs.
func TestServerRestartKeepsPodsRunning(t *testing.T) {
	ns := namespace(t)
	kubectl(t, fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: survivor}\nspec:\n  containers: [{name: c, image: %s, command: [sleep, '3600']}]\n", image), "apply", "-n", ns, "-f", "-")
	before := waitPod(t, ns, "survivor", "running", running)

	if err := srv.Stop(); err != nil {
		t.Fatalf("stopping the server: %v", err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := waitNodeReady(context.Background()); err != nil {
		t.Fatalf("node not Ready after restart: %v", err)
	}
	after := waitPod(t, ns, "survivor", "running after the restart", running)
	b, a := before.Status.ContainerStatuses[0], after.Status.ContainerStatuses[0]
	if a.ContainerID != b.ContainerID || a.RestartCount != 0 {
		t.Fatalf("container %s (restarts %d) after the restart, want the same %s with no restarts", a.ContainerID, a.RestartCount, b.ContainerID)
	}
	if before.Status.PodIP != after.Status.PodIP {
		t.Fatalf("pod IP changed from %s to %s", before.Status.PodIP, after.Status.PodIP)
	}
}
