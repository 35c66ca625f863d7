package assets

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestInstallWritesOnceAndLeavesHeapAlone(t *testing.T) {
	content := strings.Repeat("x", 3*os.Getpagesize()+17) // the Go heap's: Release must not touch it
	path := filepath.Join(t.TempDir(), "bin", "prog")
	if err := Install(path, content, 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != content {
		t.Fatalf("installed %d bytes (%v), want %d", len(got), err, len(content))
	}
	if strings.Count(content, "x") != len(content) {
		t.Fatal("Release wiped memory of the Go heap")
	}
	info, _ := os.Stat(path)
	if info.Mode().Perm() != 0o755 {
		t.Fatalf("mode %v, want 0755", info.Mode().Perm())
	}
	before := info.ModTime()
	if err := Install(path, content, 0o755); err != nil {
		t.Fatal(err)
	}
	if info, _ := os.Stat(path); !info.ModTime().Equal(before) {
		t.Fatal("an identical file was written again")
	}
}

// A read-only mapping of a file stands for the binary's data: its pages
// leave the process's resident set and still read back the same.
func TestReleaseDropsReadOnlyFilePages(t *testing.T) {
	page := os.Getpagesize()
	want := strings.Repeat("skiff!!!", 4*page/8)
	path := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(path, []byte(want), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, len(want), unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	content := unsafe.String(&m[0], len(m))
	if content != want || resident(t, m) != 4 {
		t.Fatalf("the mapping reads back wrong or is not resident (%d pages)", resident(t, m))
	}
	Release(content)
	if n := resident(t, m); n != 0 {
		t.Fatalf("%d of 4 pages still resident after Release", n)
	}
	if content != want {
		t.Fatal("the released data reads back different")
	}
}

// resident counts the pages of b present in this process.
func resident(t *testing.T, b []byte) int {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	page := uintptr(os.Getpagesize())
	n := 0
	for p := uintptr(unsafe.Pointer(&b[0])); p < uintptr(unsafe.Pointer(&b[0]))+uintptr(len(b)); p += page {
		var e [8]byte
		if _, err := f.ReadAt(e[:], int64(p/page*8)); err != nil {
			t.Fatal(err)
		}
		if binary.LittleEndian.Uint64(e[:])>>63 == 1 {
			n++
		}
	}
	return n
}
