// Package killall stops a node and everything it started, and removes what it
// set up on the host at run time: pods, their mounts, cgroups and network
// namespaces, the pod bridge, the overlay device and the Service proxy's
// nftables table (named after the data dir: see host.For). The data dir
// stays: starting the node again brings it back. `skiff killall` runs it; so
// does skiff-killall.sh, written by the installer.
package killall

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiff-dev/skiff/internal/cni"
	"github.com/skiff-dev/skiff/internal/flannel"
	"github.com/skiff-dev/skiff/internal/host"
	"github.com/skiff-dev/skiff/internal/hostport"
	"github.com/skiff-dev/skiff/internal/kubelet"
	"github.com/skiff-dev/skiff/internal/netpol"
	"github.com/skiff-dev/skiff/internal/proxy"
)

// Node is what belongs to one node on this host.
type Node struct {
	DataDir string
	// The run dir, bridge, overlay device and nftables table: those of the
	// data dir.
	Host host.Host
	// The kubelet's root dir, cgroup root and driver: what the kubelet
	// recorded in the run dir, else the defaults for the data dir.
	kubelet.State
}

// For is the node whose data dir is dataDir (an absolute path).
func For(dataDir string) Node {
	dataDir = filepath.Clean(dataDir)
	n := Node{DataDir: dataDir, Host: host.For(dataDir)}
	if s, ok := kubelet.ReadState(n.Host.RunDir); ok {
		n.State = s
	} else {
		n.State = kubelet.State{RootDir: n.Host.KubeletRoot, CgroupRoot: n.Host.CgroupRoot, CgroupDriver: "cgroupfs"}
	}
	return n
}

// Report says what Run did.
type Report struct {
	Processes, Pods, Mounts int
	// Network names the node's bridge, overlay device and nftables table,
	// all gone now.
	Network string
}

func (r Report) String() string {
	return fmt.Sprintf("stopped %d skiff processes and %d pod processes, unmounted %d mounts; %s are gone", r.Processes, r.Pods, r.Mounts, r.Network)
}

// Run stops the node's processes (skiff, containerd, the shims) and pods,
// then removes its mounts, cgroups, network devices, nftables table and run
// dir. It goes on past errors and returns them together.
func (n Node) Run() (Report, error) {
	var r Report
	var errs []error
	self, err := os.Executable()
	if err != nil {
		return r, err
	}
	// skiff itself and containerd first, politely: the datastore closes
	// cleanly, and nothing restarts what is killed next.
	procs := n.owned(self)
	var main, shims []int
	for _, p := range procs {
		if p.shim() {
			shims = append(shims, p.pid)
		} else {
			main = append(main, p.pid)
		}
	}
	r.Processes = len(procs)
	// skiff and containerd stop while the pods are killed: neither waits
	// for the other. Every wait is on the processes' exits (pidfds), not
	// a look every so often.
	signalAll(main, syscall.SIGTERM)
	mainGone := make(chan struct{})
	go func() {
		defer close(mainGone)
		if !waitGone(main, 15*time.Second) {
			signalAll(main, syscall.SIGKILL)
			waitGone(main, 5*time.Second)
		}
	}()
	// The pods: everything under the shims and in the kubelet's cgroups.
	// Killing a shim first would orphan its containers. Once skiff is gone
	// nothing starts a container again: what a kubelet still stopping
	// restarted meanwhile is killed in the passes after.
	seen := map[int]bool{}
	killPods := func() bool {
		// Zombies are dead already: their shim reaps them.
		pods := slices.DeleteFunc(n.podPids(shims), func(p int) bool { return !running(p) })
		for _, p := range pods {
			seen[p] = true
		}
		signalAll(pods, syscall.SIGKILL)
		waitGone(pods, 5*time.Second)
		return len(pods) > 0
	}
	killPods()
	<-mainGone
	for i := 0; i < 100 && killPods(); i++ {
	}
	r.Pods = len(seen)
	signalAll(shims, syscall.SIGKILL)
	waitGone(shims, 5*time.Second)

	// Mounts: containerd's (rootfs, shm, network namespaces) and the pods'
	// volumes, deepest first.
	dirs := []string{n.Host.RunDir, n.DataDir}
	if n.RootDir != "" && !within(n.RootDir, n.DataDir) {
		dirs = append(dirs, n.RootDir)
	}
	for _, m := range mountsUnder(dirs...) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
			continue
		}
		r.Mounts++
	}
	for _, root := range n.cgroupRoots() {
		for _, hier := range hierarchies() {
			removeTree(filepath.Join(hier, root))
		}
	}
	// The network: named after the data dir, so this node's alone.
	r.Network = fmt.Sprintf("%s, %s and the nftables tables %s, %s and %s", n.Host.Bridge, n.Host.Overlay, n.Host.Table,
		n.Host.HostPortTable, n.Host.NetpolTable)
	if err := proxy.Cleanup(n.Host.Table); err != nil {
		errs = append(errs, fmt.Errorf("deleting the nftables table %s: %w", n.Host.Table, err))
	}
	if err := hostport.Cleanup(n.Host.HostPortTable); err != nil {
		errs = append(errs, fmt.Errorf("deleting the nftables table %s: %w", n.Host.HostPortTable, err))
	}
	if err := netpol.Cleanup(n.Host.NetpolTable); err != nil {
		errs = append(errs, fmt.Errorf("deleting the nftables table %s: %w", n.Host.NetpolTable, err))
	}
	if err := cni.RemoveBridge(n.Host.Bridge); err != nil {
		errs = append(errs, fmt.Errorf("deleting the bridge %s: %w", n.Host.Bridge, err))
	}
	if err := flannel.Cleanup(n.Host.Overlay); err != nil {
		errs = append(errs, fmt.Errorf("deleting the overlay device %s: %w", n.Host.Overlay, err))
	}
	if err := os.RemoveAll(n.Host.RunDir); err != nil {
		errs = append(errs, err)
	}
	return r, errors.Join(errs...)
}

// cgroupRoots are the kubelet's cgroup trees, relative to each hierarchy.
func (n Node) cgroupRoots() []string {
	if n.CgroupDriver == "systemd" {
		return []string{"kubepods.slice"}
	}
	if n.CgroupRoot == "" || n.CgroupRoot == "/" {
		return []string{"kubepods"}
	}
	return []string{n.CgroupRoot}
}

// podPids are the processes below the shims and in the kubelet's cgroups.
func (n Node) podPids(shims []int) []int {
	var pids []int
	for _, root := range n.cgroupRoots() {
		for _, hier := range hierarchies() {
			pids = append(pids, cgroupProcs(filepath.Join(hier, root))...)
		}
	}
	children := map[int][]int{}
	for _, p := range processes() {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	queue := slices.Clone(shims)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			pids = append(pids, c)
			queue = append(queue, c)
		}
	}
	slices.Sort(pids)
	pids = slices.Compact(pids)
	return slices.DeleteFunc(pids, func(p int) bool { return p == os.Getpid() })
}

type process struct {
	pid, ppid int
	exe       string
	args      []string
}

// shim says whether p is a containerd shim: `containerd-shim-runc-v2
// -namespace NS -id ID -address SOCKET` (older releases ran skiff as it).
func (p process) shim() bool {
	return len(p.args) > 1 && (p.args[1] == "-namespace" || strings.HasPrefix(filepath.Base(p.args[0]), "containerd-shim"))
}

// owned returns the processes of this node, never this process or one of its
// ancestors: a skiff binary (see skiffBinary) or a program installed in the
// data dir (the shim) with an argument naming the data dir or run dir:
// `skiff server|agent --data-dir D`, `skiff containerd --config D/...`, the
// shims' `-address R/...`. With the default data dir, a `skiff server|agent`
// without --data-dir is the node too.
func (n Node) owned(self string) []process {
	selfInfo, _ := os.Stat(self)
	ancestors := map[int]bool{}
	all := processes()
	byPid := map[int]process{}
	for _, p := range all {
		byPid[p.pid] = p
	}
	for pid := os.Getpid(); pid > 1 && !ancestors[pid]; pid = byPid[pid].ppid {
		ancestors[pid] = true
	}
	var mine []process
	for _, p := range all {
		if ancestors[p.pid] || len(p.args) < 2 || p.args[1] == "killall" {
			continue
		}
		installed := within(strings.TrimSuffix(p.exe, " (deleted)"), n.DataDir)
		if (installed || skiffBinary(p.exe, self, selfInfo)) && n.names(p.args[1:]) {
			mine = append(mine, p)
		}
	}
	return mine
}

// skiffBinary says whether exe is a skiff binary: this one (the same file,
// or its path if an upgrade replaced it), or another copy named skiff (the
// node started from ./skiff, killall run from the one on PATH).
func skiffBinary(exe, self string, selfInfo os.FileInfo) bool {
	exe = strings.TrimSuffix(exe, " (deleted)")
	if exe == "" {
		return false
	}
	if exe == self || strings.HasPrefix(filepath.Base(exe), "skiff") || filepath.Base(exe) == filepath.Base(self) {
		return true
	}
	info, err := os.Stat(exe)
	return err == nil && selfInfo != nil && os.SameFile(info, selfInfo)
}

// names says whether args name this node's data dir or run dir.
func (n Node) names(args []string) bool {
	flagged := false
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--data-dir="); ok {
			flagged, a = true, v
		}
		if a == "--data-dir" || a == "-d" {
			flagged = true
		}
		if within(a, n.DataDir) || within(a, n.Host.RunDir) {
			return true
		}
	}
	return !flagged && n.DataDir == host.DefaultDataDir && (args[0] == "server" || args[0] == "agent")
}

// within says whether path is dir or below it.
func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

func processes() []process {
	var out []process
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fields := stat(pid)
		if len(fields) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		p := process{pid: pid, ppid: ppid}
		p.exe, _ = os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && len(cmdline) > 0 {
			p.args = strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
		}
		out = append(out, p)
	}
	return out
}

func signalAll(pids []int, sig syscall.Signal) {
	for _, p := range pids {
		syscall.Kill(p, sig)
	}
}

// waitGone waits until none of pids runs (zombies count as gone), on
// their pidfds; where the kernel has none (before Linux 5.3), by looking
// every 50 ms.
func waitGone(pids []int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	var fds []unix.PollFd
	defer func() {
		for _, f := range fds {
			unix.Close(int(f.Fd))
		}
	}()
	for _, p := range pids {
		fd, err := unix.PidfdOpen(p, 0)
		if errors.Is(err, unix.ESRCH) {
			continue // gone already
		}
		if err != nil {
			return pollGone(pids, deadline)
		}
		fds = append(fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
	}
	for waiting := fds; len(waiting) > 0; {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		_, err := unix.Poll(waiting, int(left/time.Millisecond)+1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return pollGone(pids, deadline)
		}
		// A pidfd is readable once its process has exited.
		var still []unix.PollFd
		for _, f := range waiting {
			if f.Revents == 0 {
				still = append(still, f)
			}
		}
		waiting = still
	}
	return true
}

// pollGone waits until none of pids runs by looking every 50 ms.
func pollGone(pids []int, deadline time.Time) bool {
	for {
		alive := false
		for _, p := range pids {
			if running(p) {
				alive = true
				break
			}
		}
		if !alive {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func running(pid int) bool {
	fields := stat(pid)
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}

// stat is /proc/<pid>/stat after the command name (which may hold spaces):
// the state, the parent, ...; nil when the process is gone.
func stat(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	return strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
}

// hierarchies are the mounted cgroup hierarchies: every v1 controller and
// the unified tree.
func hierarchies() []string {
	var out []string
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 2 && (fields[2] == "cgroup" || fields[2] == "cgroup2") {
			out = append(out, fields[1])
		}
	}
	return out
}

func cgroupProcs(dir string) []int {
	var pids []int
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "cgroup.procs" {
			data, _ := os.ReadFile(path)
			for _, f := range strings.Fields(string(data)) {
				if p, err := strconv.Atoi(f); err == nil {
					pids = append(pids, p)
				}
			}
		}
		return nil
	})
	return pids
}

// removeTree removes a cgroup and its children, deepest first (rmdir is how
// cgroups go; their files cannot be removed).
func removeTree(dir string) {
	var dirs []string
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	slices.SortFunc(dirs, func(a, b string) int { return len(b) - len(a) })
	for _, d := range dirs {
		syscall.Rmdir(d)
	}
}

// mountsUnder lists the mount points at or below dirs, deepest first.
func mountsUnder(dirs ...string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescape(fields[4])
		for _, d := range dirs {
			if within(mp, d) {
				out = append(out, mp)
				break
			}
		}
	}
	slices.SortFunc(out, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	return slices.Compact(out)
}

// unescape undoes mountinfo's octal escapes of blanks and backslashes.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
