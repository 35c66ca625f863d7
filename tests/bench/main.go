// Command bench prints skiff's start-up time and memory figures: `make bench`.
//
// It starts real servers from the built binary ($SKIFF_BIN) in temp dirs and
// measures what a user waits for: exec to a ready API, and the server's
// resident memory once idle.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/skiff-dev/skiff/tests/cluster"
)

var (
	idle  = flag.Duration("idle", 60*time.Second, "how long the server idles before its memory is read")
	warms = flag.Int("warm", 3, "warm starts to take the median of")
	only  = flag.String("only", "", "run one part only: server, datastore, node, multinode, disposable, ingress or compare")

	ingressProfile = flag.String("ingress-profile", "", "a dir: the ingress part saves the node's CPU profile during its keep-alive case through the ingress, and its heap profile with 1,000 routes, there")
)

func main() {
	flag.Parse()
	for _, part := range []struct {
		name string
		run  func() error
	}{{"server", run}, {"datastore", benchDatastore}, {"node", benchNode}, {"multinode", benchMultinode}, {"disposable", benchDisposable}, {"ingress", benchIngress}, {"compare", benchCompare}} {
		if *only != "" && *only != part.name {
			continue
		}
		if err := part.run(); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
}

func run() error {
	dir, err := os.MkdirTemp("", "skiff-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	s := cluster.New(dir)

	fmt.Printf("machine: %d cores, %s/%s\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)
	cold, warm, rss, pss, cpu, err := startsAndIdle(s)
	if err != nil {
		return err
	}
	fmt.Printf("server start to /readyz, cold (empty data dir): %.2f s\n", cold.Seconds())
	fmt.Printf("server start to /readyz, warm (existing data dir): %.2f s median of %d (goal < 4 s)\n", warm.Seconds(), *warms)
	fmt.Printf("server RSS after %s idle: %d MB (goal < 350 MB); PSS %d MB; CPU %.1f%% of a core while idle\n", *idle, rss, pss, cpu)

	// The same server without the resource metrics API.
	offRSS, offPSS, offCPU, err := idleVariant(filepath.Join(dir, "no-metrics"), "--disable", "metrics-server")
	if err != nil {
		return err
	}
	fmt.Printf("the resource metrics API adds to an idle server: RSS %+d MB, PSS %+d MB, CPU %+.1f%% of a core (without it: %d MB, %.1f%%)\n",
		rss-offRSS, pss-offPSS, cpu-offCPU, offRSS, offCPU)

	// The same server with the Go memory settings that --memory-limit
	// auto picks on a 1 GB board.
	smallRSS, smallPSS, smallCPU, err := idleVariant(filepath.Join(dir, "small"), "--memory-limit", "512Mi")
	if err != nil {
		return err
	}
	fmt.Printf("server idle with a 1 GB board's memory settings (--memory-limit 512Mi, GOGC 50): RSS %d MB (goal < 300 MB), PSS %d MB, CPU %.1f%% of a core\n",
		smallRSS, smallPSS, smallCPU)
	return nil
}

// startsAndIdle starts s on an empty data dir (cold), then -warm times on
// the filled one, and takes the idle figures of the last start: the cold
// time, the median warm time, and RSS, PSS and CPU while idle.
func startsAndIdle(s *cluster.Server) (cold, warm time.Duration, rss, pss int, cpu float64, err error) {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return 0, 0, 0, 0, 0, err
	}
	var times []time.Duration
	for i := 0; i <= *warms; i++ {
		d, p, err := startTimed(s)
		if err != nil {
			return 0, 0, 0, 0, 0, err
		}
		if i == 0 {
			cold = d
		} else {
			times = append(times, d)
		}
		if i < *warms {
			stop(p)
			continue
		}
		rss, pss, cpu, err = idleFigures(p)
		stop(p)
		if err != nil {
			return 0, 0, 0, 0, 0, err
		}
	}
	sort.Slice(times, func(a, b int) bool { return times[a] < times[b] })
	return cold, times[len(times)/2], rss, pss, cpu, nil
}

// idleVariant starts a server of its own in dir with the extra flags and
// returns its idle figures.
func idleVariant(dir string, extra ...string) (rss, pss int, cpu float64, err error) {
	s := cluster.New(dir, extra...)
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return 0, 0, 0, err
	}
	_, p, err := startTimed(s)
	if err != nil {
		return 0, 0, 0, err
	}
	defer stop(p)
	return idleFigures(p)
}

// idleFigures lets the process idle, then returns its RSS and PSS and the
// CPU it used over the idle time (percent of one core).
func idleFigures(p *os.Process) (rss, pss int, cpu float64, err error) {
	before, err := cpuSeconds(p.Pid)
	if err != nil {
		return 0, 0, 0, err
	}
	time.Sleep(*idle) // the figures are after this long idle
	after, err := cpuSeconds(p.Pid)
	if err != nil {
		return 0, 0, 0, err
	}
	if rss, err = rssMB(p.Pid); err != nil {
		return 0, 0, 0, err
	}
	pss, _ = pssMB(p.Pid)
	return rss, pss, 100 * (after - before) / idle.Seconds(), nil
}

// cpuSeconds is the user and system CPU time of a process and its reaped
// children, from /proc/PID/stat (in clock ticks of 1/100 s).
func cpuSeconds(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	var ticks float64
	for _, i := range []int{11, 12} { // utime, stime: fields 14 and 15
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return 0, err
		}
		ticks += v
	}
	return ticks / 100, nil
}

// startTimed starts the server and returns the time from exec to /readyz.
func startTimed(s *cluster.Server) (time.Duration, *os.Process, error) {
	logf, err := os.OpenFile(filepath.Join(s.Dir, "bench.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, nil, err
	}
	defer logf.Close()
	bin := s.Bin
	if bin == "" {
		bin = cluster.Binary()
	}
	cmd := exec.Command(bin, s.Args()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "SKIFF_CONFIG_FILE=")
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	url := fmt.Sprintf("https://127.0.0.1:%d/readyz", s.Port)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start), cmd.Process, nil
			}
		}
		select {
		case err := <-exited:
			return 0, nil, fmt.Errorf("server exited (%v); log in %s", err, logf.Name())
		case <-ctx.Done():
			cmd.Process.Kill()
			return 0, nil, fmt.Errorf("server not ready in 3 minutes")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func stop(p *os.Process) {
	p.Signal(syscall.SIGTERM)
	for i := 0; i < 600; i++ {
		if p.Signal(syscall.Signal(0)) != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.Kill()
}

func rssMB(pid int) (int, error) {
	return statusMB(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
}

// pssMB is the proportional set size: shared pages (the skiff binary's text,
// mapped by the server and its containerd alike) split between the sharers.
func pssMB(pid int) (int, error) {
	return statusMB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
}

func statusMB(path, key string) (int, error) {
	kb, err := statusKB(path, key)
	return kb / 1024, err
}

// statusKB reads the "key: N kB" line of a /proc file.
func statusKB(path, key string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == key {
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("no %s in %s", key, path)
}
