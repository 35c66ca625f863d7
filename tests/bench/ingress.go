package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// The load of the data path figures: a fixed number of workers, each
// sending one request after the other for loadTime, after a warm-up
// whose requests are not counted.
const (
	keepAliveWorkers = 32
	newConnWorkers   = 8
	loadTime         = 10 * time.Second
	warmUp           = time.Second
	benchHost        = "bench.test"
	manyRoutes       = 1000
)

// benchIngress measures the node's Ingress and Gateway API proxy: requests
// per second and p50/p99 latency of the same GET to one echo pod, straight
// to the pod, through the node's ingress and through Debian's nginx as a
// reverse proxy (the anchor), each with kept-alive connections and with a
// new connection per request; then the time from creating an HTTPRoute to
// its first answer, and the memory 1,000 HTTPRoutes add to the node.
func benchIngress() error {
	dir, err := os.MkdirTemp("", "skiff-bench-ingress-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	httpPort, httpsPort, gwPort := cluster.FreePort(), cluster.FreePort(), cluster.FreePort()
	args := []string{"--ingress-http-port", strconv.Itoa(httpPort), "--ingress-https-port", strconv.Itoa(httpsPort)}
	if *ingressProfile != "" {
		// The API server serves the process's Go profiles.
		args = append(args, "--kube-apiserver-arg", "profiling=true")
	}
	s, err := cluster.NewNode(filepath.Join(dir, "node"), args...)
	if err != nil {
		return err
	}
	defer s.Teardown()
	defer s.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		return err
	}
	if err := s.WaitNodesReady(ctx); err != nil {
		return fmt.Errorf("node not ready: %w", err)
	}
	cfg, err := s.Config()
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 500, 1000 // the 1,000 routes are created 10 at a time
	gw, err := gatewayclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if _, err := s.Kubectl(ctx, fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 1
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: echo
        image: %s
        command: [tool, serve, -port, "8080"]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: echo}
spec:
  rules:
  - host: %s
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: echo, port: {number: 80}}}}]
`, cluster.BusyboxImage, benchHost), "apply", "-f", "-"); err != nil {
		return err
	}
	podIP, err := readyEndpoint(ctx, s)
	if err != nil {
		return err
	}
	pod := "http://" + net.JoinHostPort(podIP, "8080") + "/"
	ingress := fmt.Sprintf("http://127.0.0.1:%d/", httpPort)
	// The node runs in this machine's network namespace: its pods'
	// addresses are reached over its bridge.
	for what, url := range map[string]string{"the pod at " + pod: pod, "the ingress at " + ingress: ingress} {
		if err := poll(ctx, func(ctx context.Context) bool { return answers(url, benchHost) }); err != nil {
			return fmt.Errorf("%s never answered: %w", what, err)
		}
	}

	targets := []struct{ name, url string }{{"pod directly", pod}, {"skiff ingress", ingress}}
	nginxURL, nginxVersion, stopNginx, err := startNginx(filepath.Join(dir, "nginx"), podIP)
	if err != nil {
		return err
	}
	if stopNginx != nil {
		defer stopNginx()
		if err := poll(ctx, func(ctx context.Context) bool { return answers(nginxURL, benchHost) }); err != nil {
			return fmt.Errorf("nginx never answered: %w", err)
		}
		targets = append(targets, struct{ name, url string }{nginxVersion + " proxy", nginxURL})
	} else {
		fmt.Println("ingress: no nginx on this machine, so no anchor: `apt-get install nginx-light` enables it")
	}

	fmt.Printf("ingress data path: GET of a %d-byte answer from one echo pod; %d cores shared by this client, the proxy and the pod; %s per case after %s of warm-up\n",
		answerSize(pod), nproc(), loadTime, warmUp)
	fmt.Printf("  %-22s %28s   %28s\n", "", fmt.Sprintf("keep-alive, %d connections", keepAliveWorkers), fmt.Sprintf("new connection, %d workers", newConnWorkers))
	fmt.Printf("  %-22s %9s %9s %9s   %9s %9s %9s\n", "target", "req/s", "p50", "p99", "req/s", "p50", "p99")
	results := map[string][2]loadResult{}
	for _, t := range targets {
		var r [2]loadResult
		for i, keepAlive := range []bool{true, false} {
			workers := keepAliveWorkers
			if !keepAlive {
				workers = newConnWorkers
			}
			var profile func() error
			if *ingressProfile != "" && t.url == ingress && keepAlive {
				profile = func() error { return saveProfile(ctx, s, "profile", "ingress-keepalive-cpu.pprof") }
			}
			if r[i], err = load(t.url, benchHost, workers, keepAlive, profile); err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
		}
		results[t.name] = r
		fmt.Printf("  %-22s %9.0f %9s %9s   %9.0f %9s %9s%s\n", t.name,
			r[0].rps, ms(r[0].p50), ms(r[0].p99), r[1].rps, ms(r[1].p50), ms(r[1].p99), r[0].failures(r[1]))
	}
	if n, ok := results[nginxVersion+" proxy"]; ok {
		sk := results["skiff ingress"]
		for i, what := range []string{"keep-alive", "new connection"} {
			fmt.Printf("  skiff ingress / nginx, %s: throughput %.2f (goal >= 0.67), p99 %.2f (goal < 2)\n",
				what, sk[i].rps/n[i].rps, float64(sk[i].p99)/float64(n[i].p99))
		}
	}

	return benchRoutes(ctx, s, gw, gwPort)
}

// benchRoutes times HTTPRoutes from their creation to a first answer on a
// Gateway's listener, then creates 1,000 more and reads the node's memory
// before and after.
func benchRoutes(ctx context.Context, s *cluster.Server, gw *gatewayclient.Clientset, port int) error {
	gwURL := fmt.Sprintf("http://127.0.0.1:%d/", port)
	start := time.Now()
	if _, err := gw.GatewayV1().Gateways("default").Create(ctx, &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "bench"},
		Spec: gatewayv1.GatewaySpec{
			GatewayClassName: "skiff",
			Listeners:        []gatewayv1.Listener{{Name: "http", Port: gatewayv1.PortNumber(port), Protocol: gatewayv1.HTTPProtocolType}},
		},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	first, err := routeToAnswer(ctx, gw, "route-first", gwURL, start)
	if err != nil {
		return err
	}
	fmt.Printf("a Gateway (new port) and an HTTPRoute, from their creation to the first answer: %s\n", ms(first))
	route := func(n int, name string) (time.Duration, error) {
		var times []time.Duration
		for i := range n {
			// As a user finds the node: idle, its last sync (the status
			// of the route before) long done; one created within 100 ms
			// of a sync waits for the next (component.MinSyncInterval).
			time.Sleep(time.Second)
			d, err := routeToAnswer(ctx, gw, fmt.Sprintf("%s-%d", name, i), gwURL, time.Time{})
			if err != nil {
				return 0, err
			}
			times = append(times, d)
		}
		sort.Slice(times, func(a, b int) bool { return times[a] < times[b] })
		return times[len(times)/2], nil
	}
	median, err := route(5, "route")
	if err != nil {
		return err
	}
	fmt.Printf("an HTTPRoute on that Gateway, from its creation to the first answer: %s (median of 5, each on an idle node, polled every 5 ms)\n", ms(median))

	// Memory: the skiff process (API server, datastore and the ingress
	// alike) idle before and after 1,000 HTTPRoutes, each with a hostname
	// of its own, to the echo Service.
	time.Sleep(10 * time.Second)
	rss0, pss0, err := memory(s.Pid())
	if err != nil {
		return err
	}
	kaBefore, err := loadFor(gwURL, "route-first.bench", keepAliveWorkers, true, 3*time.Second)
	if err != nil {
		return err
	}
	start = time.Now()
	names := make(chan int)
	errs := make(chan error, 10)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for i := range names {
				if _, err := gw.GatewayV1().HTTPRoutes("default").Create(ctx, httpRoute(fmt.Sprintf("many-%d", i)), metav1.CreateOptions{}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	go func() {
		defer close(names)
		for i := range manyRoutes {
			select {
			case names <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	wg.Wait()
	select {
	case err := <-errs:
		return fmt.Errorf("creating %d HTTPRoutes: %w", manyRoutes, err)
	default:
	}
	created := time.Since(start)
	last := fmt.Sprintf("many-%d.bench", manyRoutes-1)
	if err := poll(ctx, func(ctx context.Context) bool { return answers(gwURL, last) && answers(gwURL, "many-0.bench") }); err != nil {
		return fmt.Errorf("the last of %d HTTPRoutes never answered: %w", manyRoutes, err)
	}
	fmt.Printf("%d HTTPRoutes created (10 clients, %.1f s), to the first and last answering: %.1f s\n", manyRoutes, created.Seconds(), time.Since(start).Seconds())
	one, err := route(3, "one-more")
	if err != nil {
		return err
	}
	fmt.Printf("one more HTTPRoute with %d in place, from its creation to the first answer: %s (median of 3)\n", manyRoutes, ms(one))
	time.Sleep(10 * time.Second)
	rss1, pss1, err := memory(s.Pid())
	if err != nil {
		return err
	}
	if *ingressProfile != "" {
		if err := saveProfile(ctx, s, "heap", "heap-1000-routes.pprof"); err != nil {
			fmt.Println("  (no profile:", err, ")")
		}
	}
	fmt.Printf("skiff process with %d HTTPRoutes, 10 s after the last answered: RSS %d -> %d MB (%+d), PSS %d -> %d MB (%+d); the API server's and datastore's copies of the objects included\n",
		manyRoutes, rss0/1024, rss1/1024, (rss1-rss0)/1024, pss0/1024, pss1/1024, (pss1-pss0)/1024)
	kaAfter, err := loadFor(gwURL, last, keepAliveWorkers, true, 3*time.Second)
	if err != nil {
		return err
	}
	fmt.Printf("keep-alive through the Gateway, %d connections, 3 s: %.0f req/s, p50 %s, p99 %s with 6 routes; %.0f req/s, p50 %s, p99 %s to the last of %d routes\n",
		keepAliveWorkers, kaBefore.rps, ms(kaBefore.p50), ms(kaBefore.p99), kaAfter.rps, ms(kaAfter.p50), ms(kaAfter.p99), manyRoutes+9)
	return nil
}

// httpRoute is a route of the Gateway "bench" for host NAME.bench to the
// echo Service.
func httpRoute(name string) *gatewayv1.HTTPRoute {
	return &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "bench"}}},
			Hostnames:       []gatewayv1.Hostname{gatewayv1.Hostname(name + ".bench")},
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
				BackendObjectReference: gatewayv1.BackendObjectReference{Name: "echo", Port: ptr.To(gatewayv1.PortNumber(80))},
			}}}}},
		},
	}
}

// routeToAnswer creates the route name and returns the time from start
// (zero: the route's creation) to its first 200 on url.
func routeToAnswer(ctx context.Context, gw *gatewayclient.Clientset, name, url string, start time.Time) (time.Duration, error) {
	if start.IsZero() {
		start = time.Now()
	}
	if _, err := gw.GatewayV1().HTTPRoutes("default").Create(ctx, httpRoute(name), metav1.CreateOptions{}); err != nil {
		return 0, err
	}
	c := &http.Client{Timeout: time.Second}
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.Host = name + ".bench"
		if resp, err := c.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start), nil
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0, fmt.Errorf("HTTPRoute %s: no answer in 2 minutes", name)
}

// readyEndpoint waits for the echo Service's ready endpoint and returns
// its address.
func readyEndpoint(ctx context.Context, s *cluster.Server) (string, error) {
	cs, err := s.Client()
	if err != nil {
		return "", err
	}
	var ip string
	err = poll(ctx, func(ctx context.Context) bool {
		slices, err := cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=echo"})
		if err != nil {
			return false
		}
		for _, sl := range slices.Items {
			for _, e := range sl.Endpoints {
				if (e.Conditions.Ready == nil || *e.Conditions.Ready) && len(e.Addresses) > 0 {
					ip = e.Addresses[0]
					return true
				}
			}
		}
		return false
	})
	if err != nil {
		return "", fmt.Errorf("no ready endpoint of the echo Service: %w", err)
	}
	return ip, nil
}

// answers says whether a GET of url with the Host header host is a 200.
func answers(url, host string) bool {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}

func answerSize(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return len(b)
}

// startNginx runs Debian's nginx in dir as a reverse proxy to the pod
// (upstream connections kept alive, as the node's are) on a free loopback
// port, in the foreground as a child of the bench: its URL, version and
// stop function; no stop function when nginx is not installed.
func startNginx(dir, podIP string) (url, version string, stop func(), err error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/nginx"); err != nil {
			return "", "", nil, nil
		}
	}
	out, _ := exec.Command(bin, "-v").CombinedOutput()
	version = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: "))
	version = strings.Replace(version, "/", " ", 1)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", nil, err
	}
	port := cluster.FreePort()
	// One worker per core, as Debian's own configuration has; the headers
	// the node sets, set here too.
	conf := fmt.Sprintf(`worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/client_body;
  proxy_temp_path %[1]s/proxy;
  upstream pod {
    server %[2]s;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:%[3]d;
    location / {
      proxy_pass http://pod;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-Proto $scheme;
    }
  }
}
`, dir, net.JoinHostPort(podIP, "8080"), port)
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		return "", "", nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "nginx.out"))
	if err != nil {
		return "", "", nil, err
	}
	cmd := exec.Command(bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", confFile, "-g", "daemon off;")
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: the master and its workers are stopped
	// together.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return "", "", nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	stop = func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	// Up when it answers; an nginx that exits at once says why.
	for range 100 {
		select {
		case <-exited:
			msg, _ := os.ReadFile(filepath.Join(dir, "nginx.out"))
			elog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			return "", "", nil, fmt.Errorf("nginx exited: %s%s", msg, elog)
		default:
		}
		if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second); err == nil {
			c.Close()
			return fmt.Sprintf("http://127.0.0.1:%d/", port), version, stop, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	return "", "", nil, errors.New("nginx did not open its port in 5 s")
}

type loadResult struct {
	n, failed int
	rps       float64
	p50, p99  time.Duration
}

// failures is a note on the failed requests of the two cases, if any.
func (r loadResult) failures(other loadResult) string {
	if r.failed == 0 && other.failed == 0 {
		return ""
	}
	return fmt.Sprintf("   (failed: %d of %d, %d of %d)", r.failed, r.n, other.failed, other.n)
}

// load sends GETs of url with the Host header host from workers
// concurrent workers, each one request after the other, for warmUp and
// then for loadTime, and returns the figures of the latter.
//
// The load generator is written here: go.mod has none (no vegeta, hey or
// similar), and the figures need only a closed loop of a fixed number of
// workers over the standard library's client, the same for every target.
//
// profile, if not nil, runs beside the measured load.
func load(url, host string, workers int, keepAlive bool, profile func() error) (loadResult, error) {
	if _, err := loadFor(url, host, workers, keepAlive, warmUp); err != nil {
		return loadResult{}, err
	}
	if profile == nil {
		return loadFor(url, host, workers, keepAlive, loadTime)
	}
	perr := make(chan error, 1)
	go func() { perr <- profile() }()
	r, err := loadFor(url, host, workers, keepAlive, loadTime)
	if err := <-perr; err != nil {
		fmt.Println("  (no profile:", err, ")")
	}
	return r, err
}

// saveProfile saves the node's Go profile /debug/pprof/what (of the
// whole process: its API server serves them) in -ingress-profile's dir.
func saveProfile(ctx context.Context, s *cluster.Server, what, file string) error {
	cs, err := s.Client()
	if err != nil {
		return err
	}
	req := cs.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/" + what)
	if what == "profile" {
		req = req.Param("seconds", "9") // within the load's 10 s
	}
	data, err := req.DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("profile %s: %w", what, err)
	}
	if err := os.MkdirAll(*ingressProfile, 0o755); err != nil {
		return err
	}
	path := filepath.Join(*ingressProfile, file)
	fmt.Printf("  (profile of the node saved: %s)\n", path)
	return os.WriteFile(path, data, 0o644)
}

func loadFor(url, host string, workers int, keepAlive bool, d time.Duration) (loadResult, error) {
	tr := &http.Transport{
		DisableKeepAlives:   !keepAlive,
		MaxIdleConnsPerHost: workers,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	lat := make([][]time.Duration, workers)
	failed := make([]int, workers)
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			l := make([]time.Duration, 0, 1<<16)
			for {
				t := time.Now()
				if !t.Before(end) {
					break
				}
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				req.Host = host
				resp, err := c.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = errors.New(resp.Status)
					}
				}
				if err != nil {
					failed[w]++
					continue
				}
				l = append(l, time.Since(t))
			}
			lat[w] = l
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	var r loadResult
	for w := range workers {
		all = append(all, lat[w]...)
		r.failed += failed[w]
	}
	r.n = len(all) + r.failed
	if len(all) == 0 {
		return r, fmt.Errorf("all %d requests to %s failed", r.failed, url)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	r.rps = float64(len(all)) / elapsed.Seconds()
	r.p50, r.p99 = all[len(all)/2], all[len(all)*99/100]
	return r, nil
}

// memory is the RSS and PSS of a process, in kB.
func memory(pid int) (rss, pss int, err error) {
	if rss, err = statusKB(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:"); err != nil {
		return 0, 0, err
	}
	pss, err = statusKB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
	return rss, pss, err
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func nproc() int { return runtime.NumCPU() }
