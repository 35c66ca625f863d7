package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// benchNode measures a server that is also a node: start to node Ready and to
// a first pod Running (warm data dir), 30 pods of one Deployment, and the
// idle memory of skiff and its containerd.
func benchNode() error {
	dir, err := os.MkdirTemp("", "skiff-bench-node-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	reg, err := cluster.StartRegistry(filepath.Join(dir, "registry"), "bench", "bench-password")
	if err != nil {
		return err
	}
	defer reg.Close()
	if err := reg.Push("busybox:1"); err != nil {
		return err
	}
	regFile := filepath.Join(dir, "registries.yaml")
	if err := os.WriteFile(regFile, []byte(fmt.Sprintf("mirrors:\n  bench.skiff.test:\n    endpoint: [\"https://%s\"]\nconfigs:\n  %q:\n    auth: {username: bench, password: bench-password}\n    tls: {ca_file: %q}\n",
		reg.Host, reg.Host, reg.CAFile)), 0o600); err != nil {
		return err
	}
	s, err := cluster.NewNode(filepath.Join(dir, "node"), "--private-registry", regFile, "--disable-default-registry-endpoint")
	if err != nil {
		return err
	}
	defer s.Teardown()
	defer s.Stop()
	ctx := context.Background()
	cs, ready, pod, err := warmNode(ctx, s)
	if err != nil {
		return err
	}
	fmt.Printf("node start to Ready, warm: %.2f s (goal < 10 s)\n", ready.Seconds())
	fmt.Printf("node start to a first pod Running, warm: %.2f s\n", pod.Seconds())
	afterPod := time.Now()
	if err := poll(ctx, func(ctx context.Context) bool {
		out, err := s.Kubectl(ctx, "", "top", "nodes", "--no-headers")
		return err == nil && len(strings.Fields(out)) >= 5
	}); err != nil {
		return fmt.Errorf("kubectl top nodes never answered: %w", err)
	}
	fmt.Printf("node start to a first `kubectl top nodes` answer, warm: %.2f s\n", (pod + time.Since(afterPod)).Seconds())

	t := time.Now()
	if err := runPods(ctx, cs, "thirty", 30); err != nil {
		return err
	}
	fmt.Printf("30 pods of one Deployment Running: %.2f s (goal < 30 s)\n", time.Since(t).Seconds())

	if err := benchShims(s); err != nil {
		return err
	}
	if err := benchDNS(ctx, cs); err != nil {
		return err
	}
	if err := benchVolumes(ctx, cs); err != nil {
		return err
	}
	if err := benchPull(ctx, cs, reg); err != nil {
		return err
	}

	for _, name := range []string{"first", "thirty"} {
		cs.AppsV1().Deployments("default").Delete(ctx, name, metav1.DeleteOptions{})
	}
	if err := poll(ctx, func(ctx context.Context) bool {
		p, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		return err == nil && len(p.Items) == 0
	}); err != nil {
		return err
	}
	if err := benchHostPorts(ctx, cs, 100); err != nil {
		return err
	}
	time.Sleep(*idle) // the figure is memory after this long idle
	pids, err := nodePids(s)
	if err != nil {
		return err
	}
	var rss, pss [2]int
	for i, pid := range pids {
		if rss[i], err = rssMB(pid); err != nil {
			return err
		}
		if pss[i], err = pssMB(pid); err != nil {
			return err
		}
	}
	fmt.Printf("RSS after %s idle, no workload: skiff %d MB + containerd %d MB = %d MB (goal < 500 MB); PSS %d + %d = %d MB\n",
		*idle, rss[0], rss[1], rss[0]+rss[1], pss[0], pss[1], pss[0]+pss[1])
	return nil
}

// benchPull times a pod from its creation to Running with an image pulled
// from a registry on loopback (TLS, basic auth) through a mirror, then a
// second pod of the same image, cached.
func benchPull(ctx context.Context, cs *kubernetes.Clientset, reg *cluster.Registry) error {
	size, err := reg.ImageSize()
	if err != nil {
		return err
	}
	var times []float64
	for _, name := range []string{"pull-first", "pull-cached"} {
		t := time.Now()
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](0),
			Containers:                    []corev1.Container{{Name: "c", Image: "bench.skiff.test/busybox:1", Command: []string{"sleep", "3600"}}},
		}}
		if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			return err
		}
		if err := poll(ctx, func(ctx context.Context) bool {
			p, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			return err == nil && p.Status.Phase == corev1.PodRunning
		}); err != nil {
			return fmt.Errorf("pod %s from the registry: %w", name, err)
		}
		times = append(times, time.Since(t).Seconds())
		cs.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{})
	}
	fmt.Printf("pod from a loopback registry (mirror, TLS, basic auth; image %.1f MB compressed) to Running: first pull %.2f s, cached %.2f s\n",
		float64(size)/1e6, times[0], times[1])
	return nil
}

// benchVolumes creates 10 local-path claims and a pod for each at once, and
// times them to all pods Running; then deletes them all.
func benchVolumes(ctx context.Context, cs *kubernetes.Clientset) error {
	const n = 10
	start := time.Now()
	for i := range n {
		name := fmt.Sprintf("vol-%d", i)
		_, err := cs.CoreV1().PersistentVolumeClaims("default").Create(ctx, &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("16Mi")}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		_, err = cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "volumes"}},
			Spec: corev1.PodSpec{
				TerminationGracePeriodSeconds: ptr.To[int64](0),
				Containers: []corev1.Container{{Name: "c", Image: cluster.BusyboxImage, Command: []string{"sleep", "3600"},
					VolumeMounts: []corev1.VolumeMount{{Name: "v", MountPath: "/data"}}}},
				Volumes: []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name}}}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
	}
	if err := poll(ctx, func(ctx context.Context) bool {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=volumes"})
		if err != nil || len(pods.Items) != n {
			return false
		}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodRunning {
				return false
			}
		}
		return true
	}); err != nil {
		return fmt.Errorf("pods with local-path claims: %w", err)
	}
	fmt.Printf("%d local-path claims and their pods, created at once, to all pods Running: %.2f s\n", n, time.Since(start).Seconds())
	cs.CoreV1().Pods("default").DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "app=volumes"})
	return poll(ctx, func(ctx context.Context) bool {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=volumes"})
		if err != nil || len(pods.Items) != 0 {
			return false
		}
		return cs.CoreV1().PersistentVolumeClaims("default").DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}) == nil
	})
}

// warmNode starts the node once to fill its data dir, stops it, and starts
// it again: the times from that warm start to node Ready and to a first
// pod (Deployment "first") Running.
func warmNode(ctx context.Context, s *cluster.Server) (cs *kubernetes.Clientset, ready, pod time.Duration, err error) {
	if err := s.Start(ctx); err != nil {
		return nil, 0, 0, err
	}
	if err := s.Stop(); err != nil {
		return nil, 0, 0, err
	}
	start := time.Now()
	if err := s.Start(ctx); err != nil {
		return nil, 0, 0, err
	}
	if cs, err = s.Client(); err != nil {
		return nil, 0, 0, err
	}
	if err := poll(ctx, func(ctx context.Context) bool {
		n, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		return err == nil && len(n.Items) == 1 && readySince(&n.Items[0], start)
	}); err != nil {
		return nil, 0, 0, fmt.Errorf("node not ready: %w", err)
	}
	ready = time.Since(start)
	if err := runPods(ctx, cs, "first", 1); err != nil {
		return nil, 0, 0, err
	}
	return cs, ready, time.Since(start), nil
}

// readySince says whether n's kubelet has reported it Ready since t: after
// a restart the Node still holds the last run's Ready condition.
func readySince(n *corev1.Node, t time.Time) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			// Heartbeats have a resolution of a second.
			return c.Status == corev1.ConditionTrue && !c.LastHeartbeatTime.Time.Before(t.Truncate(time.Second))
		}
	}
	return false
}

// nodeReady says whether n's Ready condition is true.
func nodeReady(n *corev1.Node) bool { return readySince(n, time.Time{}) }

// runPods creates a Deployment of n pods and waits for all to run.
func runPods(ctx context.Context, cs *kubernetes.Clientset, name string, n int32) error {
	labels := map[string]string{"app": name}
	_, err := cs.AppsV1().Deployments("default").Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(n),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](0),
					Containers:                    []corev1.Container{{Name: "c", Image: cluster.BusyboxImage, Command: []string{"sleep", "3600"}}},
				},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	return poll(ctx, func(ctx context.Context) bool {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil || int32(len(pods.Items)) != n {
			return false
		}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodRunning {
				return false
			}
		}
		return true
	})
}

func poll(ctx context.Context, cond func(context.Context) bool) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	return wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		return cond(ctx), nil
	})
}

// benchShims prints the memory of the pods' runc shims (one per pod): each
// one's own (anonymous) memory and its PSS.
func benchShims(s *cluster.Server) error {
	own, pss, err := shimMemory(s)
	if err != nil {
		return err
	}
	fmt.Printf("pod shims, with the 31 pods running: %d shims, each %.1f MB own memory, PSS %.1f MB (mean)\n", len(s.ShimPids()), own, pss)
	return nil
}

// shimMemory is the mean own (anonymous) memory and PSS of the node's
// shims, in MB.
func shimMemory(s *cluster.Server) (own, pss float64, err error) {
	return meanMemory(s.ShimPids(), "shim", s)
}

// meanMemory is the mean own (anonymous) memory and PSS of the processes
// pids (what they are, for the error when none is left), in MB.
func meanMemory(pids []int, what string, s *cluster.Server) (own, pss float64, err error) {
	var n, anon, ps int
	for _, pid := range pids {
		rollup := fmt.Sprintf("/proc/%d/smaps_rollup", pid)
		a, err := statusKB(rollup, "Anonymous:")
		if err != nil {
			continue // gone meanwhile
		}
		p, err := statusKB(rollup, "Pss:")
		if err != nil {
			continue
		}
		n, anon, ps = n+1, anon+a, ps+p
	}
	if n == 0 {
		return 0, 0, fmt.Errorf("no %s of %s found", what, s.DataDir)
	}
	return float64(anon) / 1024 / float64(n), float64(ps) / 1024 / float64(n), nil
}

// nodePids returns the server's pid and its containerd child's.
func nodePids(s *cluster.Server) ([2]int, error) {
	child := s.ContainerdPid()
	if child == 0 {
		return [2]int{}, fmt.Errorf("no containerd child of pid %d", s.Pid())
	}
	return [2]int{s.Pid(), child}, nil
}

// benchDNS runs the image's DNS benchmark in a pod against the node's DNS,
// for a cluster name and for an external name answered from the cache.
func benchDNS(ctx context.Context, cs *kubernetes.Clientset) error {
	script := "tool dnsbench -n 20000 -c 4 kubernetes.default.svc.cluster.local && " +
		"tool dnsbench -n 20000 -c 4 www." + cluster.UpstreamDomain
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "dnsbench"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: "bench", Image: cluster.BusyboxImage, Command: []string{"sh", "-c", script}}},
		},
	}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return err
	}
	defer cs.CoreV1().Pods("default").Delete(ctx, "dnsbench", metav1.DeleteOptions{})
	var phase corev1.PodPhase
	if err := poll(ctx, func(ctx context.Context) bool {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "dnsbench", metav1.GetOptions{})
		if err == nil {
			phase = p.Status.Phase
		}
		return phase == corev1.PodSucceeded || phase == corev1.PodFailed
	}); err != nil {
		return fmt.Errorf("dns benchmark pod: %w", err)
	}
	logs, err := cs.CoreV1().Pods("default").GetLogs("dnsbench", &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil {
		return err
	}
	if phase != corev1.PodSucceeded {
		return fmt.Errorf("dns benchmark failed: %s", logs)
	}
	lines := strings.Split(strings.TrimSpace(string(logs)), "\n")
	for i, what := range []string{"cluster name", "cached external name"} {
		if i < len(lines) {
			fmt.Printf("DNS from a pod, %s: %s (goal p99 < 5 ms)\n", what, lines[i])
		}
	}
	return nil
}

// benchHostPorts runs n pods with a hostPort each, then times one more pod
// from its creation to its hostPort answering on the node's address, with
// the n pods' hostPorts in place; then deletes them all.
func benchHostPorts(ctx context.Context, cs *kubernetes.Clientset, n int) error {
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		return fmt.Errorf("listing the node: %v", err)
	}
	var nodeIP string
	for _, a := range nodes.Items[0].Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			nodeIP = a.Address
		}
	}
	create := func(i int) error {
		_, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("hostport-%d", i), Labels: map[string]string{"app": "hostports"}},
			Spec: corev1.PodSpec{
				TerminationGracePeriodSeconds: ptr.To[int64](0),
				Containers: []corev1.Container{{Name: "c", Image: cluster.BusyboxImage, Command: []string{"tool", "serve", "-port", "8080"},
					Ports: []corev1.ContainerPort{{ContainerPort: 8080, HostPort: int32(20000 + i)}}}},
			},
		}, metav1.CreateOptions{})
		return err
	}
	answers := func(ctx context.Context, i int) bool {
		c := &http.Client{Timeout: time.Second}
		resp, err := c.Get(fmt.Sprintf("http://%s:%d/", nodeIP, 20000+i))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	start := time.Now()
	for i := range n {
		if err := create(i); err != nil {
			return err
		}
	}
	if err := poll(ctx, func(ctx context.Context) bool { return answers(ctx, n-1) && answers(ctx, 0) }); err != nil {
		return fmt.Errorf("%d hostPort pods: %w", n, err)
	}
	fmt.Printf("%d pods with a hostPort each, created at once, to the first and last answering: %.2f s\n", n, time.Since(start).Seconds())
	start = time.Now()
	if err := create(n); err != nil {
		return err
	}
	if err := poll(ctx, func(ctx context.Context) bool { return answers(ctx, n) }); err != nil {
		return fmt.Errorf("one more hostPort pod: %w", err)
	}
	fmt.Printf("one pod's start to its hostPort answering, with %d hostPorts in place: %.2f s\n", n, time.Since(start).Seconds())
	if err := cs.CoreV1().Pods("default").DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "app=hostports"}); err != nil {
		return err
	}
	return poll(ctx, func(ctx context.Context) bool {
		p, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		return err == nil && len(p.Items) == 0
	})
}
