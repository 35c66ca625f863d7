package containerd

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/platforms"
	"k8s.io/klog/v2"
)

// pinned keeps the kubelet's image garbage collection away from an image.
var pinned = map[string]string{"io.cri-containerd.pinned": "pinned"}

// importImages imports the built-in sandbox image and every *.tar in the
// air-gap folder. A broken tarball is logged and skipped.
func importImages(ctx context.Context, cl *client.Client, c *Containerd) error {
	ctx = namespaces.WithNamespace(ctx, Namespace)
	if c.SandboxTarball != nil {
		data, err := c.SandboxTarball()
		if err != nil {
			return err
		}
		if _, err := importTar(ctx, cl, bytes.NewReader(data)); err != nil {
			return fmt.Errorf("sandbox image: %w", err)
		}
	}
	tars, _ := filepath.Glob(filepath.Join(c.ImagesDir, "*.tar"))
	for _, path := range tars {
		f, err := os.Open(path)
		if err != nil {
			klog.ErrorS(err, "air-gap image skipped", "file", path)
			continue
		}
		names, err := importTar(ctx, cl, f)
		f.Close()
		if err != nil {
			klog.ErrorS(err, "air-gap image skipped: not a valid docker-archive or OCI tarball", "file", path)
			continue
		}
		klog.InfoS("air-gap images imported", "file", path, "images", strings.Join(names, ","))
	}
	return nil
}

func importTar(ctx context.Context, cl *client.Client, r io.Reader) ([]string, error) {
	imgs, err := cl.Import(ctx, r,
		client.WithSkipMissing(),
		client.WithImportPlatform(platforms.DefaultStrict()),
		client.WithImageLabels(pinned),
	)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, i := range imgs {
		img := client.NewImageWithPlatform(cl, i, platforms.DefaultStrict())
		if err := img.Unpack(ctx, Snapshotter()); err != nil {
			return nil, fmt.Errorf("unpacking %s: %w", i.Name, err)
		}
		names = append(names, i.Name)
	}
	return names, nil
}
