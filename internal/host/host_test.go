package host

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestFor(t *testing.T) {
	def := For(DefaultDataDir)
	want := Host{RunDir: "/run/skiff", KubeletRoot: "/var/lib/kubelet", CgroupRoot: "/skiff",
		Bridge: "cni0", Overlay: "flannel.1", Table: "skiff", HostPortTable: "skiff-hostports", NetpolTable: "skiff-netpol", WellKnownPorts: true}
	if def != want {
		t.Errorf("For(%s) = %+v, want %+v", DefaultDataDir, def, want)
	}
	a, b := For("/tmp/ci-1/data"), For("/tmp/ci-2/data")
	if a.WellKnownPorts || a.KubeletRoot != "/tmp/ci-1/data/kubelet" {
		t.Errorf("For(/tmp/ci-1/data) = %+v: want its own kubelet root and free ports", a)
	}
	hash := strings.TrimPrefix(a.RunDir, "/run/skiff-")
	if len(hash) != 8 || a.CgroupRoot != "/skiff-"+hash || a.Bridge != "cni-"+hash || a.Overlay != "vxlan-"+hash || a.Table != "skiff-"+hash || a.HostPortTable != "skiff-"+hash+"-hostports" ||
		a.NetpolTable != "skiff-"+hash+"-netpol" {
		t.Errorf("For(/tmp/ci-1/data) = %+v: want every name after one 8-digit hash", a)
	}
	for _, dev := range []string{a.Bridge, a.Overlay} {
		if len(dev) > 15 {
			t.Errorf("interface name %q is longer than the kernel's 15 bytes", dev)
		}
	}
	if a.RunDir == b.RunDir || a.Bridge == b.Bridge || a.Overlay == b.Overlay || a.Table == b.Table {
		t.Errorf("two data dirs share names: %+v and %+v", a, b)
	}
	if For("/tmp/ci-1/data") != a {
		t.Error("For is not stable")
	}
}

func TestLock(t *testing.T) {
	dir := t.TempDir()
	release, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	// flock(2) locks an open file, so a second open in this process stands
	// for a second process.
	_, err = Lock(dir)
	if want := fmt.Sprintf("is in use by skiff (pid %d): stop it first", os.Getpid()); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("second Lock: %v, want an error containing %q", err, want)
	}
	release()
	release, err = Lock(dir)
	if err != nil {
		t.Fatalf("Lock after release: %v", err)
	}
	release()
}

func TestPreferPorts(t *testing.T) {
	free, err := FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := PreferPorts(free, 2); err != nil || !slices.Equal(got, free) {
		t.Errorf("PreferPorts(%v, 2) = %v, %v; want the same free ports", free, got, err)
	}
	busy, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	taken := busy.Addr().(*net.TCPAddr).Port
	for _, prefer := range [][]int{nil, {0, 0}, {free[0], taken}, {free[0], free[0]}, {free[0]}} {
		got, err := PreferPorts(prefer, 2)
		if err != nil || len(got) != 2 || got[0] == got[1] || slices.Contains(got, taken) || slices.Contains(got, 0) {
			t.Errorf("PreferPorts(%v, 2) = %v, %v; want two other distinct free ports", prefer, got, err)
		}
	}
}
