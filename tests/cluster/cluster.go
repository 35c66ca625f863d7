// Package cluster starts real skiff servers from the built binary for the
// end-to-end tests, and talks to them as a user would.
package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiff-dev/skiff/internal/host"
)

// Binary is the skiff binary under test ($SKIFF_BIN, else bin/skiff).
func Binary() string {
	if b := os.Getenv("SKIFF_BIN"); b != "" {
		return b
	}
	b, _ := filepath.Abs("../../bin/skiff")
	return b
}

// Server is one skiff process under test: a server (with or without a
// node of its own) or an agent. Its fields describe it; they become a
// command line only when it starts (Args), so a test changes a field, not
// an argument list.
type Server struct {
	Dir        string // holds the data dir, kubeconfig and log
	DataDir    string
	Port       int // the API port of a server
	Kubeconfig string
	Log        string
	// Bin is the skiff binary to run; empty for the one under test.
	Bin string
	// Node is set when the process runs a kubelet: a server without
	// --disable-agent, or an agent.
	Node bool
	// Join is the URL of the server an agent joins; empty for a server.
	Join string
	// Token is --token: an agent's join token, or the token a server shares
	// with the servers already on its datastore.
	Token string
	// NodeIP is --node-ip.
	NodeIP string
	// ResolvConf is the kubelet's --resolv-conf: the tests' resolver.
	ResolvConf string
	// CgroupRoot, when set, is the kubelet's cgroup root, with its root dir
	// in Dir; empty, skiff derives both from the data dir, as for a user.
	CgroupRoot string
	// Netns is the network namespace the process runs in (a host of a
	// LAN), empty for this machine's own.
	Netns string
	// APIServer overrides the admin kubeconfig's server URL, for a server
	// in a network namespace.
	APIServer string
	// Extra are further arguments, after those the fields give.
	Extra []string

	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Args is the command line the fields describe, without the binary.
func (s *Server) Args() []string {
	var a []string
	if s.Join != "" {
		a = []string{"agent", "--server", s.Join}
	} else {
		a = []string{"server", "--https-listen-port", fmt.Sprint(s.Port), "--write-kubeconfig", s.Kubeconfig}
		if !s.Node {
			a = append(a, "--disable-agent")
		}
	}
	a = append(a, "--data-dir", s.DataDir)
	if s.Token != "" {
		a = append(a, "--token", s.Token)
	}
	if s.NodeIP != "" {
		a = append(a, "--node-ip", s.NodeIP)
	}
	if s.ResolvConf != "" {
		a = append(a, "--resolv-conf", s.ResolvConf)
	}
	if s.CgroupRoot != "" {
		a = append(a, "--kubelet-arg", "cgroup-root="+s.CgroupRoot,
			"--kubelet-arg", "root-dir="+filepath.Join(s.Dir, "kubelet"))
	}
	return append(a, s.Extra...)
}

// FreePort returns a TCP port nothing listens on now.
func FreePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// New describes a control-plane-only server in dir (not started) on a free
// port; extra are more arguments.
func New(dir string, extra ...string) *Server {
	return &Server{
		Dir:        dir,
		DataDir:    filepath.Join(dir, "data"),
		Port:       FreePort(),
		Kubeconfig: filepath.Join(dir, "kubeconfig.yaml"),
		Log:        filepath.Join(dir, "server.log"),
		Extra:      extra,
	}
}

// Start starts the server process and waits until its API is ready.
func (s *Server) Start(ctx context.Context) error {
	if err := s.StartProcess(); err != nil {
		return err
	}
	return s.WaitReady(ctx)
}

// StartProcess starts the process with Args and does not wait.
func (s *Server) StartProcess() error {
	bin := s.Bin
	if bin == "" {
		bin = Binary()
	}
	if s.Netns != "" {
		// Only the network namespace: the node shares the host's mounts
		// and cgroups, as a node on its own machine would have its own.
		s.cmd = exec.Command("nsenter", append([]string{"--net=/run/netns/" + s.Netns, "--", bin}, s.Args()...)...)
	} else {
		s.cmd = exec.Command(bin, s.Args()...)
	}
	var env []string
	if s.Node {
		// A node gets only the host's programs it is known to run: one it
		// starts running without saying so fails the tests.
		path, err := hostPrograms(s.Dir)
		if err != nil {
			return err
		}
		env = append(env, "PATH="+path)
	}
	done := make(chan struct{})
	if err := startLogged(s.cmd, s.Log, env, func(err error) { s.err = err; close(done) }); err != nil {
		return err
	}
	s.done = done
	return nil
}

// hostPrograms makes dir/host-programs, which holds a link to each of the
// host's programs a node runs (host.Programs) and nothing else, and
// returns its path.
func hostPrograms(dir string) (string, error) {
	bin := filepath.Join(dir, "host-programs")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return "", err
	}
	for _, p := range host.Programs {
		target, err := exec.LookPath(p.Name)
		if err != nil {
			return "", fmt.Errorf("the tests need %s on this host: %w", p.Name, err)
		}
		link := filepath.Join(bin, p.Name)
		os.Remove(link)
		if err := os.Symlink(target, link); err != nil {
			return "", err
		}
	}
	return bin, nil
}

// startLogged starts cmd in a process group of its own, its output appended
// to the file log, the host's config file ignored and env added to its
// environment; ended gets what Wait returned once the process has ended.
func startLogged(cmd *exec.Cmd, log string, env []string, ended func(error)) error {
	logf, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(append(os.Environ(), "SKIFF_CONFIG_FILE="), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	go func() {
		err := cmd.Wait()
		logf.Close()
		ended(err)
	}()
	return nil
}

// PrintLogs writes the last lines of each node's log to stderr, for a
// failed test package; nil nodes are skipped.
func PrintLogs(lines int, nodes ...*Server) {
	for _, n := range nodes {
		if n != nil {
			fmt.Fprintf(os.Stderr, "log of %s:\n%s\n", n.Dir, n.LogTail(lines))
		}
	}
}

// WaitReady waits for the admin kubeconfig and a ready API.
func (s *Server) WaitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		select {
		case <-s.done:
			return false, fmt.Errorf("server exited: %v\n%s", s.err, s.LogTail(30))
		default:
		}
		cs, err := s.Client()
		if err != nil {
			return false, nil
		}
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok", nil
	})
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("server not ready: %v\n%s", err, s.LogTail(30))
	}
	return err
}

// Config is a client config from the admin kubeconfig.
func (s *Server) Config() (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		return nil, err
	}
	// client-go's default of 5 requests a second would make the tests wait
	// on the client, not on the server.
	cfg.QPS, cfg.Burst = 500, 1000
	if s.APIServer != "" {
		cfg.Host = s.APIServer
	}
	return cfg, nil
}

// Client is an admin clientset.
func (s *Server) Client() (*kubernetes.Clientset, error) {
	cfg, err := s.Config()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// Stop sends SIGTERM and waits for the process to exit; it returns the exit
// error (nil for a clean exit).
func (s *Server) Stop() error {
	return s.signal(syscall.SIGTERM, 90*time.Second)
}

// Kill kills the process with SIGKILL, as a crash would.
func (s *Server) Kill() error {
	s.signal(syscall.SIGKILL, 30*time.Second)
	return nil
}

func (s *Server) signal(sig syscall.Signal, timeout time.Duration) error {
	if s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	select {
	case <-s.done:
		return s.err
	default:
	}
	s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
		return s.err
	case <-time.After(timeout):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		return fmt.Errorf("server did not exit within %s of %s", timeout, sig)
	}
}

// Pid is the server's process ID.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (s *Server) Exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// LogTail returns the last n lines of the server's log.
func (s *Server) LogTail(n int) string {
	data, _ := os.ReadFile(s.Log)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Kubectl runs `skiff kubectl` with the server's admin kubeconfig.
func (s *Server) Kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	kargs := []string{"kubectl", "--kubeconfig", s.Kubeconfig}
	if s.APIServer != "" {
		kargs = append(kargs, "--server", s.APIServer)
	}
	cmd := exec.CommandContext(ctx, Binary(), append(kargs, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// StartT starts an extra server for one test in a temp dir and stops it when
// the test ends; the log is shown when the test failed.
func StartT(t *testing.T, extra ...string) *Server {
	t.Helper()
	s := New(t.TempDir(), extra...)
	s.StopAtEnd(t)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// StopAtEnd stops s with SIGTERM when the test ends, shows its log if the
// test failed, and tears a node down. Cleanups run last first, so a node
// registered after its server stops before it.
func (s *Server) StopAtEnd(t *testing.T) {
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stopping %s: %v", s.Dir, err)
		}
		if t.Failed() {
			t.Logf("log of %s:\n%s", s.Dir, s.LogTail(60))
		}
		if err := s.Teardown(); err != nil {
			t.Errorf("teardown of %s: %v", s.Dir, err)
		}
	})
}

// Run runs skiff with args to completion and returns its exit code and
// combined output.
func Run(ctx context.Context, env []string, args ...string) (int, string) {
	cmd := exec.CommandContext(ctx, Binary(), args...)
	cmd.Env = append(append(os.Environ(), "SKIFF_CONFIG_FILE="), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		return -1, err.Error()
	}
	return 0, string(out)
}
