package registry

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// runPod creates a pod running image and returns it once cond holds.
func runPod(t *testing.T, ns, name, image string, what string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	cs := srv.ClientT(t)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "c", Image: image, Command: []string{"sleep", "3600"}}},
			// The sleep ends at once on delete.
			TerminationGracePeriodSeconds: new(int64),
		},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(cluster.Context(t), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var last *corev1.Pod
	cluster.WaitFor(t, "pod "+name+" "+what, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = p
		return cond(p), nil
	})
	return last
}

func running(p *corev1.Pod) bool {
	for _, c := range p.Status.ContainerStatuses {
		if c.State.Running != nil {
			return true
		}
	}
	return false
}

// pullFailed holds once the pod's container waits on a failed pull.
func pullFailed(p *corev1.Pod) bool {
	for _, c := range p.Status.ContainerStatuses {
		if w := c.State.Waiting; w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") && w.Message != "" {
			return true
		}
	}
	return false
}

func TestPulls(t *testing.T) {
	ns := srv.Namespace(t)
	for _, c := range []struct{ name, image, why string }{
		{"mirror", "registry.skiff.test/busybox:1", "a mirror with the CA and credentials of its configs"},
		{"fallback", "fallback.skiff.test/busybox:1", "the first endpoint refuses connections; the second serves"},
		{"rewrite", "docker.io/library/busybox:1", "docker.io/library/busybox is the mirror's mirror/busybox"},
		{"wildcard", "anything.skiff.test/other/busybox:1", `the "*" mirror serves a registry with no entry of its own`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Log(c.why)
			runPod(t, ns, c.name, c.image, "running", running)
		})
	}
	t.Run("wrong credentials", func(t *testing.T) {
		p := runPod(t, ns, "badauth", "badauth.skiff.test/busybox:1", "failing to pull", pullFailed)
		msg := p.Status.ContainerStatuses[0].State.Waiting.Message
		if !strings.Contains(strings.ToLower(msg), "unauthorized") {
			t.Fatalf("the pull failed, but its message does not say unauthorized: %s", msg)
		}
	})
}

// TestSecretsStayOut checks that the registry password appears in no log,
// event or command line of the node.
func TestSecretsStayOut(t *testing.T) {
	for _, f := range []string{srv.Log, filepath.Join(srv.DataDir, "agent", "containerd", "containerd.log")} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), password) {
			t.Errorf("%s holds the registry password", f)
		}
	}
	events := srv.KubectlT(t, "", "get", "events", "-A", "-o", "yaml")
	if strings.Contains(events, password) {
		t.Errorf("an event holds the registry password")
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if data, err := os.ReadFile(p); err == nil && strings.Contains(string(data), password) {
			t.Errorf("%s holds the registry password: %q", p, data)
		}
	}
}

// TestChangeNeedsRestart: the file is read at start; a change is logged as
// needing a restart.
func TestChangeNeedsRestart(t *testing.T) {
	data, err := os.ReadFile(registriesFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(registriesFile, data, 0o600) })
	const line = "the registries file changed since this node started; restart the node to apply it"
	if log, _ := os.ReadFile(srv.Log); strings.Contains(string(log), line) {
		t.Fatal("the log says the file changed before it did")
	}
	read := false
	for _, l := range strings.Split(readLog(t), "\n") {
		read = read || strings.Contains(l, `"registries read"`) && strings.Contains(l, `file="`+registriesFile+`"`)
	}
	if !read {
		t.Fatal("the log does not say which registries file the node read")
	}
	if err := os.WriteFile(registriesFile, append(data, []byte("# changed\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	cluster.WaitFor(t, "the log to say the registries file changed", func(ctx context.Context) (bool, error) {
		log, err := os.ReadFile(srv.Log)
		return err == nil && strings.Contains(string(log), line), nil
	})
}

func readLog(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(srv.Log)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
