// Package assets installs the programs built into skiff (the CNI plugins,
// containerd's runc shim) and then lets go of the pages that hold them in
// this process.
//
// The programs are part of skiff's read-only data: a process that reads them
// (to write them out, or to compare them with what is installed) maps every
// page of them, about 20 MB, and those pages would count towards its
// resident memory for as long as it runs, although it never reads them
// again. Release gives them back to the kernel once they are used.
package assets

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/skiff-dev/skiff/internal/atomicfile"
)

// Install writes content into path with mode, leaving an identical file
// untouched (a running program keeps the file it started from: a new one
// replaces it by a rename), then releases content's pages.
func Install(path, content string, mode os.FileMode) error {
	defer Release(content)
	return atomicfile.Write(path, bytesOf(content), mode)
}

// Release tells the kernel that this process no longer needs the pages that
// hold content, data built into the binary. Only whole pages inside content
// are released, so nothing else shares them, and only where they lie in a
// read-only mapping of a file: the data stays valid, as the kernel reads the
// pages in again from the binary if they are ever touched. Anything else
// (memory of the Go heap, say, which the advice would wipe) is left alone,
// as are errors: the pages then merely stay resident.
func Release(content string) {
	if len(content) == 0 {
		return
	}
	page := uintptr(os.Getpagesize())
	data := unsafe.StringData(content)
	start := uintptr(unsafe.Pointer(data))
	first, last := (start+page-1)&^(page-1), (start+uintptr(len(content)))&^(page-1)
	if last <= first || !readOnlyFile(first, last) {
		return
	}
	_ = unix.Madvise(unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(data), first-start)), last-first), unix.MADV_DONTNEED)
}

// readOnlyFile says whether [first, last) lies in one mapping of this
// process that maps a file and cannot be written.
func readOnlyFile(first, last uintptr) bool {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// address perms offset dev inode path
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 {
			continue
		}
		from, to, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		lo, err1 := strconv.ParseUint(from, 16, 64)
		hi, err2 := strconv.ParseUint(to, 16, 64)
		if err1 != nil || err2 != nil || uintptr(lo) > first || last > uintptr(hi) {
			continue
		}
		perms := fields[1]
		return perms[1] == '-' && fields[4] != "0" && strings.HasPrefix(fields[5], "/")
	}
	return false
}

// bytesOf is content as a byte slice without a copy (the programs are
// megabytes); atomicfile.Write only reads it.
func bytesOf(content string) []byte {
	return unsafe.Slice(unsafe.StringData(content), len(content))
}
