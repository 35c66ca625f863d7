package storage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// TestLocalPath runs its steps in order: the later ones restart the server
// and stop the agent.
func TestLocalPath(t *testing.T) {
	cluster.Steps(t,
		cluster.Step{Name: "DefaultClass", Run: defaultClass},
		cluster.Step{Name: "StatefulSetOnEveryNode", Run: statefulSet},
		cluster.Step{Name: "RetainKeepsTheDir", Run: retain},
		cluster.Step{Name: "BadInput", Run: badInput},
		cluster.Step{Name: "ImmediateClassNamesItsNode", Run: immediateClasses},
		cluster.Step{Name: "PodVolumesDirOnHost", Run: podVolumesDir},
		cluster.Step{Name: "NodeCannotTouchOtherNodesVolumes", Run: nodeIdentity},
		cluster.Step{Name: "ClaimWaitsForItsNode", Run: nodeDown},
		cluster.Step{Name: "Disable", Run: disable},
	)
}

func defaultClass(t *testing.T) {
	sc, err := srv.ClientT(t).StorageV1().StorageClasses().Get(context.Background(), "local-path", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sc.Annotations["storageclass.kubernetes.io/is-default-class"] != "true" || sc.Provisioner != "skiff.dev/local-path" ||
		sc.VolumeBindingMode == nil || *sc.VolumeBindingMode != "WaitForFirstConsumer" || sc.ReclaimPolicy == nil || *sc.ReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		t.Errorf("StorageClass local-path is not the default WaitForFirstConsumer class with reclaim policy Delete: %+v", sc)
	}
}

const statefulSetYAML = `
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 0
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {labelSelector: {matchLabels: {app: db}}, topologyKey: kubernetes.io/hostname}
      containers:
      - name: c
        image: ` + cluster.BusyboxImage + `
        command: ["sh", "-c", "test -f /data/first || hostname > /data/first; exec sleep 3600"]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 64Mi}}
`

// statefulSet: each replica's claim is provisioned on its pod's node, and
// what a pod wrote stays through the pod's deletion and a server restart.
func statefulSet(t *testing.T) {
	ns := srv.Namespace(t)
	srv.KubectlT(t, statefulSetYAML, "apply", "-n", ns, "-f", "-")
	written := map[string]string{} // pod: the first pod's host name, written in its volume
	pvs := map[string]*corev1.PersistentVolume{}
	check := func(what string) {
		t.Helper()
		for _, name := range []string{"db-0", "db-1"} {
			pod := waitRunning(t, ns, name)
			claim, err := srv.ClientT(t).CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), "data-"+name, metav1.GetOptions{})
			if err != nil || claim.Status.Phase != corev1.ClaimBound {
				t.Fatalf("%s: claim data-%s is not Bound: %v %+v", what, name, err, claim.Status)
			}
			if claim.Spec.StorageClassName == nil || *claim.Spec.StorageClassName != "local-path" {
				t.Errorf("claim data-%s got class %v, want the default local-path", name, claim.Spec.StorageClassName)
			}
			pv, err := srv.ClientT(t).CoreV1().PersistentVolumes().Get(context.Background(), claim.Spec.VolumeName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := pinnedTo(pv); got != pod.Spec.NodeName {
				t.Errorf("%s: volume %s of %s is pinned to %q, its pod runs on %s", what, pv.Name, name, got, pod.Spec.NodeName)
			}
			dir := filepath.Join(dataDir(pod.Spec.NodeName), "storage", fmt.Sprintf("%s_%s_data-%s", pv.Name, ns, name))
			if pv.Spec.Local == nil || pv.Spec.Local.Path != dir {
				t.Errorf("volume %s is not a local volume at %s: %+v", pv.Name, dir, pv.Spec.PersistentVolumeSource)
			}
			if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o777 {
				t.Errorf("volume dir %s: %v %v, want a dir pods may write", dir, err, fi)
			}
			out := inPod(t, ns, name, "cat", "/data/first")
			if written[name] == "" {
				written[name] = out
			} else if out != written[name] {
				t.Errorf("%s: %s's volume holds %q, it held %q", what, name, out, written[name])
			}
			pvs[name] = pv
		}
	}
	check("at first")
	if pvs["db-0"].Spec.NodeAffinity == nil || pinnedTo(pvs["db-0"]) == pinnedTo(pvs["db-1"]) {
		t.Fatalf("both volumes on one node: %s and %s", pinnedTo(pvs["db-0"]), pinnedTo(pvs["db-1"]))
	}
	srv.KubectlT(t, "", "delete", "pod", "-n", ns, "db-0", "db-1", "--wait=true")
	check("after the pods were recreated")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitNodes(ctx); err != nil {
		t.Fatal(err)
	}
	check("after the server restarted")

	// Deleting the claims deletes the volumes and their dirs.
	srv.KubectlT(t, "", "delete", "statefulset", "-n", ns, "db", "--wait=true")
	srv.KubectlT(t, "", "delete", "pvc", "-n", ns, "data-db-0", "data-db-1", "--wait=true")
	for name, pv := range pvs {
		cluster.WaitFor(t, "volume "+pv.Name+" of "+name+" deleted", func(ctx context.Context) (bool, error) {
			_, err := srv.ClientT(t).CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if _, err := os.Stat(pv.Spec.Local.Path); !os.IsNotExist(err) {
			t.Errorf("volume dir %s still there after its claim was deleted: %v", pv.Spec.Local.Path, err)
		}
	}
}

// retain: a class of the user's with reclaim policy Retain and hostPath
// volumes keeps the dir, and the volume goes Released.
func retain(t *testing.T) {
	ns := srv.Namespace(t)
	srv.KubectlT(t, `
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: keep}
provisioner: skiff.dev/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
parameters: {volumeType: hostPath}
`, "apply", "-f", "-")
	t.Cleanup(func() { srv.Kubectl(context.Background(), "", "delete", "storageclass", "keep") })
	claimAndPod(t, ns, "kept", "keep", "ReadWriteOncePod", "", nodes[1])
	pod := waitRunning(t, ns, "kept")
	inPod(t, ns, "kept", "sh", "-c", "echo kept > /data/f")
	claim, _ := srv.ClientT(t).CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), "kept", metav1.GetOptions{})
	pvName := claim.Spec.VolumeName
	pv, err := srv.ClientT(t).CoreV1().PersistentVolumes().Get(context.Background(), pvName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pv.Spec.HostPath == nil || pinnedTo(pv) != pod.Spec.NodeName {
		t.Fatalf("volume %s is not a hostPath volume on %s: %+v", pvName, pod.Spec.NodeName, pv.Spec)
	}
	dir := pv.Spec.HostPath.Path
	t.Cleanup(func() {
		srv.ClientT(t).CoreV1().PersistentVolumes().Delete(context.Background(), pvName, metav1.DeleteOptions{})
		os.RemoveAll(dir)
	})
	srv.KubectlT(t, "", "delete", "pod", "-n", ns, "kept", "--wait=true")
	srv.KubectlT(t, "", "delete", "pvc", "-n", ns, "kept", "--wait=true")
	cluster.WaitFor(t, "volume "+pvName+" Released", func(ctx context.Context) (bool, error) {
		pv, err := srv.ClientT(t).CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
		return err == nil && pv.Status.Phase == corev1.VolumeReleased, nil
	})
	if data, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(data) != "kept\n" {
		t.Errorf("a Retain volume's dir lost its file: %q %v", data, err)
	}
}

// badInput: what local-path cannot give is refused with an event on the
// claim that names the problem and the fix; other claims still work.
func badInput(t *testing.T) {
	ns := srv.Namespace(t)
	srv.KubectlT(t, `
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: odd-parameter}
provisioner: skiff.dev/local-path
volumeBindingMode: WaitForFirstConsumer
parameters: {pathPattern: "{{ .PVC.Name }}"}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: etc}
provisioner: skiff.dev/local-path
volumeBindingMode: WaitForFirstConsumer
parameters: {nodePath: /etc}
`, "apply", "-f", "-")
	// A root that cannot be made: a file stands where a dir of it would.
	blocker, err := os.CreateTemp("/mnt", "skiff-storage-test-")
	if err != nil {
		t.Fatal(err)
	}
	blocker.Close()
	t.Cleanup(func() { os.Remove(blocker.Name()) })
	srv.KubectlT(t, fmt.Sprintf(`
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: blocked}
provisioner: skiff.dev/local-path
volumeBindingMode: WaitForFirstConsumer
parameters: {nodePath: %s/volumes}
`, blocker.Name()), "apply", "-f", "-")
	t.Cleanup(func() {
		srv.Kubectl(context.Background(), "", "delete", "storageclass", "odd-parameter", "etc", "blocked")
	})
	for _, c := range []struct{ name, class, mode, volumeMode, want string }{
		{"rwx", "", "ReadWriteMany", "", "access mode ReadWriteMany is not supported; ask for ReadWriteOnce or ReadWriteOncePod"},
		{"block", "", "ReadWriteOnce", "Block", "volumeMode Block is not supported; use volumeMode Filesystem (the default)"},
		{"odd", "odd-parameter", "ReadWriteOnce", "", `StorageClass parameter "pathPattern" is not one local-path knows: use nodePath or volumeType`},
		{"etc", "etc", "ReadWriteOnce", "", `StorageClass parameter nodePath "/etc" must be an absolute path inside`},
		{"blocked", "blocked", "ReadWriteOnce", "", "the volume root " + blocker.Name() + "/volumes on node server cannot be created (not a directory): fix it on the node, or give the StorageClass another nodePath"},
	} {
		claimAndPod(t, ns, c.name, c.class, c.mode, c.volumeMode, nodes[0])
		cluster.WaitFor(t, "an event on claim "+c.name+" saying "+c.want, func(ctx context.Context) (bool, error) {
			evs, err := srv.ClientT(t).CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=PersistentVolumeClaim,involvedObject.name=" + c.name})
			if err != nil {
				return false, err
			}
			for _, e := range evs.Items {
				if e.Reason == "ProvisioningFailed" && strings.Contains(e.Message, c.want) && !strings.Contains(e.Message, "\n") {
					return true, nil
				}
			}
			return false, nil
		})
		claim, _ := srv.ClientT(t).CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), c.name, metav1.GetOptions{})
		if claim.Status.Phase != corev1.ClaimPending {
			t.Errorf("claim %s is %s, want Pending", c.name, claim.Status.Phase)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(srv.DataDir, "storage"))
	for _, e := range entries {
		if strings.Contains(e.Name(), "_"+ns+"_") {
			t.Errorf("a refused claim left a dir: %s", e.Name())
		}
	}
	// The provisioner still serves good claims.
	claimAndPod(t, ns, "good", "", "ReadWriteOnce", "", nodes[0])
	waitRunning(t, ns, "good")
}

// nodeIdentity: with one node's credentials an attacker cannot offer
// another node's disk, or a node's /etc, as a volume, nor delete another
// node's volumes.
func nodeIdentity(t *testing.T) {
	cfg, err := srv.Config()
	if err != nil {
		t.Fatal(err)
	}
	files := filepath.Join(agent.DataDir, "agent")
	asAgent := rest.AnonymousClientConfig(cfg)
	asAgent.TLSClientConfig.CertFile, asAgent.TLSClientConfig.KeyFile = filepath.Join(files, "client-kubelet.crt"), filepath.Join(files, "client-kubelet.key")
	node, err := kubernetes.NewForConfig(asAgent)
	if err != nil {
		t.Fatal(err)
	}
	pv := func(name, pinned, path string) *corev1.PersistentVolume {
		return &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				StorageClassName:              "local-path",
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
				PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path}},
				NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
					MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{pinned}}},
				}}}},
			},
		}
	}
	ctx := context.Background()
	for _, c := range []struct {
		what string
		pv   *corev1.PersistentVolume
	}{
		{"a volume on the server's node", pv("pvc-attack-1", nodes[0], "/tmp/pvc-attack-1_ns_c")},
		{"the agent's /etc as a volume", pv("pvc-attack-2", nodes[1], "/etc")},
		{"a path that climbs out", pv("pvc-attack-3", nodes[1], "/tmp/pvc-attack-3_x/../../etc")},
	} {
		_, err := node.CoreV1().PersistentVolumes().Create(ctx, c.pv, metav1.CreateOptions{})
		if err == nil {
			srv.ClientT(t).CoreV1().PersistentVolumes().Delete(ctx, c.pv.Name, metav1.DeleteOptions{})
			t.Errorf("the agent's credentials created %s", c.what)
		} else if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			t.Errorf("creating %s: %v, want a refusal", c.what, err)
		}
	}
	// What its own provisioner makes is allowed...
	own := pv("pvc-own", nodes[1], "/tmp/skiff-storage-test/pvc-own_ns_c")
	if _, err := node.CoreV1().PersistentVolumes().Create(ctx, own, metav1.CreateOptions{}); err != nil {
		t.Fatalf("the agent cannot create a volume of its own: %v", err)
	}
	if err := node.CoreV1().PersistentVolumes().Delete(ctx, own.Name, metav1.DeleteOptions{}); err != nil {
		t.Errorf("the agent cannot delete its own volume: %v", err)
	}
	// ...but not deleting the server node's.
	theirs := pv("pvc-theirs", nodes[0], "/tmp/skiff-storage-test/pvc-theirs_ns_c")
	if _, err := srv.ClientT(t).CoreV1().PersistentVolumes().Create(ctx, theirs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer srv.ClientT(t).CoreV1().PersistentVolumes().Delete(ctx, theirs.Name, metav1.DeleteOptions{})
	if err := node.CoreV1().PersistentVolumes().Delete(ctx, theirs.Name, metav1.DeleteOptions{}); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Errorf("the agent deleting the server node's volume: %v, want a refusal", err)
	}
}

// nodeDown: a claim whose pod was placed on a node that is down waits with
// an event, and binds once the node is back.
func nodeDown(t *testing.T) {
	ns := srv.Namespace(t)
	if err := agent.Stop(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	defer func() {
		if !restarted {
			agent.StartProcess()
		}
	}()
	claimAndPod(t, ns, "later", "", "ReadWriteOnce", "", nodes[1])
	cluster.WaitFor(t, "an event on the claim of a pod placed on a stopped node", func(ctx context.Context) (bool, error) {
		evs, err := srv.ClientT(t).CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=PersistentVolumeClaim,involvedObject.name=later"})
		if err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.Reason == "ExternalProvisioning" && strings.Contains(e.Message, "skiff.dev/local-path") {
				return true, nil
			}
		}
		return false, nil
	})
	claim, _ := srv.ClientT(t).CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), "later", metav1.GetOptions{})
	if claim.Status.Phase != corev1.ClaimPending || claim.Annotations["volume.kubernetes.io/selected-node"] != nodes[1] {
		t.Fatalf("claim later is %s for node %q, want Pending for %s", claim.Status.Phase, claim.Annotations["volume.kubernetes.io/selected-node"], nodes[1])
	}
	restarted = true
	if err := agent.StartProcess(); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, ns, "later")
}

// disable: with --disable local-storage a deleted class stays deleted
// across restarts, and the server's node runs no provisioner.
func disable(t *testing.T) {
	srv.KubectlT(t, "", "delete", "storageclass", "local-path")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	srv.Extra = append(srv.Extra, "--disable", "local-storage")
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitNodes(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.ClientT(t).StorageV1().StorageClasses().Get(ctx, "local-path", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("StorageClass local-path after a restart with --disable local-storage: %v, want none", err)
	}
	if log, _ := os.ReadFile(srv.Log); strings.Count(string(log), `"Starting provisioner controller"`) != 2 {
		t.Errorf("the server's node started its provisioner %d times in three starts, want 2 (none with --disable local-storage)", strings.Count(string(log), `"Starting provisioner controller"`))
	}
}

// claimAndPod makes a claim and a pod on node that mounts it (or, for a
// Block claim, attaches it as a device).
func claimAndPod(t *testing.T, ns, name, class, mode, volumeMode, node string) {
	t.Helper()
	spec := fmt.Sprintf("accessModes: [%s]\n  resources: {requests: {storage: 16Mi}}\n", mode)
	if class != "" {
		spec += "  storageClassName: " + class + "\n"
	}
	use := "volumeMounts: [{name: v, mountPath: /data}]"
	if volumeMode != "" {
		spec += "  volumeMode: " + volumeMode + "\n"
		use = "volumeDevices: [{name: v, devicePath: /dev/v}]"
	}
	srv.KubectlT(t, fmt.Sprintf(`
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: %s}
spec:
  %s---
apiVersion: v1
kind: Pod
metadata: {name: %s}
spec:
  nodeSelector: {kubernetes.io/hostname: %s}
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: %s
    command: [sleep, "3600"]
    %s
  volumes: [{name: v, persistentVolumeClaim: {claimName: %s}}]
`, name, spec, name, node, cluster.BusyboxImage, use, name), "apply", "-n", ns, "-f", "-")
}

func waitRunning(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	cluster.WaitFor(t, "pod "+name+" running", func(ctx context.Context) (bool, error) {
		var err error
		p, err = srv.ClientT(t).CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning, nil
	})
	return p
}

// inPod runs a command in a pod until it succeeds, and returns its output.
func inPod(t *testing.T, ns, pod string, cmd ...string) string {
	t.Helper()
	var out string
	cluster.WaitFor(t, fmt.Sprintf("%q in pod %s", strings.Join(cmd, " "), pod), func(ctx context.Context) (bool, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		var err error
		out, err = srv.Kubectl(ctx, "", append([]string{"exec", "-n", ns, pod, "--"}, cmd...)...)
		return err == nil, nil
	})
	return strings.TrimSpace(out)
}

func pinnedTo(pv *corev1.PersistentVolume) string {
	if pv.Spec.NodeAffinity == nil || pv.Spec.NodeAffinity.Required == nil {
		return ""
	}
	for _, term := range pv.Spec.NodeAffinity.Required.NodeSelectorTerms {
		for _, e := range term.MatchExpressions {
			if e.Key == "kubernetes.io/hostname" && len(e.Values) == 1 {
				return e.Values[0]
			}
		}
	}
	return ""
}
