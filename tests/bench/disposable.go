package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// benchDisposable prints the binary sizes of the release (dist/, from `make
// release`) and times the README's throwaway-cluster recipe: exec of `skiff
// server` in an empty temp dir to a pod Ready, and `skiff killall` to a
// clean host.
func benchDisposable() error {
	sizes, _ := filepath.Glob("dist/skiff-linux-*")
	if len(sizes) == 0 {
		fmt.Println("binary sizes: no dist/ (run make release)")
	}
	for _, f := range sizes {
		if info, err := os.Stat(f); err == nil {
			fmt.Printf("binary size %s: %.1f MB\n", filepath.Base(f), float64(info.Size())/1e6)
		}
	}

	dir, err := os.MkdirTemp("", "skiff-bench-disposable-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	c, err := cluster.NewThrowaway(dir)
	if err != nil {
		return err
	}
	defer c.Remove()
	start := time.Now()
	if err := c.StartCI(); err != nil {
		return err
	}
	if err := c.RunPod(); err != nil {
		return err
	}
	fmt.Printf("throwaway cluster, exec to first pod Ready (empty data dir): %.2f s\n", time.Since(start).Seconds())
	start = time.Now()
	if _, err := c.Skiff(time.Minute, "killall", "--data-dir", c.DataDir); err != nil {
		return err
	}
	fmt.Printf("throwaway cluster, skiff killall to a clean host: %.2f s\n", time.Since(start).Seconds())
	if left := cluster.Leftovers(c.Names(), []string{dir}, nil); len(left) > 0 {
		return fmt.Errorf("skiff killall left %v", left)
	}
	return nil
}
