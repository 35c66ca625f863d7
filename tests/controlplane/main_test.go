// Package controlplane tests `skiff server` without a node: the API, the
// controllers, restarts, crashes and bad input.
package controlplane

import (
	"os"
	"testing"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// srv is the server most tests share. It runs with the Go memory settings
// of a 1 GB board.
var srv *cluster.Server

func TestMain(m *testing.M) {
	os.Exit(cluster.Main(m, "controlplane", func(dir string) (*cluster.Server, error) {
		srv = cluster.New(dir, "--memory-limit", "512Mi")
		return srv, nil
	}))
}
