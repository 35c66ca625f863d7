// Package netnstest gives tests throwaway network namespaces, so that
// tests programming the kernel (nftables tables, links, routes) never touch
// the host's own state.
package netnstest

import (
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// New returns a descriptor of a new, empty network namespace, closed when
// the test ends, or skips the test if it cannot make one (not root).
func New(t testing.TB) int {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root, for a network namespace")
	}
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result)
	go func() {
		// The thread moves to the new namespace and is never unlocked:
		// it ends with this goroutine, and no other goroutine runs there.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- result{err: err}
			return
		}
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		ch <- result{fd, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Skipf("no network namespace: %v", r.err)
	}
	if r.fd <= 0 {
		t.Fatalf("bad namespace descriptor %d", r.fd)
	}
	t.Cleanup(func() { unix.Close(r.fd) })
	return r.fd
}

// Run runs f on a thread in the network namespace fd: sockets made in f
// belong to it. The thread is thrown away afterwards.
func Run(fd int, f func() error) error {
	ch := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			ch <- err
			return
		}
		ch <- f()
	}()
	return <-ch
}
