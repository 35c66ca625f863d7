package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteIsAtomicAndPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "f")
	if err := Write(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	info, _ := os.Stat(path)
	entries, _ := os.ReadDir(filepath.Dir(path))
	if string(data) != "two" || info.Mode().Perm() != 0o600 || len(entries) != 1 {
		t.Fatalf("content %q mode %v entries %d", data, info.Mode(), len(entries))
	}
}
