package node

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-dev/skiff/tests/cluster"
)

const image = cluster.BusyboxImage

func runningPods(t *testing.T, ns, selector string) []corev1.Pod {
	t.Helper()
	list, err := srv.ClientT(t).CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if running(&p) && p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out
}

func TestDeploymentPodsGetNodeIPsAndReachEachOther(t *testing.T) {
	t.Parallel()
	ns := srv.Namespace(t)
	srv.KubectlT(t, fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: %s
        command: [sh, -c, 'mkdir -p /www; hostname > /www/index.html; exec httpd -f -p 8080 -h /www']
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
`, image), "apply", "-n", ns, "-f", "-")
	var pods []corev1.Pod
	cluster.WaitFor(t, "3 running replicas", func(ctx context.Context) (bool, error) {
		pods = runningPods(t, ns, "app=web")
		return len(pods) == 3, nil
	})
	node, err := srv.ClientT(t).CoreV1().Nodes().Get(context.Background(), pods[0].Spec.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, podCIDR, err := net.ParseCIDR(node.Spec.PodCIDR)
	if err != nil {
		t.Fatalf("node podCIDR %q: %v", node.Spec.PodCIDR, err)
	}
	seen := map[string]bool{}
	for _, p := range pods {
		ip := net.ParseIP(p.Status.PodIP)
		if ip == nil || !podCIDR.Contains(ip) || seen[p.Status.PodIP] {
			t.Fatalf("pod %s has IP %q: want a distinct IP in %s", p.Name, p.Status.PodIP, podCIDR)
		}
		seen[p.Status.PodIP] = true
	}
	// One pod fetches another's page by IP.
	out := srv.KubectlT(t, "", "exec", "-n", ns, pods[0].Name, "--", "sh", "-c",
		`printf 'GET /index.html HTTP/1.0\r\n\r\n' | nc -w 5 `+pods[1].Status.PodIP+` 8080`)
	if !strings.HasSuffix(strings.TrimSpace(out), "\n"+pods[1].Name) {
		t.Fatalf("pod %s fetched %q from %s, want its hostname %s", pods[0].Name, out, pods[1].Status.PodIP, pods[1].Name)
	}
	// And the node reaches a pod.
	if out := srv.KubectlT(t, "", "exec", "-n", ns, pods[0].Name, "--", "ping", "-c", "1", "-W", "5", pods[2].Status.PodIP); !strings.Contains(out, "1 packets received") {
		t.Fatalf("ping between pods: %q", out)
	}

	for _, n := range []int{5, 1} {
		srv.KubectlT(t, "", "scale", "-n", ns, "deployment/web", fmt.Sprintf("--replicas=%d", n))
		cluster.WaitFor(t, fmt.Sprintf("%d running replicas", n), func(ctx context.Context) (bool, error) {
			list, err := srv.ClientT(t).CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
			return err == nil && len(list.Items) == n && len(runningPods(t, ns, "app=web")) == n, nil
		})
	}
}

func TestRestartsAndProbes(t *testing.T) {
	t.Parallel()
	ns := srv.Namespace(t)
	srv.KubectlT(t, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: exits}
spec:
  containers:
  - {name: c, image: %[1]s, command: [sh, -c, 'sleep 1; exit 3']}
---
apiVersion: v1
kind: Pod
metadata: {name: unlive}
spec:
  containers:
  - name: c
    image: %[1]s
    command: [sleep, "3600"]
    livenessProbe: {exec: {command: ["false"]}, periodSeconds: 1, failureThreshold: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: unready}
spec:
  containers:
  - name: c
    image: %[1]s
    command: [sleep, "3600"]
    readinessProbe: {exec: {command: ["false"]}, periodSeconds: 1}
`, image), "apply", "-n", ns, "-f", "-")
	restarted := func(p *corev1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 1
	}
	waitPod(t, ns, "exits", "restarted after exiting", restarted)
	waitPod(t, ns, "unlive", "restarted by its liveness probe", restarted)
	p := waitPod(t, ns, "unready", "running", func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Running != nil
	})
	// After several failed readiness probes the pod is still unready and
	// was never restarted.
	cluster.WaitFor(t, "three failed readiness probes", func(ctx context.Context) (bool, error) {
		events, err := srv.ClientT(t).CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=unready,reason=Unhealthy"})
		if err != nil {
			return false, nil
		}
		n := 0
		for _, e := range events.Items {
			n += int(max(e.Count, 1))
			if e.Series != nil {
				n += int(e.Series.Count)
			}
		}
		return n >= 3, nil
	})
	p = waitPod(t, ns, "unready", "observed", func(*corev1.Pod) bool { return true })
	if running(p) || p.Status.ContainerStatuses[0].RestartCount != 0 {
		t.Fatalf("a failing readiness probe must keep the pod unready without restarts: %+v", p.Status)
	}
}

func TestJobsCronJobsDaemonSets(t *testing.T) {
	t.Parallel()
	ns := srv.Namespace(t)
	srv.KubectlT(t, fmt.Sprintf(`
apiVersion: batch/v1
kind: Job
metadata: {name: three}
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: %[1]s, command: ["true"]}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: minutely}
spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: c, image: %[1]s, command: ["true"]}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: everywhere}
spec:
  selector: {matchLabels: {app: ds}}
  template:
    metadata: {labels: {app: ds}}
    spec:
      containers: [{name: c, image: %[1]s, command: [sleep, "3600"]}]
`, image), "apply", "-n", ns, "-f", "-")
	cs := srv.ClientT(t)
	cluster.WaitFor(t, "job completes 3 times", func(ctx context.Context) (bool, error) {
		j, err := cs.BatchV1().Jobs(ns).Get(ctx, "three", metav1.GetOptions{})
		return err == nil && j.Status.Succeeded == 3, nil
	})
	cluster.WaitFor(t, "daemonset pod running", func(ctx context.Context) (bool, error) {
		return len(runningPods(t, ns, "app=ds")) == 1, nil
	})
	cluster.WaitFor(t, "cronjob creates a job", func(ctx context.Context) (bool, error) {
		jobs, err := cs.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
		for _, j := range jobs.Items {
			if strings.HasPrefix(j.Name, "minutely-") {
				return true, nil
			}
		}
		return false, err
	})
}

func TestConfigSecretVolumesInitAndDownwardAPI(t *testing.T) {
	t.Parallel()
	ns := srv.Namespace(t)
	hostDir := t.TempDir()
	os.WriteFile(filepath.Join(hostDir, "from-host"), []byte("host file"), 0o644)
	srv.KubectlT(t, fmt.Sprintf(`
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {greeting: hello, file.txt: first}
---
apiVersion: v1
kind: Secret
metadata: {name: sec}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: app, labels: {tier: demo}}
spec:
  initContainers:
  - {name: init, image: %[1]s, command: [sh, -c, 'echo init-ran > /shared/init'], volumeMounts: [{name: shared, mountPath: /shared}]}
  containers:
  - name: main
    image: %[1]s
    command: [sleep, "3600"]
    env:
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: cfg, key: greeting}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: sec, key: password}}}
    - {name: MY_POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: MY_NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    volumeMounts:
    - {name: cfg, mountPath: /cfg}
    - {name: sec, mountPath: /sec}
    - {name: shared, mountPath: /shared}
    - {name: host, mountPath: /host}
  - name: sidecar
    image: %[1]s
    command: [sh, -c, 'echo from-sidecar > /shared/sidecar; exec sleep 3600']
    volumeMounts: [{name: shared, mountPath: /shared}]
  volumes:
  - {name: cfg, configMap: {name: cfg}}
  - {name: sec, secret: {secretName: sec}}
  - {name: shared, emptyDir: {}}
  - {name: host, hostPath: {path: %[2]s, type: Directory}}
`, image, hostDir), "apply", "-n", ns, "-f", "-")
	waitPod(t, ns, "app", "running", running)
	exec := func(cmd string) string {
		return strings.TrimSpace(srv.KubectlT(t, "", "exec", "-n", ns, "app", "-c", "main", "--", "sh", "-c", cmd))
	}
	for cmd, want := range map[string]string{
		"echo $GREETING $PASSWORD $MY_POD $MY_NS": "hello s3cret app " + ns,
		"cat /cfg/file.txt":                       "first",
		"cat /sec/password":                       "s3cret",
		"cat /shared/init":                        "init-ran",
		"cat /host/from-host":                     "host file",
	} {
		if got := exec(cmd); got != want {
			t.Errorf("%s: got %q, want %q", cmd, got, want)
		}
	}
	cluster.WaitFor(t, "the sidecar's file in the shared emptyDir", func(ctx context.Context) (bool, error) {
		return exec("cat /shared/sidecar 2>/dev/null") == "from-sidecar", nil
	})
	srv.KubectlT(t, "", "patch", "-n", ns, "configmap", "cfg", "-p", `{"data":{"file.txt":"second"}}`)
	cluster.WaitFor(t, "the updated ConfigMap in the volume", func(ctx context.Context) (bool, error) {
		return exec("cat /cfg/file.txt") == "second", nil
	})
}

func TestMemoryLimitAndOOMKill(t *testing.T) {
	t.Parallel()
	ns := srv.Namespace(t)
	srv.KubectlT(t, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: limited}
spec:
  containers:
  - name: c
    image: %[1]s
    command: [sleep, "3600"]
    resources: {limits: {memory: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: %[1]s
    command: [sh, -c, 'dd if=/dev/zero of=/dev/null bs=200M count=1']
    resources: {limits: {memory: 32Mi}}
`, image), "apply", "-n", ns, "-f", "-")
	p := waitPod(t, ns, "limited", "running", running)
	// The limit lands in the container's memory cgroup.
	id := strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "containerd://")
	var found bool
	filepath.Walk(filepath.Join("/sys/fs/cgroup/memory", srv.CgroupRoot), func(path string, info os.FileInfo, err error) error {
		if err == nil && info.IsDir() && strings.HasSuffix(path, id) {
			data, _ := os.ReadFile(filepath.Join(path, "memory.limit_in_bytes"))
			if strings.TrimSpace(string(data)) != fmt.Sprint(64<<20) {
				t.Errorf("%s/memory.limit_in_bytes = %q, want %d", path, data, 64<<20)
			}
			found = true
		}
		return nil
	})
	if !found {
		t.Errorf("no memory cgroup for container %s under %s", id, srv.CgroupRoot)
	}
	p = waitPod(t, ns, "hog", "OOMKilled", func(p *corev1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Terminated != nil
	})
	if r := p.Status.ContainerStatuses[0].State.Terminated.Reason; r != "OOMKilled" {
		t.Fatalf("container over its limit ended with reason %q, want OOMKilled", r)
	}
}

func TestMissingImageReportsPullError(t *testing.T) {
	t.Parallel()
	ns := srv.Namespace(t)
	// A registry on a closed loopback port: the pull fails at once, and no
	// traffic leaves the machine.
	srv.KubectlT(t, "apiVersion: v1\nkind: Pod\nmetadata: {name: nope}\nspec:\n  containers: [{name: c, image: '127.0.0.1:1/missing/image:1'}]\n", "apply", "-n", ns, "-f", "-")
	p := waitPod(t, ns, "nope", "reporting a pull error", func(p *corev1.Pod) bool {
		if len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].State.Waiting == nil {
			return false
		}
		r := p.Status.ContainerStatuses[0].State.Waiting.Reason
		return r == "ErrImagePull" || r == "ImagePullBackOff"
	})
	if msg := p.Status.ContainerStatuses[0].State.Waiting.Message; !strings.Contains(msg, "127.0.0.1:1/missing/image:1") {
		t.Fatalf("pull error message %q does not name the image", msg)
	}
}

func TestBrokenAirGapTarballIsSkipped(t *testing.T) {
	data, _ := os.ReadFile(srv.Log)
	if !strings.Contains(string(data), "broken.tar") {
		t.Fatalf("the server log does not mention the broken air-gap tarball")
	}
}

func TestDeletedPodsLeaveNoContainers(t *testing.T) {
	t.Parallel()
	ns := srv.Namespace(t)
	srv.KubectlT(t, fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: brief}
spec:
  replicas: 2
  selector: {matchLabels: {app: brief}}
  template:
    metadata: {labels: {app: brief}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: %s, command: [sleep, "3600"]}]
`, image), "apply", "-n", ns, "-f", "-")
	var pods []corev1.Pod
	cluster.WaitFor(t, "2 running pods", func(ctx context.Context) (bool, error) {
		pods = runningPods(t, ns, "app=brief")
		return len(pods) == 2, nil
	})
	crictl := func(args ...string) string {
		out, err := srv.Crictl(args...)
		if err != nil {
			t.Fatalf("crictl %v: %v: %s", args, err, out)
		}
		return out
	}
	all := crictl("ps", "-a", "-q")
	for _, p := range pods {
		id := strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "containerd://")
		if !strings.Contains(all, id) {
			t.Fatalf("crictl ps -a does not list running container %s:\n%s", id, all)
		}
	}
	if out := crictl("pods"); !strings.Contains(out, pods[0].Name) {
		t.Fatalf("crictl pods does not list %s:\n%s", pods[0].Name, out)
	}

	srv.KubectlT(t, "", "delete", "-n", ns, "deployment/brief")
	cluster.WaitFor(t, "the pods' containers and sandboxes gone", func(ctx context.Context) (bool, error) {
		list, err := srv.ClientT(t).CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=brief"})
		if err != nil || len(list.Items) != 0 {
			return false, nil
		}
		containers, sandboxes := crictl("ps", "-a", "-q"), crictl("pods")
		for _, p := range pods {
			id := strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "containerd://")
			if strings.Contains(containers, id) || strings.Contains(sandboxes, p.Name) {
				return false, nil
			}
		}
		return true, nil
	})
}
