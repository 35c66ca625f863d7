package logging_test

import (
	"bytes"
	"errors"
	golog "log"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"github.com/sirupsen/logrus"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/logging"
)

func TestComponent(t *testing.T) {
	for fn, want := range map[string]string{
		"k8s.io/kubernetes/pkg/kubelet.(*Kubelet).syncLoop":                       "kubelet",
		"k8s.io/kubernetes/pkg/kubelet/pleg.(*EventedPLEG).Start":                 "kubelet",
		"k8s.io/apiserver/pkg/server.(*GenericAPIServer).Run":                     "apiserver",
		"k8s.io/kubernetes/pkg/controlplane.(*Instance).InstallAPIs":              "apiserver",
		"k8s.io/kubernetes/pkg/controller/deployment.(*DeploymentController).Run": "controller-manager",
		"k8s.io/kubernetes/pkg/scheduler.(*Scheduler).Run":                        "scheduler",
		"github.com/coredns/coredns/plugin/reload.setup":                          "dns",
		"github.com/k3s-io/kine/pkg/logstructured/sqllog.(*SQLLog).compactor":     "datastore",
		"github.com/skiff-dev/skiff/internal/proxy.(*Proxy).Run":                  "proxy",
		"github.com/skiff-dev/skiff/internal/flannel.New.func1":                   "flannel",
		"k8s.io/client-go/tools/cache.(*Reflector).ListAndWatch":                  "client-go",
		"github.com/vishvananda/netlink.(*Handle).LinkList":                       "netlink",
		"main.main": "main",
		"github.com/skiff-dev/skiff/internal/logging_test.TestOneFormat.func1":      "logging_test",
		"k8s.io/kubernetes/pkg/scheduler/framework/plugins/noderesources.NewFit":    "scheduler",
		"k8s.io/kubernetes/plugin/pkg/admission/noderestriction.(*Plugin).Admit":    "apiserver",
		"k8s.io/apiextensions-apiserver/pkg/apiserver.(*crdHandler).ServeHTTP":      "apiserver",
		"k8s.io/kubernetes/pkg/volume/local.(*localVolumeMounter).SetUpAt":          "kubelet",
		"github.com/containerd/containerd/v2/client.(*Client).Pull":                 "containerd",
		"k8s.io/kubernetes/pkg/controller/nodeipam.(*Controller).Run":               "controller-manager",
		"go.etcd.io/etcd/client/v3.(*watchGRPCStream).run":                          "datastore",
		"k8s.io/component-base/logs/api/v1.apply":                                   "component-base",
		"k8s.io/kube-aggregator/pkg/apiserver.(*APIAggregator).PrepareRun":          "apiserver",
		"k8s.io/kubernetes/cmd/kube-controller-manager/app.Run":                     "controller-manager",
		"k8s.io/apimachinery/pkg/util/runtime.logError":                             "apimachinery",
		"github.com/skiff-dev/skiff/internal/component.Run":                         "component",
		"k8s.io/kubernetes/pkg/kubelet/kuberuntime.(*kubeGenericRuntimeManager).X":  "kubelet",
		"k8s.io/kubernetes/pkg/registry/core/service/ipallocator.(*Allocator).Next": "apiserver",
	} {
		if got := logging.Component(fn); got != want {
			t.Errorf("Component(%q) = %q, want %q", fn, got, want)
		}
	}
}

// syncBuffer is a log sink the test reads while klog may still write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.b.String()
	s.b.Reset()
	return out
}

// TestOneFormat checks each way a line reaches the log: klog's structured
// and printf-style calls, a named contextual logger, CoreDNS's standard
// library lines, and klog after a library replaced its logger.
func TestOneFormat(t *testing.T) {
	var out syncBuffer
	if err := logging.Setup(2, &out); err != nil {
		t.Fatal(err)
	}
	header := `^[IEW]\d{4} \d\d:\d\d:\d\d\.\d{6}\s+\d+ logging_test\.go:\d+\] `
	check := func(what, pattern string) {
		t.Helper()
		line := strings.TrimSpace(out.take())
		if !regexp.MustCompile(header + pattern + `$`).MatchString(line) {
			t.Errorf("%s: got %q, want the klog header with this file, then %s", what, line, pattern)
		}
	}

	klog.InfoS("structured", "k", "v")
	check("klog.InfoS", `"structured" logger="logging_test" k="v"`)
	klog.Infof("plain %d", 1)
	check("klog.Infof", `plain 1 logger="logging_test"`)
	klog.V(2).InfoS("verbose")
	check("klog.V(2) at -v 2", `"verbose" logger="logging_test"`)
	klog.V(3).InfoS("too verbose")
	if got := out.take(); got != "" {
		t.Errorf("klog.V(3) at -v 2 printed %q", got)
	}
	klog.Background().WithName("kubelet").Info("named")
	check("a named logger", `"named" logger="kubelet"`)
	klog.FromContext(klog.NewContext(t.Context(), klog.Background().WithName("kubelet"))).V(3).Info("too verbose")
	if got := out.take(); got != "" {
		t.Errorf("a contextual V(3) at -v 2 printed %q", got)
	}
	golog.Print("[INFO] plugin/reload: Running configuration SHA512 = 1")
	check("CoreDNS's log", `"plugin/reload: Running configuration SHA512 = 1" logger="dns"`)
	golog.Print("[ERROR] plugin/errors: 2 example.org. A: timeout")
	check("CoreDNS's error", `"plugin/errors: 2 example.org. A: timeout" logger="dns"`)

	// A library that sets its own logger (CoreDNS's kubernetes plugin).
	klog.SetLogger(logr.Discard())
	logging.Restore()
	klog.InfoS("restored")
	check("klog after Restore", `"restored" logger="logging_test"`)
}

func TestLogrusAndLibraries(t *testing.T) {
	var out syncBuffer
	if err := logging.Setup(2, &out); err != nil {
		t.Fatal(err)
	}
	logrus.WithField("a", 1).Warn("from logrus")
	line := strings.TrimSpace(out.take())
	if !regexp.MustCompile(`^I\d{4} .* logging_test\.go:\d+\] "from logrus" logger="logging_test" a=1 severity="warning"$`).MatchString(line) {
		t.Errorf("logrus line %q", line)
	}
}

func TestReplace(t *testing.T) {
	var out syncBuffer
	if err := logging.Setup(2, &out); err != nil {
		t.Fatal(err)
	}
	logging.Replace("Failed to scrape node")
	klog.ErrorS(errors.New("dial tcp: refused"), "Failed to scrape node", "node", "n1")
	if got := out.take(); got != "" {
		t.Errorf("a replaced error line was printed: %q", got)
	}
	klog.ErrorS(errors.New("x"), "Failed to list nodes")
	if got := out.take(); !strings.Contains(got, `"Failed to list nodes"`) {
		t.Errorf("another error line was dropped: %q", got)
	}
}
