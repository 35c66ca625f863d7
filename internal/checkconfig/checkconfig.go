// Package checkconfig checks that a host can run a skiff node and says how to
// fix what is missing.
package checkconfig

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/google/nftables"

	"github.com/skiff-dev/skiff/internal/host"
	"github.com/skiff-dev/skiff/internal/netpol"
)

// Check is one requirement.
type Check struct {
	Name     string
	Required bool
	// Run returns "" when the host meets the requirement, else what to do.
	Run func() string
}

// Host is the list of checks for a node on this host.
func Host(ports []int) []Check {
	var checks []Check
	// The host's programs a node runs, each named, so that a missing one
	// is found here rather than by a pod that never starts.
	for _, p := range host.Programs {
		checks = append(checks, Check{"program " + p.Name, true, func() string {
			if _, err := exec.LookPath(p.Name); err != nil {
				return fmt.Sprintf("%s is not in PATH (%s): install it: %s", p.Name, p.Why, p.Install)
			}
			return ""
		}})
	}
	checks = append(checks, []Check{
		{"memory cgroup", true, memoryCgroup},
		{"overlay filesystem", false, func() string {
			if !hasLine("/proc/filesystems", "overlay") && !moduleAvailable("overlay") {
				return "load it: modprobe overlay (containerd falls back to the slower native snapshotter)"
			}
			return ""
		}},
		{"bridge netfilter", false, func() string {
			if _, err := os.Stat("/proc/sys/net/bridge"); err != nil && !moduleAvailable("br_netfilter") {
				return "load it: modprobe br_netfilter"
			}
			return ""
		}},
		{"nftables", true, func() string {
			// Asking the kernel for its tables loads nf_tables on demand.
			conn, err := nftables.New()
			if err == nil {
				_, err = conn.ListTables()
			}
			if err != nil {
				return fmt.Sprintf("the kernel's nf_tables does not answer (%v): it needs CONFIG_NF_TABLES, or modprobe nf_tables", err)
			}
			return ""
		}},
		{"nftables for network policies", true, func() string {
			// The node's own probe: a scratch table with every kind of
			// chain, set and expression the policies' table uses,
			// created and deleted in one transaction.
			table := host.For(host.DefaultDataDir).NetpolTable
			if err := netpol.NewSyncer(netpol.Config{Table: table}, 0).Probe(); err != nil {
				return strings.TrimPrefix(err.Error(), "network policy: ")
			}
			return ""
		}},
		{"vxlan", false, func() string {
			if !moduleLoaded("vxlan") && !moduleAvailable("vxlan") {
				return "multi-node networking needs the vxlan module: modprobe vxlan"
			}
			return ""
		}},
		{"IP forwarding", false, func() string {
			data, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
			if strings.TrimSpace(string(data)) != "1" {
				return "enable it: sysctl -w net.ipv4.ip_forward=1 (the node enables it at start)"
			}
			return ""
		}},
	}...)
	for _, p := range ports {
		checks = append(checks, Check{fmt.Sprintf("port %d free", p), false, func() string {
			ln, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
			if err != nil {
				return "something listens there already: stop it, or if it is a running skiff, ignore this"
			}
			ln.Close()
			return ""
		}})
	}
	return checks
}

// Run prints every check to w and reports whether the required ones pass.
func Run(w io.Writer, checks []Check) bool {
	ok := true
	for _, c := range checks {
		fix := c.Run()
		switch {
		case fix == "":
			fmt.Fprintf(w, "ok       %s\n", c.Name)
		case c.Required:
			ok = false
			fmt.Fprintf(w, "MISSING  %s: %s\n", c.Name, fix)
		default:
			fmt.Fprintf(w, "warning  %s: %s\n", c.Name, fix)
		}
	}
	return ok
}

// memoryCgroup checks that the memory controller is enabled; on a Raspberry
// Pi it is off unless the kernel command line turns it on.
func memoryCgroup() string {
	f, err := os.Open("/proc/cgroups")
	if err != nil {
		return "no /proc/cgroups: the kernel needs cgroup support"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 4 && fields[0] == "memory" {
			if enabled, _ := strconv.Atoi(fields[3]); enabled == 1 {
				return ""
			}
		}
	}
	if _, err := os.Stat("/boot/firmware/cmdline.txt"); err == nil {
		return "add 'cgroup_memory=1 cgroup_enable=memory' to /boot/firmware/cmdline.txt and reboot"
	}
	if _, err := os.Stat("/boot/cmdline.txt"); err == nil {
		return "add 'cgroup_memory=1 cgroup_enable=memory' to /boot/cmdline.txt and reboot"
	}
	return "enable the memory cgroup: add 'cgroup_enable=memory' to the kernel command line and reboot"
}

func hasLine(path, word string) bool {
	data, err := os.ReadFile(path)
	return err == nil && strings.Contains(string(data), word)
}

func moduleLoaded(name string) bool {
	_, err := os.Stat("/sys/module/" + name)
	return err == nil
}

// moduleAvailable says whether modprobe could load the module.
func moduleAvailable(name string) bool {
	release, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return false
	}
	for _, f := range []string{"modules.dep", "modules.builtin"} {
		if hasLine("/lib/modules/"+strings.TrimSpace(string(release))+"/"+f, "/"+name+".ko") {
			return true
		}
	}
	return false
}
