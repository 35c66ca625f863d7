// Package node tests `skiff server` as a single-node cluster that runs real
// containers: containerd, runc, the pod network and the kubelet.
package node

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// srv is the node the tests share.
var srv *cluster.Server

func TestMain(m *testing.M) {
	os.Exit(cluster.Main(m, "node", func(dir string) (*cluster.Server, error) {
		var err error
		if srv, err = cluster.NewNode(dir); err != nil {
			return nil, err
		}
		// A broken tarball in the air-gap folder must not stop the node.
		return srv, os.WriteFile(filepath.Join(srv.DataDir, "agent", "images", "broken.tar"), []byte("not a tarball"), 0o600)
	}))
}
