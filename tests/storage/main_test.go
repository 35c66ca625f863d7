// Package storage tests persistent volumes on a cluster of two machines, a
// server and an agent, each in its own network namespace on one LAN: the
// local-path StorageClass provisions each claim on the node its pod runs on,
// with no helper pod and no image.
package storage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/skiff-dev/skiff/tests/cluster"
)

var (
	lan   *cluster.LAN
	srv   *cluster.Server
	agent *cluster.Server
	// nodes are the node names: the server's, the agent's.
	nodes = []string{"server", "agent"}
)

func TestMain(m *testing.M) {
	os.Exit(cluster.LANMain(m, "storage", 2, start, func() []*cluster.Server { return []*cluster.Server{agent, srv} }))
}

func start(dir string, l *cluster.LAN) error {
	lan = l
	var err error
	if srv, err = cluster.NewLANServer(filepath.Join(dir, "server"), lan.Hosts[0], "--node-name", nodes[0]); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		return err
	}
	if agent, err = cluster.NewLANAgent(filepath.Join(dir, "agent"), lan.Hosts[1], srv, "--node-name", nodes[1]); err != nil {
		return err
	}
	if err := agent.StartProcess(); err != nil {
		return err
	}
	return waitNodes(ctx)
}

// waitNodes waits until both nodes are Ready.
func waitNodes(ctx context.Context) error {
	cs, err := srv.Client()
	if err != nil {
		return err
	}
	return wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if agent.Exited() {
			return false, fmt.Errorf("agent exited:\n%s", agent.LogTail(30))
		}
		return cluster.NodeReady(ctx, cs, nodes[0]) && cluster.NodeReady(ctx, cs, nodes[1]), nil
	})
}

// dataDir is the data dir of the node named node.
func dataDir(node string) string {
	if node == nodes[0] {
		return srv.DataDir
	}
	return agent.DataDir
}
