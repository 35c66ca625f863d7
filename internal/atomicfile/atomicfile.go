// Package atomicfile writes files so that a crash or a power loss leaves
// either the old content or the new, never half of it.
package atomicfile

import (
	"bytes"
	"os"
	"path/filepath"
)

// Write writes data to path with mode: to a temporary file in the same dir,
// synced, renamed over path, and the dir synced so that the rename itself
// survives a power loss. An identical file is left untouched but for its
// mode. Missing parent dirs are made with mode 0700.
func Write(path string, data []byte, mode os.FileMode) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return os.Chmod(path, mode)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir makes the dir's entries (a rename, a new file) durable.
func SyncDir(dir string) error { return Sync(dir) }

// Sync makes what a file or dir holds durable.
func Sync(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
