// Package containerd runs the containerd built into skiff as a supervised
// child process (`skiff containerd`), with its configuration generated under
// the data dir, and imports the built-in and air-gap images into it.
package containerd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/atomicfile"
	"github.com/skiff-dev/skiff/internal/component"
	"github.com/skiff-dev/skiff/internal/registries"
)

// Namespace is the containerd namespace the CRI plugin uses.
const Namespace = "k8s.io"

// Containerd is the container runtime component.
type Containerd struct {
	Root       string // <data-dir>/agent/containerd
	State      string // runtime state, under /run
	ConfigFile string // <data-dir>/agent/etc/containerd/config.toml
	BinDir     string // CNI plugins and the shim: <data-dir>/data/bin
	CNIConfDir string
	ImagesDir  string // air-gap tarballs: <data-dir>/agent/images
	LogFile    string
	// SandboxImage is imported from SandboxTarball at start, unless the
	// last start imported the same SandboxID and the image is still there.
	SandboxImage   string
	SandboxTarball func() ([]byte, error)
	SandboxID      string
	// GCPercent is GOGC for containerd; 0 leaves Go's default. (The
	// shims, upstream's, set their own.)
	GCPercent     int
	SystemdCgroup bool
	// CertsDir is containerd's registry config_path: a hosts.toml per
	// registry, written from Registries at every start.
	CertsDir   string
	Registries *registries.Registries
	// DisableDefaultEndpoint drops a mirrored registry's own endpoint.
	DisableDefaultEndpoint bool
	proxies                map[string]*registries.Proxy // by Rewritten.Key()
	// layout is what Run wrote from Registries.
	layout registries.Layout

	// Serving is set once containerd answers and the built-in images are
	// imported. The component itself counts as started as soon as it runs,
	// so that the node can start it ahead of what does not need it (a
	// server starts it beside its control plane); a component.Gate on
	// Serving, later in the list, holds back what needs containerd.
	Serving component.Latch
}

// Config is the runtime's settings.
type Config struct {
	// DataDir is the node's data dir; RunDir holds its runtime state.
	DataDir, RunDir string
	// SandboxImage is imported from SandboxTarball at start. SandboxID
	// identifies the tarball's content (a digest of what it is built from):
	// a start after one that imported the same ID does not build it again.
	SandboxImage   string
	SandboxTarball func() ([]byte, error)
	SandboxID      string
	// GCPercent is the Go collector's setting (GOGC) for containerd:
	// skiff's own, so that a small board's setting holds for the node's
	// daemons. 0 leaves Go's default; a GOGC in the environment wins. The
	// shims inherit the environment but set GOGC=40 themselves (upstream's
	// shim package does, whatever the environment says).
	GCPercent int
	// Registries are the node's mirrors and registry settings (checked).
	Registries *registries.Registries
	// DisableDefaultEndpoint pulls a mirrored registry's images from its
	// mirrors only.
	DisableDefaultEndpoint bool
}

// New returns the component for a node. It writes nothing.
func New(cfg Config) (*Containerd, error) {
	if cfg.DataDir == "" || cfg.RunDir == "" || cfg.SandboxImage == "" || cfg.SandboxTarball == nil {
		return nil, fmt.Errorf("containerd: a data dir, a run dir and a sandbox image are needed")
	}
	regs := cfg.Registries
	if regs == nil {
		regs = &registries.Registries{}
	}
	proxies, err := regs.Proxies()
	if err != nil {
		return nil, err
	}
	return &Containerd{
		Root:                   filepath.Join(cfg.DataDir, "agent", "containerd"),
		State:                  filepath.Join(cfg.RunDir, "containerd"),
		ConfigFile:             filepath.Join(cfg.DataDir, "agent", "etc", "containerd", "config.toml"),
		BinDir:                 filepath.Join(cfg.DataDir, "data", "bin"),
		CNIConfDir:             filepath.Join(cfg.DataDir, "agent", "etc", "cni", "net.d"),
		ImagesDir:              filepath.Join(cfg.DataDir, "agent", "images"),
		LogFile:                filepath.Join(cfg.DataDir, "agent", "containerd", "containerd.log"),
		SandboxImage:           cfg.SandboxImage,
		SandboxTarball:         cfg.SandboxTarball,
		SandboxID:              cfg.SandboxID,
		GCPercent:              cfg.GCPercent,
		CertsDir:               filepath.Join(cfg.DataDir, "agent", "etc", "containerd", "certs.d"),
		Registries:             regs,
		DisableDefaultEndpoint: cfg.DisableDefaultEndpoint,
		proxies:                proxies,
	}, nil
}

// Name implements component.Component.
func (c *Containerd) Name() string { return "containerd" }

// Socket is containerd's gRPC (and CRI) socket.
func (c *Containerd) Socket() string { return filepath.Join(c.State, "containerd.sock") }

// Endpoint is the CRI endpoint for the kubelet.
func (c *Containerd) Endpoint() string { return "unix://" + c.Socket() }

// CheckRunc fails when the host has no runc.
func CheckRunc() error {
	if _, err := exec.LookPath("runc"); err != nil {
		return errors.New("runc is not installed: install it with `apt-get install runc` (or your distribution's runc package), or point --container-runtime-endpoint at another runtime")
	}
	return nil
}

// Snapshotter is overlayfs, or native where the kernel has no overlay.
func Snapshotter() string {
	if !overlaySupported() {
		return "native"
	}
	return "overlayfs"
}

func (c *Containerd) config() string {
	snapshotter := Snapshotter()
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	return strings.Join([]string{
		"# Generated by skiff at every start; edits are overwritten.",
		"version = 3",
		"root = " + q(c.Root),
		"state = " + q(c.State),
		`disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs", "io.containerd.differ.v1.erofs"]`,
		`required_plugins = ["io.containerd.grpc.v1.cri"]`,
		"",
		"[grpc]",
		"  address = " + q(c.Socket()),
		"",
		"[plugins.'io.containerd.shim.v1.manager']",
		"  socket_dir = " + q(filepath.Join(c.State, "s")),
		"",
		"[plugins.'io.containerd.grpc.v1.cri']",
		`  stream_server_address = "127.0.0.1"`,
		`  stream_server_port = "0"`,
		"",
		"[plugins.'io.containerd.cri.v1.images']",
		"  snapshotter = " + q(snapshotter),
		"",
		"[plugins.'io.containerd.cri.v1.images'.pinned_images]",
		"  sandbox = " + q(c.SandboxImage),
		"",
		"[plugins.'io.containerd.cri.v1.images'.registry]",
		"  config_path = " + q(c.CertsDir),
		"",
		c.registryAuths(),
		"[plugins.'io.containerd.cri.v1.runtime']",
		"  netns_mounts_under_state_dir = true",
		// Without CAP_SYS_RESOURCE (some containers and sandboxes) no
		// process may lower its OOM score, and runc fails to start pods
		// whose score the kubelet sets below containerd's.
		fmt.Sprintf("  restrict_oom_score_adj = %v", !hasCapability(capSysResource)),
		"",
		"[plugins.'io.containerd.cri.v1.runtime'.containerd]",
		`  default_runtime_name = "runc"`,
		"",
		"[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]",
		`  runtime_type = "io.containerd.runc.v2"`,
		"",
		"[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]",
		fmt.Sprintf("  SystemdCgroup = %v", c.SystemdCgroup),
		"  Root = " + q(filepath.Join(c.State, "runc")),
		"",
		"[plugins.'io.containerd.cri.v1.runtime'.cni]",
		// containerd brings a pod's lo up itself, so no loopback plugin
		// is shipped.
		"  use_internal_loopback = true",
		"  bin_dirs = [" + q(c.BinDir) + "]",
		"  conf_dir = " + q(c.CNIConfDir),
		"",
	}, "\n")
}

// registryAuths is the CRI image service's credentials per registry host:
// containerd reads none from hosts.toml.
func (c *Containerd) registryAuths() string {
	var b strings.Builder
	hosts := make([]string, 0, len(c.layout.Auths))
	for h := range c.layout.Auths {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	for _, h := range hosts {
		a := c.layout.Auths[h]
		fmt.Fprintf(&b, "[plugins.'io.containerd.cri.v1.images'.registry.configs.%s.auth]\n", q(h))
		for _, kv := range [][2]string{{"username", a.Username}, {"password", a.Password}, {"auth", a.Auth}, {"identitytoken", a.IdentityToken}} {
			if kv[1] != "" {
				fmt.Fprintf(&b, "  %s = %s\n", kv[0], q(kv[1]))
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

const capSysResource = 24

// hasCapability says whether this process has the capability in its
// effective set.
func hasCapability(bit uint) bool {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<bit) != 0
		}
	}
	return false
}

func overlaySupported() bool {
	data, err := os.ReadFile("/proc/filesystems")
	return err == nil && strings.Contains(string(data), "\toverlay\n")
}

// Run implements component.Component: it runs containerd and restarts it
// when it dies.
func (c *Containerd) Run(ctx context.Context) error {
	for _, d := range []string{c.Root, c.State, c.BinDir, c.CNIConfDir, c.ImagesDir, filepath.Dir(c.ConfigFile)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if err := c.serveRegistries(ctx); err != nil {
		return err
	}
	if err := atomicfile.Write(c.ConfigFile, []byte(c.config()), 0o600); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := installShim(c.BinDir); err != nil {
		return err
	}
	// A failed image import ends the component instead of leaving it
	// never ready.
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	go c.importWhenServing(ctx, fail)

	backoff := time.Second
	for {
		started := time.Now()
		err := c.runOnce(ctx, self)
		if ctx.Err() != nil {
			if cause := context.Cause(ctx); !errors.Is(cause, context.Canceled) {
				return cause
			}
			return nil
		}
		if time.Since(started) > time.Minute {
			backoff = time.Second
		}
		klog.ErrorS(err, "containerd exited; restarting", "in", backoff, "log", c.LogFile)
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// runOnce runs containerd until it exits or ctx ends.
func (c *Containerd) runOnce(ctx context.Context, self string) error {
	// The child gets SIGKILL if this thread dies: keep the thread for the
	// child's lifetime.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	logf, err := os.OpenFile(c.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(self, "containerd", "--config", c.ConfigFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = c.env(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		// Containers and their shims keep running: they are separate
		// process groups, and the kubelet finds them again after a restart.
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		return nil
	}
}

// importWhenServing waits for containerd, imports the images, then sets
// Serving.
func (c *Containerd) importWhenServing(ctx context.Context, fail context.CancelCauseFunc) {
	var cl *client.Client
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		var err error
		if cl == nil {
			if cl, err = client.New(c.Socket(), client.WithDefaultNamespace(Namespace), client.WithTimeout(time.Second)); err != nil {
				cl = nil
				return false, nil
			}
		}
		ok, err := cl.IsServing(ctx)
		return err == nil && ok, nil
	})
	if err != nil {
		return
	}
	defer cl.Close()
	if err := importImages(ctx, cl, c); err != nil {
		fail(fmt.Errorf("importing the built-in sandbox image: %w", err))
		return
	}
	c.Serving.SetReady()
}

// env is containerd's environment, from this process's.
func (c *Containerd) env(environ []string) []string {
	env := append(filterEnv(environ, "NOTIFY_SOCKET", "PATH"), "PATH="+c.BinDir+":"+getenv(environ, "PATH"))
	if c.GCPercent > 0 && getenv(environ, "GOGC") == "" {
		env = append(env, fmt.Sprintf("GOGC=%d", c.GCPercent))
	}
	return env
}

func getenv(environ []string, name string) string {
	for _, kv := range environ {
		if n, v, _ := strings.Cut(kv, "="); n == name {
			return v
		}
	}
	return ""
}

func filterEnv(env []string, drop ...string) []string {
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, d := range drop {
			keep = keep && name != d
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}
