// Package node tests `skiff server` as a single-node cluster that runs real
// containers: containerd, runc, the pod network and the kubelet.
package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// srv is the node the tests share.
var srv *cluster.Server

func TestMain(m *testing.M) {
	code := run(m)
	os.Exit(code)
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "skiff-node-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	srv, err = cluster.NewNode(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// A broken tarball in the air-gap folder must not stop the node.
	os.WriteFile(filepath.Join(srv.DataDir, "agent", "images", "broken.tar"), []byte("not a tarball"), 0o600)
	defer func() {
		if err := srv.Teardown(); err != nil {
			fmt.Fprintln(os.Stderr, "teardown:", err)
		}
	}()
	ctx := context.Background()
	if err := srv.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		srv.Stop()
		return 1
	}
	code := 1
	if err := waitNodeReady(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "node not ready: %v\n%s\n", err, srv.LogTail(60))
	} else {
		code = m.Run()
	}
	if err := srv.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping the server: %v\n", err)
		code = 1
	}
	if code != 0 {
		fmt.Fprintf(os.Stderr, "server log:\n%s\n", srv.LogTail(60))
	}
	return code
}

func waitNodeReady(ctx context.Context) error {
	cs, err := srv.Client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	return wait.PollUntilContextCancel(ctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil || len(nodes.Items) != 1 {
			return false, nil
		}
		for _, c := range nodes.Items[0].Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue, nil
			}
		}
		return false, nil
	})
}
