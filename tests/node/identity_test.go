package node

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// TestServerNodeIdentity: the server's own node is the control plane, and
// its name is bound like an agent's, so that a join token cannot take it.
func TestServerNodeIdentity(t *testing.T) {
	ctx := cluster.Context(t)
	nodes, err := srv.ClientT(t).CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 {
		t.Fatalf("nodes: %v %v", nodes, err)
	}
	name := nodes.Items[0].Name
	if nodes.Items[0].Labels["node-role.kubernetes.io/control-plane"] != "true" {
		t.Errorf("the server's node %s is not labelled node-role.kubernetes.io/control-plane=true: %v", name, nodes.Items[0].Labels)
	}
	token, err := srv.JoinToken()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	code, out := cluster.Run(ctx, nil, "agent", "--server", fmt.Sprintf("https://127.0.0.1:%d", srv.Port), "--token", token,
		"--node-name", name, "--data-dir", filepath.Join(dir, "data"))
	if code == 0 || !strings.Contains(out, "node name "+name+" is already taken by another machine") {
		t.Errorf("an agent joining as the server's node %s with the server token: exit %d:\n%s", name, code, out)
	}
}
