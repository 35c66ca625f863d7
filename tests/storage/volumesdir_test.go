package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// podVolumesDir walks a pod's volumes dir on its node's host as the
// upstream e2e storage suite does in "volumeMode should not mount / map
// unused volumes in a pod" (test/e2e/storage/testsuites/volumemode.go):
// from a privileged host-network pod with the host's / at /rootfs, it
// enters the host's mount namespace with nsenter and runs
//
//	test ! -d <kubelet root>/pods/<uid>/volumes   (false: the dir is there)
//	find <kubelet root>/pods/<uid>/volumes -mindepth 2 -maxdepth 2
//
// which must exit 0 and list <plugin>/<volume> for each volume a container
// uses, and nothing for one it does not. The suite names the kubelet root
// /var/lib/kubelet; this node's is the one it records in its run dir
// (<data-dir>/kubelet for a data dir other than the default).
func podVolumesDir(t *testing.T) {
	ns := srv.Namespace(t)
	node := nodes[0]
	srv.KubectlT(t, fmt.Sprintf(`
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: used}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 16Mi}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: unused}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 16Mi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: user}
spec:
  nodeSelector: {kubernetes.io/hostname: %[1]s}
  terminationGracePeriodSeconds: 0
  containers:
  - {name: c, image: %[2]s, command: [sleep, "3600"], volumeMounts: [{name: used, mountPath: /data}]}
  volumes:
  - {name: used, persistentVolumeClaim: {claimName: used}}
  - {name: unused, persistentVolumeClaim: {claimName: unused}}
---
apiVersion: v1
kind: Pod
metadata: {name: hostexec}
spec:
  nodeSelector: {kubernetes.io/hostname: %[1]s}
  hostNetwork: true
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: %[2]s
    command: [sleep, "3600"]
    securityContext: {privileged: true}
    volumeMounts: [{name: rootfs, mountPath: /rootfs, readOnly: true}]
  volumes: [{name: rootfs, hostPath: {path: /}}]
`, node, cluster.BusyboxImage), "apply", "-n", ns, "-f", "-")
	pod := waitRunning(t, ns, "user")
	waitRunning(t, ns, "hostexec")
	cs := srv.ClientT(t)
	pvs := map[string]string{}
	for _, claim := range []string{"used", "unused"} {
		c, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), claim, metav1.GetOptions{})
		if err != nil || c.Spec.VolumeName == "" {
			t.Fatalf("claim %s of a running pod has no volume: %v", claim, err)
		}
		pvs[claim] = c.Spec.VolumeName
	}

	var state struct{ RootDir string }
	data, err := os.ReadFile(filepath.Join(cluster.NamesOf(srv.DataDir).RunDir, "kubelet.json"))
	if err != nil || json.Unmarshal(data, &state) != nil || !filepath.IsAbs(state.RootDir) {
		t.Fatalf("node %s records no kubelet root dir: %v %s", node, err, data)
	}
	volumes := filepath.Join(state.RootDir, "pods", string(pod.UID), "volumes")

	// The suite enters the mount namespace of the host's PID 1. Where this
	// test's host is not PID 1's (a CI container), or PID 1 cannot be
	// opened even by root (a sandbox's init that shields itself, which
	// makes every hostexec command of the suite exit 1), the node's own
	// process stands for it: it runs in the host's mount namespace.
	pid := 1
	self, _ := os.Readlink("/proc/self/ns/mnt")
	if init, err := os.Readlink("/proc/1/ns/mnt"); err != nil || init != self {
		pid = srv.Pid()
		if theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err != nil || theirs != self {
			t.Fatalf("node %s's process %d is not in the host's mount namespace (%s): %s %v", node, pid, self, theirs, err)
		}
		why := fmt.Sprintf("it is in mount namespace %s, this host in %s", init, self)
		if err != nil {
			out, code := onHost(t, ns, 1, "true")
			why = fmt.Sprintf("%v; the suite's hostexec command exits %d: %s", err, code, strings.TrimSpace(out))
		}
		t.Logf("not entering PID 1's mount namespace as the suite does (%s); entering node %s's process %d instead", why, node, pid)
	}
	if out, code := onHost(t, ns, pid, "test ! -d "+volumes); code != 1 {
		t.Fatalf("test ! -d %s on the host exits %d (%s), want 1: the pod's volumes dir is not where the kubelet root says", volumes, code, out)
	}
	out, code := onHost(t, ns, pid, fmt.Sprintf("find %s -mindepth 2 -maxdepth 2", volumes))
	if code != 0 {
		t.Fatalf("find %s -mindepth 2 -maxdepth 2 on the host exits %d, want 0: %s", volumes, code, out)
	}
	listed := strings.Fields(out)
	t.Logf("find %s -mindepth 2 -maxdepth 2 on the host lists %q", volumes, listed)
	if want := filepath.Join(volumes, "kubernetes.io~local-volume", pvs["used"]); !slices.Contains(listed, want) {
		t.Errorf("find lists %q, want %s (the mounted claim) among them", listed, want)
	}
	if !slices.ContainsFunc(listed, func(p string) bool {
		return strings.HasPrefix(p, filepath.Join(volumes, "kubernetes.io~projected", "kube-api-access-"))
	}) {
		t.Errorf("find lists %q, want the service account token's projected volume among them", listed)
	}
	if slices.ContainsFunc(listed, func(p string) bool { return strings.Contains(p, pvs["unused"]) }) {
		t.Errorf("find lists %q: claim unused, which no container mounts, is mounted", listed)
	}
	// The suite then looks at volumeDevices: none, for no block volume.
	if out, code := onHost(t, ns, pid, "test ! -d "+filepath.Join(filepath.Dir(volumes), "volumeDevices")); code != 0 {
		t.Errorf("the pod has a volumeDevices dir with no block volume: %d %s", code, out)
	}
}

// onHost runs cmd with sh in the mount namespace of the host's process
// pid, from pod hostexec, as the upstream suite's hostexec does; it returns
// the output and the exit code (-1 when kubectl exec itself failed).
func onHost(t *testing.T, ns string, pid int, cmd string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := srv.Kubectl(ctx, "", "exec", "-n", ns, "hostexec", "--",
		"busybox", "nsenter", fmt.Sprintf("--mount=/rootfs/proc/%d/ns/mnt", pid), "--", "sh", "-c", cmd)
	if err == nil {
		return out, 0
	}
	var code int
	if _, scanErr := fmt.Sscanf(exitCode(err.Error()), "%d", &code); scanErr != nil {
		return out + err.Error(), -1
	}
	return out + err.Error(), code
}

// exitCode is what follows "exit code " in kubectl exec's error, for a
// command that ran and failed.
func exitCode(msg string) string {
	const marker = "command terminated with exit code "
	i := strings.LastIndex(msg, marker)
	if i < 0 {
		return ""
	}
	return strings.TrimSpace(msg[i+len(marker):])
}
