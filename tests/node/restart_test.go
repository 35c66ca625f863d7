package node

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// Not parallel: it restarts the shared server while nothing else runs. The
// restart also restarts the node's service proxy.
func TestServerRestartKeepsPodsRunning(t *testing.T) {
	ns := srv.Namespace(t)
	srv.KubectlT(t, fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: survivor}\nspec:\n  containers: [{name: c, image: %s, command: [sleep, '3600']}]\n", image), "apply", "-n", ns, "-f", "-")
	before := waitPod(t, ns, "survivor", "running", running)
	// An established TCP connection through a Service, from the host.
	srv.EchoDeployment(t, ns, "kept", 1, "  ports: [{port: 80, targetPort: 8080}]\n")
	addr := net.JoinHostPort(service(t, ns, "kept").Spec.ClusterIP, "80")
	var conn net.Conn
	cluster.WaitFor(t, "a connection through the Service", func(ctx context.Context) (bool, error) {
		var err error
		conn, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err == nil, nil
	})
	defer conn.Close()
	rd := bufio.NewReader(conn)
	request := func(when string) {
		t.Helper()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
		if err := req.Write(conn); err != nil {
			t.Fatalf("request %s on the established connection: %v", when, err)
		}
		resp, err := http.ReadResponse(rd, req)
		if err != nil {
			t.Fatalf("response %s on the established connection: %v", when, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	request("before the restart")
	// Each pod's shim is upstream's small runc shim, installed in the data
	// dir, not skiff under another name. This test's pods' shims must
	// survive the restart; another test's pods may still be going away.
	shims := nodeShims(t)
	if len(shims) == 0 {
		t.Fatal("no shim of this node's containerd runs")
	}
	ours := namespaceShims(t, ns, shims)
	if len(ours) != 2 {
		t.Fatalf("%d shims run the pods of %s, want 2 (survivor and kept): %v", len(ours), ns, ours)
	}
	skiff, err := os.Stat(cluster.Binary())
	if err != nil {
		t.Fatal(err)
	}
	for pid, exe := range shims {
		if fi, err := os.Stat(exe); err == nil && os.SameFile(fi, skiff) || filepath.Base(exe) != "containerd-shim-runc-v2" {
			t.Errorf("shim %d runs %s, want the containerd-shim-runc-v2 of the data dir", pid, exe)
		}
	}

	// The air-gap folder: a tarball added while the node runs, and an
	// image a user removed whose tarball is still there, are imported at
	// the next start; an unchanged tarball whose images are all there is
	// not read again.
	images := filepath.Join(srv.DataDir, "agent", "images")
	if err := writeTinyImage(filepath.Join(images, "added.tar"), addedImage); err != nil {
		t.Fatal(err)
	}
	if out, err := srv.Ctr("images", "rm", spareImage); err != nil {
		t.Fatalf("ctr images rm %s: %v: %s", spareImage, err, out)
	}
	logged, err := os.Stat(srv.Log)
	if err != nil {
		t.Fatal(err)
	}

	kubeletPort, _, err := kubeletEndpoint(cluster.Context(t))
	if err != nil {
		t.Fatal(err)
	}

	// A hostPort answers while skiff is down and as soon as it is back:
	// its rules stay, and the restart rewrites them in one transaction.
	hostPortPod(t, ns, "hp-kept", 18082, "TCP")
	hostPortURL := fmt.Sprintf("http://%s:18082/", nodeIP(t))
	cluster.WaitFor(t, "the hostPort before the restart", func(ctx context.Context) (bool, error) {
		body, err := httpGet(hostPortURL)
		return err == nil && strings.HasPrefix(body, "host=hp-kept "), nil
	})
	hostPortAnswers := func(when string) {
		t.Helper()
		if body, err := httpGet(hostPortURL); err != nil || !strings.HasPrefix(body, "host=hp-kept ") {
			t.Errorf("hostPort %s: %q, %v", when, body, err)
		}
	}

	if err := srv.Stop(); err != nil {
		t.Fatalf("stopping the server: %v", err)
	}
	hostPortAnswers("while skiff is stopped")
	restarted := time.Now()
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	hostPortAnswers("right after the restart")
	if err := srv.WaitNodesReady(context.Background()); err != nil {
		t.Fatalf("node not Ready after restart: %v", err)
	}
	// The kubelet of this node (its own data dir, so no well-known port)
	// listens where it did: the API server's exec and logs, which go to
	// the port in the Node's status, need not wait for it to change.
	var port int32
	cluster.WaitFor(t, "the restarted kubelet's node status", func(ctx context.Context) (bool, error) {
		var beat time.Time
		var err error
		port, beat, err = kubeletEndpoint(ctx)
		return err == nil && beat.After(restarted.Truncate(time.Second)), nil
	})
	if port != kubeletPort {
		t.Errorf("the kubelet's port moved from %d to %d across the restart", kubeletPort, port)
	}
	after := waitPod(t, ns, "survivor", "running after the restart", running)
	b, a := before.Status.ContainerStatuses[0], after.Status.ContainerStatuses[0]
	if a.ContainerID != b.ContainerID || a.RestartCount != 0 {
		t.Fatalf("container %s (restarts %d) after the restart, want the same %s with no restarts", a.ContainerID, a.RestartCount, b.ContainerID)
	}
	if before.Status.PodIP != after.Status.PodIP {
		t.Fatalf("pod IP changed from %s to %s", before.Status.PodIP, after.Status.PodIP)
	}
	request("after the restart")
	for _, pid := range ours {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			t.Errorf("shim %d did not survive the restart", pid)
		}
	}
	// The kubelet serves exec again.
	var out string
	cluster.WaitFor(t, "exec into the pod after the restart", func(ctx context.Context) (bool, error) {
		var err error
		out, err = srv.Kubectl(ctx, "", "exec", "-n", ns, "survivor", "--", "echo", "still here")
		return err == nil, nil
	})
	if !strings.Contains(out, "still here") {
		t.Errorf("exec after the restart printed %q", out)
	}
	// The kubelet runs, so containerd has imported what it had to.
	checkAirGapImports(t, logged.Size(), map[string]string{
		"busybox.tar": "already imported", "added.tar": "imported", "spare.tar": "imported"})
	listed, err := srv.Crictl("images")
	if err != nil {
		t.Fatalf("crictl images: %v: %s", err, listed)
	}
	for _, name := range []string{addedImage, spareImage, image} {
		repo, tag, _ := strings.Cut(name, ":")
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(repo) + `\s+` + tag + `\s`).MatchString(listed) {
			t.Errorf("crictl images after the restart does not list %s:\n%s", name, listed)
		}
	}
}

// Not parallel, like the restart above. A snapshot restored onto the
// stopped server (--cluster-reset) brings the cluster back as it was at the
// snapshot: the node is Ready again and its pod runs on, the same
// container, and what was made after the snapshot is gone.
func TestRestoredSnapshotKeepsNodeAndPods(t *testing.T) {
	ctx := cluster.Context(t)
	ns := srv.Namespace(t)
	srv.KubectlT(t, fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: kept}\nspec:\n  containers: [{name: c, image: %s, command: [sleep, '3600']}]\n", image), "apply", "-n", ns, "-f", "-")
	before := waitPod(t, ns, "kept", "running", running)
	code, out := cluster.Run(ctx, nil, "snapshot", "save", "--data-dir", srv.DataDir, "--name", "before-restore")
	if code != 0 {
		t.Fatalf("skiff snapshot save: exit %d: %s", code, out)
	}
	snap := strings.Fields(out)[0]
	srv.KubectlT(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: after-snapshot}\n", "apply", "-n", ns, "-f", "-")

	if err := srv.Stop(); err != nil {
		t.Fatalf("stopping the server: %v", err)
	}
	code, out = cluster.Run(ctx, nil, append(srv.Args(), "--cluster-reset", "--cluster-reset-restore-path", snap)...)
	if code != 0 || !strings.Contains(out, "start skiff server again without --cluster-reset") {
		t.Fatalf("skiff server --cluster-reset: exit %d: %s", code, out)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitNodesReady(ctx); err != nil {
		t.Fatalf("node not Ready after the restore: %v", err)
	}
	after := waitPod(t, ns, "kept", "running after the restore", running)
	b, a := before.Status.ContainerStatuses[0], after.Status.ContainerStatuses[0]
	if a.ContainerID != b.ContainerID || a.RestartCount != 0 {
		t.Errorf("container %s (restarts %d) after the restore, want the same %s with no restarts", a.ContainerID, a.RestartCount, b.ContainerID)
	}
	if _, err := srv.ClientT(t).CoreV1().ConfigMaps(ns).Get(ctx, "after-snapshot", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a ConfigMap made after the snapshot is there after the restore (%v)", err)
	}
}

// nodeShims returns this node's runc shims, pid to executable.
func nodeShims(t *testing.T) map[int]string {
	t.Helper()
	out := map[int]string{}
	for _, pid := range srv.ShimPids() {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil {
			out[pid] = exe
		}
	}
	return out
}

// namespaceShims returns the pids, among shims, of the shims that run the
// pod sandboxes of namespace ns: a shim's -id is its sandbox's ID, which
// crictl pods lists, shortened, with the pod's namespace.
func namespaceShims(t *testing.T, ns string, shims map[int]string) []int {
	t.Helper()
	out, err := srv.Crictl("pods")
	if err != nil {
		t.Fatalf("crictl pods: %v: %s", err, out)
	}
	var ids []string
	for _, line := range strings.Split(out, "\n") {
		// POD ID, CREATED (several words), STATE, NAME, NAMESPACE, ATTEMPT
		f := strings.Fields(line)
		if len(f) >= 5 && f[len(f)-2] == ns && f[len(f)-4] == "READY" {
			ids = append(ids, f[0])
		}
	}
	var pids []int
	for pid := range shims {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		args := strings.Split(string(data), "\x00")
		for i := 0; i+1 < len(args); i++ {
			if args[i] != "-id" {
				continue
			}
			for _, id := range ids {
				if strings.HasPrefix(args[i+1], id) {
					pids = append(pids, pid)
				}
			}
		}
	}
	return pids
}

// kubeletEndpoint is the kubelet port in the node's status, and when its
// kubelet last reported it.
func kubeletEndpoint(ctx context.Context) (int32, time.Time, error) {
	cs, err := srv.Client()
	if err != nil {
		return 0, time.Time{}, err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 {
		return 0, time.Time{}, fmt.Errorf("the node: %d nodes, %v", len(nodes.Items), err)
	}
	n := nodes.Items[0]
	var beat time.Time
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			beat = c.LastHeartbeatTime.Time
		}
	}
	return n.Status.DaemonEndpoints.KubeletEndpoint.Port, beat, nil
}

// addedImage is put in the air-gap folder while the node runs.
const addedImage = "skiff.test/added:1"

// checkAirGapImports checks what the server's log says, from offset on, of
// each air-gap tarball: imported, or already imported and not read again.
func checkAirGapImports(t *testing.T, offset int64, want map[string]string) {
	t.Helper()
	data, err := os.ReadFile(srv.Log)
	if err != nil {
		t.Fatal(err)
	}
	said := map[string]string{}
	for _, line := range strings.Split(string(data[offset:]), "\n") {
		_, rest, ok := strings.Cut(line, `"air-gap images `)
		if !ok {
			continue
		}
		what, _, _ := strings.Cut(rest, `"`)
		what, _, _ = strings.Cut(what, ":")
		_, file, _ := strings.Cut(rest, `file="`)
		file, _, _ = strings.Cut(file, `"`)
		said[filepath.Base(file)] = what
	}
	for file, w := range want {
		if said[file] != w {
			t.Errorf("after the restart the log says %s of %s, want %q", quoted(said[file]), file, w)
		}
	}
}

func quoted(s string) string {
	if s == "" {
		return "nothing"
	}
	return strconv.Quote(s)
}
