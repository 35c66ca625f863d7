// Package logging gives a skiff process one log: klog's text format, with
// the source file and line of each call and a logger=<component> name, for
// every component in the process (API server, kubelet, DNS, skiff's own).
//
// Upstream components in one process share klog, so its global calls do not
// say which component made them, and libraries may replace klog's logger
// (CoreDNS's kubernetes plugin does, at each start). This package installs a
// klog logger that names a line's component from the package that logged it
// when the caller gave no name, keeps the caller's own name when it did, and
// can be put back after a library replaced it (Restore).
package logging

import (
	"bytes"
	"fmt"
	"io"
	golog "log"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	"github.com/sirupsen/logrus"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/textlogger"
)

var (
	mu     sync.Mutex
	logger logr.Logger
	set    bool
)

// Setup configures the process's log once, before any component starts:
// verbosity is -v, output goes to out (stderr when nil). The upstream
// components' own logging configurations, which are the same, are then
// accepted without replacing it.
func Setup(verbosity int, out io.Writer) error {
	if out == nil {
		out = os.Stderr
	}
	// Each upstream component applies its logging configuration when it
	// starts; the first application wins and identical ones are accepted.
	logsapi.ReapplyHandling = logsapi.ReapplyHandlingIgnoreUnchanged
	c := logsapi.NewLoggingConfiguration()
	c.Verbosity = logsapi.VerbosityLevel(verbosity)
	if err := logsapi.ValidateAndApply(c, nil); err != nil {
		return fmt.Errorf("logging: %w", err)
	}
	cfg := textlogger.NewConfig(textlogger.Verbosity(verbosity), textlogger.Output(out), textlogger.Backtrace(caller))
	inner := textlogger.NewLogger(cfg).GetSink()
	mu.Lock()
	logger = logr.New(&sink{inner: inner})
	set = true
	mu.Unlock()
	Restore()
	// CoreDNS logs through the standard library's logger, with a level
	// prefix: its lines become klog lines of the dns component.
	golog.SetFlags(0)
	golog.SetPrefix("")
	golog.SetOutput(stdWriter{})
	// kine, and containerd's client, log through logrus.
	logrus.SetOutput(io.Discard)
	hooks := logrus.LevelHooks{}
	hooks.Add(logrusHook{})
	logrus.StandardLogger().ReplaceHooks(hooks)
	switch {
	case verbosity >= 6:
		logrus.SetLevel(logrus.TraceLevel)
	case verbosity >= 4:
		logrus.SetLevel(logrus.DebugLevel)
	}
	return nil
}

// Restore puts the process's logger back as klog's, after a library
// replaced it. It does nothing before Setup.
func Restore() {
	mu.Lock()
	defer mu.Unlock()
	if !set {
		return
	}
	// klog's printf-style calls keep their own formatting (an unquoted
	// message) through WriteKlogBuffer.
	klog.SetLoggerWithOptions(logger, klog.ContextualLogger(true),
		klog.WriteKlogBuffer(logger.GetSink().(*sink).WriteKlogBuffer))
}

// sink wraps klog's text sink: a record whose logger has no name gets the
// name of the component its caller belongs to.
type sink struct {
	inner logr.LogSink
	named bool
}

func (s *sink) Init(info logr.RuntimeInfo) { s.inner.Init(info) }

func (s *sink) Enabled(level int) bool { return s.inner.Enabled(level) }

func (s *sink) Info(level int, msg string, kv ...any) {
	s.target().Info(level, msg, kv...)
}

func (s *sink) Error(err error, msg string, kv ...any) {
	if _, drop := replaced.Load(msg); drop {
		return
	}
	s.target().Error(err, msg, kv...)
}

// replaced holds the error messages of upstream code that a skiff
// component logs better itself.
var replaced sync.Map

// Replace drops error lines whose message is msg from now on: the caller
// logs what they say itself (once per failure streak, say, rather than on
// every retry).
func Replace(msg string) { replaced.Store(msg, true) }

// target is the sink that prints a record: the inner one, named after the
// caller's component unless a name was given.
func (s *sink) target() logr.LogSink {
	if s.named {
		return s.inner
	}
	return s.inner.WithName(callerComponent())
}

func (s *sink) WithName(name string) logr.LogSink {
	return &sink{inner: s.inner.WithName(name), named: true}
}

func (s *sink) WithValues(kv ...any) logr.LogSink {
	return &sink{inner: s.inner.WithValues(kv...), named: s.named}
}

func (s *sink) WithCallDepth(depth int) logr.LogSink {
	// The source location is found by skipping logging frames (caller),
	// so a depth needs no bookkeeping here.
	return s
}

// WriteKlogBuffer writes a line klog formatted itself (its printf-style
// calls), with the caller's component added at its end.
func (s *sink) WriteKlogBuffer(b []byte) {
	w, ok := s.inner.(textlogger.KlogBufferWriter)
	if !ok {
		return
	}
	line := make([]byte, 0, len(b)+32)
	line = append(line, bytes.TrimRight(b, "\n")...)
	line = fmt.Appendf(line, " logger=%q\n", callerComponent())
	w.WriteKlogBuffer(line)
}

// loggingPackages are the packages a log call passes through before its
// output is written: the first frame outside them is the caller.
var loggingPackages = []string{
	"github.com/skiff-dev/skiff/internal/logging.",
	"k8s.io/klog/",
	"github.com/go-logr/",
	"log.",
	"github.com/coredns/coredns/plugin/pkg/log.",
	"github.com/coredns/coredns/plugin/kubernetes.(*loggerAdapter)",
	"github.com/sirupsen/logrus.",
	"github.com/containerd/log.",
	"runtime.",
}

// frame returns the first stack frame outside the logging packages (the
// call's source location) and the component the call belongs to: that
// frame's, or for a shared library (client-go waiting for caches, say) the
// first caller further up that belongs to a component.
func frame() (runtime.Frame, string) {
	pcs := make([]uintptr, 64)
	n := runtime.Callers(3, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	var first runtime.Frame
	name := ""
	for {
		f, more := frames.Next()
		if first.Function == "" && !isLogging(f.Function) {
			first = f
			name = Component(f.Function)
		}
		if first.Function != "" && !isLogging(f.Function) && !isStd(f.Function) {
			if c := Component(f.Function); !isLibrary(c) {
				return first, c
			}
		}
		if !more {
			return first, name
		}
	}
}

// libraries are the shared packages whose calls are named after the caller
// that used them, when one is on the stack.
var libraries = map[string]bool{"client-go": true, "apimachinery": true, "component-base": true}

func isLibrary(component string) bool { return libraries[component] }

// isStd says whether fn is of Go's standard library (its path's first
// element has no dot).
func isStd(fn string) bool {
	first := fn
	if i := strings.Index(fn, "/"); i >= 0 {
		first = fn[:i]
	} else if i := strings.Index(fn, "."); i >= 0 {
		first = fn[:i]
	}
	return !strings.Contains(first, ".")
}

func isLogging(fn string) bool {
	for _, p := range loggingPackages {
		if strings.HasPrefix(fn, p) {
			return true
		}
	}
	return false
}

// caller is klog's text sink's source location: the caller's file and line.
func caller(int) (string, int) {
	f, _ := frame()
	return f.File, f.Line
}

// callerComponent is the component a log call belongs to.
func callerComponent() string {
	_, c := frame()
	return c
}

// components map import paths to the component that logs from them, longest
// prefix first where one contains another.
var components = []struct{ prefix, name string }{
	{"github.com/skiff-dev/skiff/internal/", ""}, // the package's own name
	{"k8s.io/kubernetes/pkg/kubelet", "kubelet"},
	{"k8s.io/kubernetes/pkg/volume", "kubelet"},
	{"k8s.io/kubernetes/cmd/kubelet", "kubelet"},
	{"k8s.io/kubelet", "kubelet"},
	{"k8s.io/cri-client", "kubelet"},
	{"github.com/google/cadvisor", "kubelet"},
	{"k8s.io/kubernetes/pkg/controlplane", "apiserver"},
	{"k8s.io/kubernetes/pkg/registry", "apiserver"},
	{"k8s.io/kubernetes/pkg/kubeapiserver", "apiserver"},
	{"k8s.io/kubernetes/plugin/pkg/admission", "apiserver"},
	{"k8s.io/kubernetes/cmd/kube-apiserver", "apiserver"},
	{"k8s.io/apiserver", "apiserver"},
	{"k8s.io/kube-aggregator", "apiserver"},
	{"k8s.io/apiextensions-apiserver", "apiserver"},
	{"k8s.io/kubernetes/pkg/controller", "controller-manager"},
	{"k8s.io/kubernetes/cmd/kube-controller-manager", "controller-manager"},
	{"k8s.io/controller-manager", "controller-manager"},
	{"k8s.io/cloud-provider", "controller-manager"},
	{"k8s.io/kubernetes/pkg/scheduler", "scheduler"},
	{"k8s.io/kubernetes/cmd/kube-scheduler", "scheduler"},
	{"github.com/coredns/", "dns"},
	{"github.com/k3s-io/kine", "datastore"},
	{"go.etcd.io/", "datastore"},
	{"github.com/containerd/", "containerd"},
	{"k8s.io/client-go", "client-go"},
	{"k8s.io/apimachinery", "apimachinery"},
	{"k8s.io/component-base", "component-base"},
}

// Component names the component that logs from the function fn (its full
// name, as runtime reports it): skiff's package, or the upstream component
// the package belongs to, or the library for shared ones.
func Component(fn string) string {
	for _, c := range components {
		if !strings.HasPrefix(fn, c.prefix) {
			continue
		}
		if c.name != "" {
			return c.name
		}
		rest := fn[len(c.prefix):]
		if i := strings.IndexAny(rest, "/."); i >= 0 {
			rest = rest[:i]
		}
		return rest
	}
	// Another module: its last path element before the package's function.
	path := fn
	if i := strings.LastIndex(path, "/"); i >= 0 {
		if j := strings.Index(path[i:], "."); j >= 0 {
			path = path[:i+j]
		}
		return path[strings.LastIndex(path, "/")+1:]
	}
	if i := strings.Index(path, "."); i >= 0 {
		return path[:i]
	}
	return path
}

// stdWriter turns the standard library logger's lines into klog lines. A
// line with CoreDNS's level prefix ("[INFO] plugin/reload: ...") is the dns
// component's at that level.
type stdWriter struct{}

func (stdWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimRight(p, "\n"))
	mu.Lock()
	l := logger
	mu.Unlock()
	name := callerComponent()
	level, msg := "", line
	for _, lv := range []string{"[INFO] ", "[WARNING] ", "[ERROR] ", "[DEBUG] ", "[FATAL] "} {
		if strings.HasPrefix(line, lv) {
			level, msg = lv, line[len(lv):]
			name = "dns"
			break
		}
	}
	isError := level == "[ERROR] " || level == "[FATAL] "
	l = l.WithName(name)
	if isError {
		l.Error(nil, msg)
	} else if level == "[DEBUG] " {
		l.V(4).Info(msg)
	} else if level == "[WARNING] " {
		l.Info(msg, "severity", "warning")
	} else {
		l.Info(msg)
	}
	return len(p), nil
}

// logrusHook turns logrus entries into klog lines, their fields as values.
type logrusHook struct{}

func (logrusHook) Levels() []logrus.Level { return logrus.AllLevels }

func (logrusHook) Fire(e *logrus.Entry) error {
	mu.Lock()
	l := logger
	mu.Unlock()
	l = l.WithName(callerComponent())
	kv := make([]any, 0, 2*len(e.Data))
	keys := make([]string, 0, len(e.Data))
	for k := range e.Data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		kv = append(kv, k, e.Data[k])
	}
	switch {
	case e.Level <= logrus.ErrorLevel:
		l.Error(nil, e.Message, kv...)
	case e.Level == logrus.WarnLevel:
		l.Info(e.Message, append(kv, "severity", "warning")...)
	case e.Level == logrus.InfoLevel:
		l.Info(e.Message, kv...)
	case e.Level == logrus.DebugLevel:
		l.V(4).Info(e.Message, kv...)
	default:
		l.V(6).Info(e.Message, kv...)
	}
	return nil
}
