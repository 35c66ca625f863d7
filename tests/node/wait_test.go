package node

import (
	"context"
	"strings"
	"testing"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// TestSkiffWait: what a CI script runs after `skiff server &`.
func TestSkiffWait(t *testing.T) {
	ctx := cluster.Context(t)
	if code, out := cluster.Run(ctx, nil, "wait", "--kubeconfig", srv.Kubeconfig, "--timeout", "1m"); code != 0 {
		t.Errorf("skiff wait on a ready node: exit %d: %s", code, out)
	}
	code, out := cluster.Run(context.Background(), nil, "wait", "--kubeconfig", t.TempDir()+"/absent.yaml", "--timeout", "1s")
	if code == 0 || !strings.Contains(out, "not ready after 1s: no kubeconfig yet") || strings.Count(strings.TrimSpace(out), "\n") > 0 {
		t.Errorf("skiff wait without a cluster: exit %d, want one line saying what is not ready:\n%s", code, out)
	}
}
