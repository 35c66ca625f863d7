package containerd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/platforms"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/atomicfile"
)

// pinned keeps the kubelet's image garbage collection away from an image.
var pinned = map[string]string{"io.cri-containerd.pinned": "pinned"}

// importImages imports the built-in sandbox image and every *.tar in the
// air-gap folder. A broken tarball is logged and skipped. A source imported
// by an earlier start is not read again while it is unchanged and every
// image it gave is still there, unpacked, as it left them: a large air-gap
// folder would otherwise cost minutes at every start on an SD card.
func importImages(ctx context.Context, cl *client.Client, c *Containerd) error {
	ctx = namespaces.WithNamespace(ctx, Namespace)
	record := filepath.Join(c.Root, importRecord)
	last := readImported(record)
	now := imported{}
	if c.SandboxTarball != nil {
		key := "sandbox " + c.SandboxID
		if imgs, ok := last[key]; ok && c.SandboxID != "" && present(ctx, cl, imgs) {
			now[key] = imgs
		} else {
			data, err := c.SandboxTarball()
			if err != nil {
				return err
			}
			imgs, err := importTar(ctx, cl, bytes.NewReader(data))
			if err != nil {
				return fmt.Errorf("sandbox image: %w", err)
			}
			now[key] = imgs
		}
	}
	tars, _ := filepath.Glob(filepath.Join(c.ImagesDir, "*.tar"))
	for _, path := range tars {
		fi, err := os.Stat(path)
		if err != nil {
			klog.ErrorS(err, "air-gap image skipped", "file", path)
			continue
		}
		key := sourceKey(path, fi)
		if imgs, ok := last[key]; ok && present(ctx, cl, imgs) {
			now[key] = imgs
			klog.InfoS("air-gap images already imported: the file is unchanged", "file", path, "images", strings.Join(slices.Sorted(maps.Keys(imgs)), ","))
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			klog.ErrorS(err, "air-gap image skipped", "file", path)
			continue
		}
		imgs, err := importTar(ctx, cl, f)
		f.Close()
		if err != nil {
			klog.ErrorS(err, "air-gap image skipped: not a valid docker-archive or OCI tarball", "file", path)
			continue
		}
		now[key] = imgs
		klog.InfoS("air-gap images imported", "file", path, "images", strings.Join(slices.Sorted(maps.Keys(imgs)), ","))
	}
	// Only a hint for the next start: without it, everything is imported
	// again, as at a first start.
	data, err := json.Marshal(now)
	if err == nil {
		err = atomicfile.Write(record, data, 0o600)
	}
	if err != nil {
		klog.ErrorS(err, "cannot record the imported images; the next start imports them again", "file", record)
	}
	return nil
}

// importRecord, in containerd's root, lists what the last start imported.
const importRecord = "skiff-imported.json"

// imported maps a source (sourceKey, or the sandbox's) to the images it gave:
// name to the digest of the image's target.
type imported map[string]map[string]string

func readImported(path string) imported {
	var last imported
	if data, err := os.ReadFile(path); err == nil && json.Unmarshal(data, &last) == nil {
		return last
	}
	return imported{}
}

// sourceKey identifies an air-gap tarball as it is now: a file replaced or
// written again has another size or modification time.
func sourceKey(path string, fi os.FileInfo) string {
	return fmt.Sprintf("%s %d %d", path, fi.Size(), fi.ModTime().UnixNano())
}

// present says whether containerd still has each image, pointing at the same
// content and unpacked for the snapshotter pods use. An image removed or
// replaced since (ctr images rm, a pull of the same name) is imported again.
func present(ctx context.Context, cl *client.Client, imgs map[string]string) bool {
	if len(imgs) == 0 {
		return false
	}
	for name, dgst := range imgs {
		i, err := cl.ImageService().Get(ctx, name)
		if err != nil || i.Target.Digest.String() != dgst {
			return false
		}
		ok, err := client.NewImageWithPlatform(cl, i, platforms.DefaultStrict()).IsUnpacked(ctx, Snapshotter())
		if err != nil || !ok {
			return false
		}
	}
	return true
}

func importTar(ctx context.Context, cl *client.Client, r io.Reader) (map[string]string, error) {
	imgs, err := cl.Import(ctx, r,
		client.WithSkipMissing(),
		client.WithImportPlatform(platforms.DefaultStrict()),
		client.WithImageLabels(pinned),
	)
	if err != nil {
		return nil, err
	}
	names := map[string]string{}
	for _, i := range imgs {
		img := client.NewImageWithPlatform(cl, i, platforms.DefaultStrict())
		if err := img.Unpack(ctx, Snapshotter()); err != nil {
			return nil, fmt.Errorf("unpacking %s: %w", i.Name, err)
		}
		names[i.Name] = i.Target.Digest.String()
	}
	return names, nil
}
