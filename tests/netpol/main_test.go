// Package netpol tests NetworkPolicies with real traffic between pods on
// two nodes of a LAN of network namespaces: a server and an agent that
// joined it, each enforcing the policies of its own pods. Clients run on
// one node and servers on the other unless a case needs otherwise, so that
// traffic crosses the VXLAN overlay.
package netpol

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
	// The node names, in host order.
	serverNode, agentNode = "server", "agent"
)

func TestMain(m *testing.M) {
	os.Exit(cluster.LANMain(m, "netpol", 2, start, func() []*cluster.Server { return []*cluster.Server{agent, srv} }))
}

func start(dir string, l *cluster.LAN) error {
	lan = l
	var err error
	if srv, err = cluster.NewLANServer(filepath.Join(dir, "server"), lan.Hosts[0], "--node-name", serverNode); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		return err
	}
	if agent, err = cluster.NewLANAgent(filepath.Join(dir, "agent"), lan.Hosts[1], srv, "--node-name", agentNode); err != nil {
		return err
	}
	if err := agent.StartProcess(); err != nil {
		return err
	}
	cs, err := srv.Client()
	if err != nil {
		return err
	}
	return wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if agent.Exited() {
			return false, fmt.Errorf("agent exited:\n%s", agent.LogTail(30))
		}
		return cluster.NodeReady(ctx, cs, serverNode) && cluster.NodeReady(ctx, cs, agentNode), nil
	})
}
