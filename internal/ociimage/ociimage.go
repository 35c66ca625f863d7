// Package ociimage writes single-layer container images as OCI image layout
// tarballs, the format `ctr images import` and containerd's Go client read.
//
// Written by hand: an image layout is a few JSON documents and one layer tar,
// and the libraries that build images bring a large dependency tree for it.
package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"time"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// File is one file of the image's only layer.
type File struct {
	Path string // inside the image, without a leading slash
	Mode int64
	Data []byte
	// Link makes the file a symlink to Link instead.
	Link string
}

// Image describes the image to write.
type Image struct {
	Name       string // e.g. docker.io/library/busybox:latest
	Files      []File
	Entrypoint []string
	Cmd        []string
	Env        []string
	Arch       string // default: this binary's
}

// Write writes img as an OCI image layout tar to w.
func Write(w io.Writer, img Image) error {
	arch := img.Arch
	if arch == "" {
		arch = runtime.GOARCH
	}
	layer, diffID, err := layerTar(img.Files)
	if err != nil {
		return err
	}
	cfg := v1.Image{
		Platform: v1.Platform{OS: "linux", Architecture: arch},
		Config:   v1.ImageConfig{Entrypoint: img.Entrypoint, Cmd: img.Cmd, Env: img.Env},
		RootFS:   v1.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	manifest := v1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageManifest,
		Config:    descriptor(v1.MediaTypeImageConfig, cfgJSON),
		Layers:    []v1.Descriptor{descriptor(v1.MediaTypeImageLayerGzip, layer)},
	}
	manifestJSON, err := json.Marshal(manifest)
	if err != nil {
		return err
	}
	md := descriptor(v1.MediaTypeImageManifest, manifestJSON)
	md.Annotations = map[string]string{
		"io.containerd.image.name": img.Name,
		v1.AnnotationRefName:       img.Name,
	}
	md.Platform = &cfg.Platform
	index := v1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageIndex, Manifests: []v1.Descriptor{md}}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	put := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	layout, _ := json.Marshal(v1.ImageLayout{Version: v1.ImageLayoutVersion})
	for _, f := range []struct {
		name string
		data []byte
	}{
		{v1.ImageLayoutFile, layout},
		{v1.ImageIndexFile, indexJSON},
		{blob(cfgJSON), cfgJSON},
		{blob(layer), layer},
		{blob(manifestJSON), manifestJSON},
	} {
		if err := put(f.name, f.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

func descriptor(mediaType string, data []byte) v1.Descriptor {
	return v1.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
}

func blob(data []byte) string {
	return fmt.Sprintf("blobs/sha256/%x", sha256.Sum256(data))
}

// layerTar returns the gzipped layer and the digest of its uncompressed tar.
func layerTar(files []File) ([]byte, digest.Digest, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	dirs := map[string]bool{}
	for _, f := range files {
		for _, d := range parents(f.Path) {
			if !dirs[d] {
				dirs[d] = true
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
					return nil, "", err
				}
			}
		}
		h := &tar.Header{Name: f.Path, Mode: f.Mode, Size: int64(len(f.Data)), ModTime: time.Unix(0, 0)}
		if f.Link != "" {
			h = &tar.Header{Typeflag: tar.TypeSymlink, Name: f.Path, Linkname: f.Link, Mode: 0o777, ModTime: time.Unix(0, 0)}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, "", err
		}
		if f.Link == "" {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, "", err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	diffID := digest.FromBytes(raw.Bytes())
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return gz.Bytes(), diffID, nil
}

func parents(path string) []string {
	var out []string
	for i := 0; i < len(path); i++ {
		if path[i] == '/' {
			out = append(out, path[:i])
		}
	}
	return out
}
