// Package controlplane tests `skiff server` without a node: the API, the
// controllers, restarts, crashes and bad input.
package controlplane

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// srv is the server most tests share.
var srv *cluster.Server

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "skiff-controlplane-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv = cluster.New(dir)
	code := 1
	if err := srv.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	if err := srv.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping the shared server: %v\n%s\n", err, srv.LogTail(30))
		code = 1
	}
	if code != 0 {
		fmt.Fprintf(os.Stderr, "shared server log:\n%s\n", srv.LogTail(40))
	}
	os.RemoveAll(dir)
	os.Exit(code)
}
