// Package atomicfile writes files so that a crash or a power loss leaves
// either the old content or the new, never half of it.
package atomicfile

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
)

// Write writes data to path with mode: to a temporary file in the same dir,
// synced, renamed over path, and the dir synced so that the rename itself
// survives a power loss. An identical file is left untouched but for its
// mode. Missing parent dirs are made with mode 0700.
func Write(path string, data []byte, mode os.FileMode) error {
	if holds(path, data) {
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

// holds says whether the file at path holds exactly data. It reads the file
// a piece at a time: some files are programs of several MB, and reading one
// whole would put as much on the heap.
func holds(path string, data []byte) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() != int64(len(data)) {
		return false
	}
	buf := make([]byte, 64<<10)
	for off := 0; off < len(data); {
		n, err := io.ReadFull(f, buf[:min(len(buf), len(data)-off)])
		if err != nil || !bytes.Equal(buf[:n], data[off:off+n]) {
			return false
		}
		off += n
	}
	return true
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
