// Package pause holds the pod sandbox image built into skiff.
package pause

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"fmt"

	"github.com/skiff-dev/skiff/internal/assets"
	"github.com/skiff-dev/skiff/internal/ociimage"
)

// Image is the sandbox image's name; containerd's CRI is told to use it and
// never pulls it.
const Image = "registry.local/skiff/pause:1"

// binary is built by the Makefile from ./cmd for the target architecture.
//
//go:embed bin/pause
var binary string

// ID identifies the image Tarball writes: a digest of the program in it,
// the only part that changes from one build to another.
// It is read at every start: hashed a piece at a time, so that the program
// is not copied whole onto the heap ([]byte(binary) would).
func ID() string {
	defer assets.Release(binary)
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for rest := binary; rest != ""; {
		n := copy(buf, rest)
		h.Write(buf[:n])
		rest = rest[n:]
	}
	return fmt.Sprintf("sha256:%x", h.Sum(nil))
}

// Tarball returns the sandbox image as an OCI image layout tarball. The
// node imports it once at each start; the binary's pages are released after.
func Tarball() ([]byte, error) {
	defer assets.Release(binary)
	var buf bytes.Buffer
	err := ociimage.Write(&buf, ociimage.Image{
		Name:       Image,
		Files:      []ociimage.File{{Path: "pause", Mode: 0o755, Data: []byte(binary)}},
		Entrypoint: []string{"/pause"},
	})
	return buf.Bytes(), err
}
