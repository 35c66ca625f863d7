// Package pause holds the pod sandbox image built into skiff.
package pause

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"runtime"

	"github.com/skiff-dev/skiff/internal/ociimage"
)

// Image is the sandbox image's name; containerd's CRI is told to use it and
// never pulls it.
const Image = "registry.local/skiff/pause:1"

// ID identifies the image Tarball writes: a digest of the program in it,
// which changes only when the program does.
func ID() string {
	program, err := Program(runtime.GOARCH)
	if err != nil {
		return "none"
	}
	return fmt.Sprintf("sha256:%x", sha256.Sum256(program))
}

// Tarball returns the sandbox image as an OCI image layout tarball: the
// pause program of this architecture (see Program), all the image holds.
func Tarball() ([]byte, error) {
	program, err := Program(runtime.GOARCH)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	err = ociimage.Write(&buf, ociimage.Image{
		Name:       Image,
		Files:      []ociimage.File{{Path: "pause", Mode: 0o755, Data: program}},
		Entrypoint: []string{"/pause"},
	})
	return buf.Bytes(), err
}
