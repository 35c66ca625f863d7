package kubelet

import (
	"os"
	"path/filepath"
	"strings"
)

const cgroupMount = "/sys/fs/cgroup"

// cgroupV2 says whether the host runs the unified hierarchy only.
func cgroupV2() bool {
	_, err := os.Stat(filepath.Join(cgroupMount, "cgroup.controllers"))
	return err == nil
}

// prepareCgroupRoot creates the kubelet's cgroup root, which it expects to
// exist, in every hierarchy: each v1 controller, or the v2 tree with its
// controllers enabled.
func prepareCgroupRoot(root string) error {
	if root == "" || root == "/" {
		return nil
	}
	if cgroupV2() {
		return prepareV2(root)
	}
	entries, err := os.ReadDir(cgroupMount)
	if err != nil {
		return err
	}
	for _, e := range entries {
		hier := filepath.Join(cgroupMount, e.Name())
		if e.Name() == "unified" {
			continue
		}
		if _, err := os.Stat(filepath.Join(hier, "cgroup.procs")); err != nil {
			continue // not a mounted hierarchy (or a link to a combined one)
		}
		dir := filepath.Join(hier, root)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if strings.Contains(e.Name(), "cpuset") {
			// A new v1 cpuset has no CPUs or memory nodes: inherit them.
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if cur, _ := os.ReadFile(filepath.Join(dir, f)); strings.TrimSpace(string(cur)) != "" {
					continue
				}
				parent, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, f), parent, 0o644); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func prepareV2(root string) error {
	controllers, err := os.ReadFile(filepath.Join(cgroupMount, "cgroup.controllers"))
	if err != nil {
		return err
	}
	var enable []string
	for _, c := range strings.Fields(string(controllers)) {
		enable = append(enable, "+"+c)
	}
	// Enable the controllers down the path, then create the root.
	parts := strings.Split(strings.Trim(root, "/"), "/")
	dir := cgroupMount
	for _, p := range parts {
		os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(strings.Join(enable, " ")), 0o644)
		dir = filepath.Join(dir, p)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return nil
}
