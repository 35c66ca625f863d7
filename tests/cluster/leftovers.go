package cluster

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// PodNetns are the network namespaces (net:[inode]) of the processes in a
// node's cgroup root other than this machine's own: its pods'.
func PodNetns(cgroupRoot string) map[string]bool {
	host, _ := os.Readlink("/proc/self/ns/net")
	out := map[string]bool{}
	for _, pid := range cgroupPids(cgroupRoot) {
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && ns != host {
			out[ns] = true
		}
	}
	return out
}

// Leftovers lists what the node of h left on this machine, as a user would
// look for it: processes whose arguments name one of dirs or its run dir,
// processes in podNetns, mounts under those dirs, the namespaces of podNetns
// still mounted, its cgroup root in any hierarchy, its pod bridge and
// overlay device, and its proxy's nftables table.
func Leftovers(h NodeNames, dirs []string, podNetns map[string]bool) []string {
	dirs = append(dirs, h.RunDir)
	var out []string
	under := func(path string) bool {
		for _, d := range dirs {
			if path == d || strings.HasPrefix(path, d+"/") {
				return true
			}
		}
		return false
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		if p == fmt.Sprintf("/proc/%d", os.Getpid()) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join(p, "cmdline"))
		for _, arg := range strings.Split(string(cmdline), "\x00") {
			if under(arg) {
				out = append(out, fmt.Sprintf("process %s: %s", filepath.Base(p), strings.ReplaceAll(string(cmdline), "\x00", " ")))
				break
			}
		}
		if ns, err := os.Readlink(filepath.Join(p, "ns", "net")); err == nil && podNetns[ns] {
			out = append(out, fmt.Sprintf("process %s in a pod's network namespace %s", filepath.Base(p), ns))
		}
	}
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 5 {
				continue
			}
			if under(fields[4]) {
				out = append(out, "mount "+fields[4])
			}
			if podNetns[fields[3]] {
				out = append(out, fmt.Sprintf("the pod network namespace %s mounted at %s", fields[3], fields[4]))
			}
		}
		f.Close()
	}
	for _, hier := range cgroupHierarchies() {
		if _, err := os.Stat(filepath.Join(hier, h.CgroupRoot)); err == nil {
			out = append(out, "cgroup "+filepath.Join(hier, h.CgroupRoot))
		}
	}
	for _, link := range []string{h.Bridge, h.Overlay} {
		if _, err := net.InterfaceByName(link); err == nil {
			out = append(out, "interface "+link)
		}
	}
	for _, table := range []string{h.Table, h.HostPortTable, h.NetpolTable} {
		if ok, err := TableExists(table); err != nil || ok {
			out = append(out, fmt.Sprintf("nftables table ip %s (%v)", table, err))
		}
	}
	return out
}
