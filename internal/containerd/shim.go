package containerd

import (
	_ "embed"
	"os"
	"path/filepath"

	"github.com/skiff-dev/skiff/internal/assets"
)

// ShimName is the name containerd looks the runc shim up by, on its PATH.
const ShimName = "containerd-shim-runc-v2"

// shim is upstream's runc shim (containerd's cmd/containerd-shim-runc-v2),
// built by the Makefile for the target architecture. It is a program of its
// own rather than this binary called by another name: one runs per pod, and
// a few MB of shim beat the Kubernetes packages' initialisation in each.
//
//go:embed bin/containerd-shim-runc-v2
var shim string

// installShim writes the shim into dir, leaving an identical file untouched.
// Running shims keep the file they started from: the new one replaces it by
// a rename. A link to skiff, which older releases put there, is replaced.
func installShim(dir string) error {
	dst := filepath.Join(dir, ShimName)
	if fi, err := os.Lstat(dst); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		if err := os.Remove(dst); err != nil {
			return err
		}
	}
	return assets.Install(dst, shim, 0o755)
}
