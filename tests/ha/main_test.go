// Package ha tests several servers on one external datastore: two servers on
// a PostgreSQL database (the host's, started by the test) serve one cluster,
// and an agent joins it through the second with the first one's token. Each
// machine is a network namespace on one bridge.
package ha

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
	pg      *cluster.Postgres
	lan     *cluster.LAN
	servers []*cluster.Server
	agent   *cluster.Server
	dir     string
	// apiPort is every server's API port, on its own host.
	apiPort = cluster.FreePort()
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if _, err := cluster.PostgresBin(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var err error
	if dir, err = os.MkdirTemp("", "skiff-ha-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if lan, err = cluster.NewLAN(3); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer lan.Delete()
	if pg, err = cluster.StartPostgres(cluster.LANGateway, cluster.FreePort()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer pg.Stop()
	all := func() []*cluster.Server {
		var l []*cluster.Server
		for _, s := range append(servers, agent) {
			if s != nil {
				l = append(l, s)
			}
		}
		return l
	}
	defer func() {
		for _, n := range all() {
			n.Stop()
		}
		if agent != nil {
			if err := agent.Teardown(); err != nil {
				fmt.Fprintf(os.Stderr, "teardown of %s: %v\n", agent.Dir, err)
			}
		}
	}()
	if err := start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		cluster.PrintLogs(40, all()...)
		return 1
	}
	code := m.Run()
	if code != 0 {
		cluster.PrintLogs(60, all()...)
	}
	return code
}

// newServer prepares a control-plane-only server on host h of the LAN, on
// the shared database.
func newServer(name string, h *cluster.LANHost, extra ...string) *cluster.Server {
	os.MkdirAll(filepath.Join(dir, name), 0o700)
	s := cluster.New(filepath.Join(dir, name), append([]string{"--datastore-endpoint", pg.Endpoint("skiff")}, extra...)...)
	s.Port = apiPort
	s.OnHost(h)
	return s
}

// start starts server-1, then server-2 with server-1's token, then the agent
// through server-2.
func start() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	first := newServer("server-1", lan.Hosts[0])
	servers = append(servers, first)
	if err := first.Start(ctx); err != nil {
		return err
	}
	token, err := first.JoinToken()
	if err != nil {
		return err
	}
	second := newServer("server-2", lan.Hosts[1])
	second.Token = token
	servers = append(servers, second)
	if err := second.Start(ctx); err != nil {
		return err
	}
	if agent, err = cluster.NewLANAgent(filepath.Join(dir, "agent"), lan.Hosts[2], second, "--node-name", "agent"); err != nil {
		return err
	}
	if err := agent.StartProcess(); err != nil {
		return err
	}
	cs, err := first.Client()
	if err != nil {
		return err
	}
	return wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if agent.Exited() {
			return false, fmt.Errorf("agent exited:\n%s", agent.LogTail(30))
		}
		return cluster.NodeReady(ctx, cs, "agent"), nil
	})
}
