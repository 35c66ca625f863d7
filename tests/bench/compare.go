package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// footprint is what a small board pays for a release: start-up and memory.
type footprint struct {
	warm           time.Duration // control plane only, exec to /readyz, median
	cpRSS, cpPSS   int           // control plane only, idle, MB
	ready, pod     time.Duration // server and node, warm: exec to node Ready, to a first pod Running
	idlePSS        int           // skiff + containerd + shims, no workload, MB
	podsPSS        int           // the same with 30 pods running
	shimOwn, shimP float64       // each pod's shim: own (anonymous) memory and PSS, MB
	sandboxP       float64       // each pod's sandbox (pause) process: PSS, MB
}

// benchCompare measures the previous release ($SKIFF_PREVIOUS_BIN, which
// make bench builds) and this build one after the other in this run, and
// prints their footprints side by side.
func benchCompare() error {
	prev := os.Getenv("SKIFF_PREVIOUS_BIN")
	if prev == "" {
		fmt.Println("compare: no previous release to compare with (SKIFF_PREVIOUS_BIN; make bench builds one)")
		return nil
	}
	var figures [2]footprint
	for i, bin := range []string{prev, cluster.Binary()} {
		f, err := measureFootprint(bin)
		if err != nil {
			return fmt.Errorf("%s: %w", bin, err)
		}
		figures[i] = f
	}
	p, c := figures[0], figures[1]
	fmt.Printf("footprint, the previous release (%s) | this build:\n", filepath.Base(filepath.Dir(prev)))
	fmt.Printf("  control plane only, warm start to /readyz: %.2f s | %.2f s (goal 1.2 s)\n", p.warm.Seconds(), c.warm.Seconds())
	fmt.Printf("  control plane only, idle: RSS %d | %d MB (goal 300 MB), PSS %d | %d MB\n", p.cpRSS, c.cpRSS, p.cpPSS, c.cpPSS)
	fmt.Printf("  server and node, warm start to node Ready: %.2f s | %.2f s; to a first pod Running: %.2f s | %.2f s (goal 4 s)\n",
		p.ready.Seconds(), c.ready.Seconds(), p.pod.Seconds(), c.pod.Seconds())
	fmt.Printf("  server and node, idle, no workload: PSS %d | %d MB (goal 400 MB, skiff + containerd + shims)\n", p.idlePSS, c.idlePSS)
	fmt.Printf("  server and node, 30 pods running: PSS %d | %d MB (goal 550 MB)\n", p.podsPSS, c.podsPSS)
	fmt.Printf("  each pod's shim: own memory %.1f | %.1f MB (goal 5 MB), PSS %.1f | %.1f MB\n", p.shimOwn, c.shimOwn, p.shimP, c.shimP)
	fmt.Printf("  each pod's sandbox (pause) process, not in the figures above: PSS %.2f | %.2f MB\n", p.sandboxP, c.sandboxP)

	// What a board of 1 or 2 GB runs with: --memory-limit auto picks a
	// limit of 1 GiB or less there, and GOGC 50 with it.
	board, err := boardIdlePSS(cluster.Binary())
	if err != nil {
		return err
	}
	fmt.Printf("  this build's server and node, idle, no workload, with a 1 GB board's memory settings (--memory-limit 512Mi, GOGC 50): PSS %d MB\n", board)
	return nil
}

// boardIdlePSS starts bin as a server and node with a 1 GB board's memory
// settings and returns its idle PSS (skiff, containerd), in MB.
func boardIdlePSS(bin string) (int, error) {
	dir, err := os.MkdirTemp("", "skiff-bench-board-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	s, err := cluster.NewNode(filepath.Join(dir, "node"), "--memory-limit", "512Mi")
	if err != nil {
		return 0, err
	}
	s.Bin = bin
	defer s.Teardown()
	defer s.Stop()
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		return 0, err
	}
	if err := s.WaitNodesReady(ctx); err != nil {
		return 0, err
	}
	time.Sleep(*idle) // the figure is memory after this long idle
	return nodePSS(s)
}

func measureFootprint(bin string) (f footprint, err error) {
	dir, err := os.MkdirTemp("", "skiff-bench-compare-")
	if err != nil {
		return f, err
	}
	defer os.RemoveAll(dir)

	// The control plane alone: a first start fills the data dir.
	cp := cluster.New(filepath.Join(dir, "cp"), "--disable-agent")
	cp.Bin = bin
	if _, f.warm, f.cpRSS, f.cpPSS, _, err = startsAndIdle(cp); err != nil {
		return f, err
	}

	// A server that is also a node, warm.
	s, err := cluster.NewNode(filepath.Join(dir, "node"))
	if err != nil {
		return f, err
	}
	s.Bin = bin
	defer s.Teardown()
	defer s.Stop()
	ctx := context.Background()
	cs, ready, pod, err := warmNode(ctx, s)
	if err != nil {
		return f, err
	}
	f.ready, f.pod = ready, pod
	if err := cs.AppsV1().Deployments("default").Delete(ctx, "first", metav1.DeleteOptions{}); err != nil {
		return f, err
	}
	if err := noPods(ctx, s); err != nil {
		return f, err
	}
	time.Sleep(*idle) // the figure is memory after this long idle
	if f.idlePSS, err = nodePSS(s); err != nil {
		return f, err
	}

	if err := runPods(ctx, cs, "thirty", 30); err != nil {
		return f, err
	}
	time.Sleep(*idle / 2)
	if f.podsPSS, err = nodePSS(s); err != nil {
		return f, err
	}
	if f.shimOwn, f.shimP, err = shimMemory(s); err != nil {
		return f, err
	}
	f.sandboxP, err = sandboxMemory(s)
	return f, err
}

// sandboxMemory is the mean PSS of the node's pod sandbox processes, in MB.
func sandboxMemory(s *cluster.Server) (float64, error) {
	_, pss, err := meanMemory(s.SandboxPids(), "pod sandbox process", s)
	return pss, err
}

// noPods waits until the default namespace has no pods and the node no
// shim beyond one for each pod left (none, unless a user adds some).
func noPods(ctx context.Context, s *cluster.Server) error {
	cs, err := s.Client()
	if err != nil {
		return err
	}
	return poll(ctx, func(ctx context.Context) bool {
		all, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		for _, p := range all.Items {
			if p.Namespace == "default" {
				return false
			}
		}
		return len(s.ShimPids()) <= len(all.Items)
	})
}

// nodePSS is the PSS of the node's processes, skiff, its containerd and the
// pods' shims, in MB.
func nodePSS(s *cluster.Server) (int, error) {
	pids, err := nodePids(s)
	if err != nil {
		return 0, err
	}
	kb := 0
	for _, pid := range append(pids[:], s.ShimPids()...) {
		v, err := statusKB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
		if err != nil {
			return 0, err
		}
		kb += v
	}
	return kb / 1024, nil
}
