// Package node tests `skiff server` as a single-node cluster that runs real
// containers: containerd, runc, the pod network and the kubelet.
package node

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/skiff-dev/skiff/internal/ociimage"
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
		images := filepath.Join(srv.DataDir, "agent", "images")
		// One more image, which the restart test removes.
		if err := writeTinyImage(filepath.Join(images, "spare.tar"), spareImage); err != nil {
			return nil, err
		}
		// A broken tarball in the air-gap folder must not stop the node.
		return srv, os.WriteFile(filepath.Join(images, "broken.tar"), []byte("not a tarball"), 0o600)
	}))
}

// spareImage is in the air-gap folder from the start.
const spareImage = "skiff.test/spare:1"

// writeTinyImage writes an air-gap tarball of an image called name that
// holds one small file.
func writeTinyImage(path, name string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = ociimage.Write(f, ociimage.Image{Name: name, Files: []ociimage.File{{Path: "name", Mode: 0o644, Data: []byte(name)}}, Cmd: []string{"/name"}})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
