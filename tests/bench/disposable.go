package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiff-dev/skiff/tests/cluster"
)

var throwaways = flag.Int("throwaways", 3, "runs of the README's throwaway-cluster recipe per binary")

// benchDisposable prints the binary sizes of the release (dist/, from `make
// release`) and times the README's throwaway-cluster recipe as a CI script
// runs it, with nothing of the tests' harness around it: exec of `skiff
// server --data-dir $(mktemp -d)/data ...` with the test image in its
// air-gap folder, `skiff wait`, `skiff kubectl run` of one pod with
// --image-pull-policy=Never and `skiff kubectl wait` for it to be Ready,
// then `skiff killall --data-dir` to a clean host. It runs the previous
// release ($SKIFF_PREVIOUS_BIN) and this build in turn, then once more each
// with the cold start's timeline.
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

	images, err := os.MkdirTemp("", "skiff-bench-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(images)
	if err := cluster.WriteBusyboxImage(images); err != nil {
		return err
	}
	image := filepath.Join(images, "busybox.tar")

	type build struct{ name, bin string }
	builds := []build{{"this build", cluster.Binary()}}
	if prev := os.Getenv("SKIFF_PREVIOUS_BIN"); prev != "" {
		builds = append([]build{{"previous (" + strings.TrimPrefix(filepath.Base(filepath.Dir(prev)), "skiff-") + ")", prev}}, builds...)
	}
	runs := make([][]recipeTimes, len(builds))
	for range *throwaways {
		for i, b := range builds {
			t, err := runRecipe(b.bin, image, false)
			if err != nil {
				return fmt.Errorf("%s: %w", b.name, err)
			}
			runs[i] = append(runs[i], t)
		}
	}
	fmt.Printf("throwaway cluster, README recipe from outside, median (min-max) of %d runs:\n", *throwaways)
	for i, b := range builds {
		fmt.Printf("  %s: exec to `skiff wait` returned %s, to first pod Ready %s (goal 3 s); skiff killall to a clean host %s (goal 1 s)\n", b.name,
			spread(runs[i], func(t recipeTimes) time.Duration { return t.wait }),
			spread(runs[i], func(t recipeTimes) time.Duration { return t.pod }),
			spread(runs[i], func(t recipeTimes) time.Duration { return t.killall }))
	}

	lines := make([]timeline, len(builds))
	for i, b := range builds {
		t, err := runRecipe(b.bin, image, true)
		if err != nil {
			return fmt.Errorf("%s, timeline: %w", b.name, err)
		}
		lines[i] = t.timeline
	}
	names := make([]string, len(builds))
	for i, b := range builds {
		names[i] = b.name
	}
	printTimeline(names, lines)
	return nil
}

// recipeTimes are one run's figures, from the server's exec.
type recipeTimes struct {
	wait, pod time.Duration // `skiff wait` returned; the pod Ready
	killall   time.Duration // `skiff killall` alone
	timeline  timeline
}

// timeline is when each step of a cold start was seen, from the server's
// exec: by the name of the step.
type timeline map[string]time.Duration

func spread(runs []recipeTimes, f func(recipeTimes) time.Duration) string {
	var d []time.Duration
	for _, r := range runs {
		d = append(d, f(r))
	}
	slices.Sort(d)
	return fmt.Sprintf("%.2f s (%.2f-%.2f)", d[len(d)/2].Seconds(), d[0].Seconds(), d[len(d)-1].Seconds())
}

// runRecipe runs the README's recipe once with bin, the test image in the
// air-gap folder, and checks that killall left a clean host. With timeline,
// the server logs at -v 1 (its components' "component ready" lines) and
// the bench watches the API from the server's own admin kubeconfig, which
// is there from the start; without, nothing but the recipe runs.
func runRecipe(bin, image string, withTimeline bool) (recipeTimes, error) {
	var t recipeTimes
	dir, err := os.MkdirTemp("", "skiff-bench-throwaway-")
	if err != nil {
		return t, err
	}
	defer os.RemoveAll(dir)
	data, kubeconfig, logPath := filepath.Join(dir, "data"), filepath.Join(dir, "kubeconfig"), filepath.Join(dir, "skiff.log")
	if err := copyFile(image, filepath.Join(data, "agent", "images", "busybox.tar")); err != nil {
		return t, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return t, err
	}
	defer logf.Close()
	args := []string{"server", "--data-dir", data, "--https-listen-port", fmt.Sprint(cluster.FreePort()),
		"--cluster-cidr", "10.142.0.0/16", "--service-cidr", "10.143.0.0/16", "--write-kubeconfig", kubeconfig}
	if withTimeline {
		args = append(args, "-v", "1")
	}
	server := exec.Command(bin, args...)
	server.Stdout, server.Stderr = logf, logf
	server.Env = append(os.Environ(), "SKIFF_CONFIG_FILE=")
	server.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	run := func(timeout time.Duration, args ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("skiff %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	exited := make(chan struct{})
	cleanup := func() {
		syscall.Kill(-server.Process.Pid, syscall.SIGKILL)
		<-exited
		run(time.Minute, "killall", "--data-dir", data)
	}
	tail := func() string { return lastLines(logPath, 20) }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var marks *marker
	start := time.Now()
	if err := server.Start(); err != nil {
		return t, err
	}
	go func() { server.Wait(); close(exited) }()
	if withTimeline {
		marks = &marker{start: start, seen: timeline{}}
		go marks.watch(ctx, kubeconfig, filepath.Join(data, "server", "tls", "admin.kubeconfig"))
	}
	kc := []string{"kubectl", "--kubeconfig", kubeconfig}
	if err := run(4*time.Minute, "wait", "--kubeconfig", kubeconfig, "--timeout", "3m"); err != nil {
		cleanup()
		return t, fmt.Errorf("%v\n%s", err, tail())
	}
	t.wait = time.Since(start)
	if err := run(time.Minute, append(kc, "run", "p", "--image", cluster.BusyboxImage, "--restart", "Never",
		"--image-pull-policy", "Never", "--", "sleep", "3600")...); err != nil {
		cleanup()
		return t, fmt.Errorf("%v\n%s", err, tail())
	}
	if err := run(3*time.Minute, append(kc, "wait", "--for", "condition=Ready", "pod/p", "--timeout", "2m")...); err != nil {
		cleanup()
		return t, fmt.Errorf("%v\n%s", err, tail())
	}
	t.pod = time.Since(start)
	if marks != nil {
		cancel()
		marks.mark("skiff wait returned", t.wait)
		marks.mark("first pod Ready (kubectl wait returned)", t.pod)
		t.timeline = marks.result()
		for name, d := range componentsReady(logPath, start) {
			t.timeline[name] = d
		}
	}

	killStart := time.Now()
	if err := run(time.Minute, "killall", "--data-dir", data); err != nil {
		cleanup()
		return t, err
	}
	t.killall = time.Since(killStart)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		cleanup()
		return t, errors.New("skiff killall returned with the server still running")
	}
	if left := cluster.Leftovers(cluster.NamesOf(data), []string{dir}, nil); len(left) > 0 {
		return t, fmt.Errorf("skiff killall left %v", left)
	}
	return t, nil
}

// marker records when the bench first saw each step of a start.
type marker struct {
	start time.Time
	mu    sync.Mutex
	seen  timeline
}

func (m *marker) mark(name string, at time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.seen[name]; !ok {
		m.seen[name] = at
	}
}

func (m *marker) now(name string) { m.mark(name, time.Since(m.start)) }

func (m *marker) result() timeline {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := timeline{}
	for k, v := range m.seen {
		out[k] = v
	}
	return out
}

// watch marks the admin kubeconfig's appearance (the one the user asked
// for), /readyz, and the node, the default ServiceAccount and the pod as
// the API shows them, watching from the server's own admin kubeconfig.
func (m *marker) watch(ctx context.Context, userKubeconfig, adminKubeconfig string) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var cs *kubernetes.Clientset
	ready := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if _, err := os.Stat(userKubeconfig); err == nil {
			m.now("admin kubeconfig written")
		}
		if cs == nil {
			cfg, err := clientcmd.BuildConfigFromFlags("", adminKubeconfig)
			if err != nil {
				continue
			}
			cfg.QPS, cfg.Burst, cfg.Timeout = 500, 1000, time.Second
			if cs, err = kubernetes.NewForConfig(cfg); err != nil {
				cs = nil
				continue
			}
		}
		if !ready {
			body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
			if ready = err == nil && string(body) == "ok"; ready {
				m.now("/readyz passed")
				go m.watchAll(ctx, cs)
			}
		}
	}
}

// watchAll watches Nodes, ServiceAccounts and Pods of default until ctx
// ends.
func (m *marker) watchAll(ctx context.Context, cs *kubernetes.Clientset) {
	follow := func(w func(context.Context, metav1.ListOptions) (watch.Interface, error), seen func(any)) {
		for ctx.Err() == nil {
			wi, err := w(ctx, metav1.ListOptions{})
			if err != nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			for ev := range wi.ResultChan() {
				seen(ev.Object)
			}
			wi.Stop()
		}
	}
	go follow(cs.CoreV1().Nodes().Watch, func(o any) {
		n, ok := o.(*corev1.Node)
		if !ok {
			return
		}
		m.now("node registered")
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				m.now("node Ready")
			}
		}
	})
	go follow(cs.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Watch, func(o any) {
		if sa, ok := o.(*corev1.ServiceAccount); ok && sa.Name == "default" {
			m.now("default ServiceAccount in default")
		}
	})
	follow(cs.CoreV1().Pods(metav1.NamespaceDefault).Watch, func(o any) {
		p, ok := o.(*corev1.Pod)
		if !ok || p.Name != "p" {
			return
		}
		m.now("pod created")
		if p.Spec.NodeName != "" {
			m.now("pod scheduled")
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReadyToStartContainers && c.Status == corev1.ConditionTrue {
				m.now("pod sandbox created")
			}
		}
		for _, c := range p.Status.ContainerStatuses {
			if c.State.Running != nil {
				m.now("container started")
			}
		}
	})
}

var componentReady = regexp.MustCompile(`^I(\d{4} \d\d:\d\d:\d\d\.\d{6}) .*"component ready".* component="([^"]+)"`)

// componentsReady reads the times of the server's "component ready" lines
// (-v 1) from its log.
func componentsReady(logPath string, start time.Time) timeline {
	out := timeline{}
	f, err := os.Open(logPath)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := componentReady.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		at, err := time.ParseInLocation("0102 15:04:05.000000", m[1], time.Local)
		if err != nil {
			continue
		}
		at = at.AddDate(start.Year(), 0, 0)
		name := m[2] + " ready"
		if _, ok := out[name]; !ok {
			out[name] = at.Sub(start)
		}
	}
	return out
}

// printTimeline prints the steps in the order of the last build's run,
// each build's time beside.
func printTimeline(names []string, lines []timeline) {
	last := lines[len(lines)-1]
	steps := map[string]bool{}
	for _, l := range lines {
		for k := range l {
			steps[k] = true
		}
	}
	order := make([]string, 0, len(steps))
	for k := range steps {
		order = append(order, k)
	}
	at := func(l timeline, k string) time.Duration {
		if d, ok := l[k]; ok {
			return d
		}
		return time.Hour // not seen: last
	}
	sort.Slice(order, func(a, b int) bool {
		if at(last, order[a]) != at(last, order[b]) {
			return at(last, order[a]) < at(last, order[b])
		}
		return at(lines[0], order[a]) < at(lines[0], order[b])
	})
	fmt.Printf("throwaway cluster, cold start timeline, seconds from exec (%s):\n", strings.Join(names, " | "))
	for _, k := range order {
		var cols []string
		for _, l := range lines {
			if d, ok := l[k]; ok {
				cols = append(cols, fmt.Sprintf("%6.2f", d.Seconds()))
			} else {
				cols = append(cols, "     -")
			}
		}
		fmt.Printf("  %-45s %s\n", k, strings.Join(cols, " | "))
	}
}

func copyFile(from, to string) error {
	if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
		return err
	}
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func lastLines(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
