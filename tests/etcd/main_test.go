package etcd

import (
	"os"
	"testing"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// srv is the package's server: a node started with --cluster-init.
var srv *cluster.Server

func TestMain(m *testing.M) {
	os.Exit(cluster.Main(m, "etcd", func(dir string) (*cluster.Server, error) {
		var err error
		srv, err = cluster.NewNode(dir, "--cluster-init")
		return srv, err
	}))
}
