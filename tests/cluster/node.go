package cluster

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/skiff-dev/skiff/internal/ociimage"
)

// BusyboxImage is the test image: Debian's busybox-static and the tests'
// own tool (tests/image/tool) in an OCI tarball.
const BusyboxImage = "skiff.test/busybox:1"

// WriteBusyboxImage writes the test image into dir (an air-gap folder).
func WriteBusyboxImage(dir string) error {
	bin, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return fmt.Errorf("the tests need Debian's busybox-static (apt-get install busybox-static): %w", err)
	}
	files := []ociimage.File{{Path: "bin/busybox", Mode: 0o755, Data: bin}}
	for _, applet := range []string{"sh", "sleep", "echo", "cat", "ls", "wget", "nc", "httpd", "nslookup", "hostname", "true", "false", "env", "ps", "ip", "ping", "dd", "tail", "head", "grep", "id", "mkdir", "touch", "date", "seq", "rm"} {
		files = append(files, ociimage.File{Path: "bin/" + applet, Link: "busybox"})
	}
	tool, err := testTool()
	if err != nil {
		return err
	}
	files = append(files, ociimage.File{Path: "bin/tool", Mode: 0o755, Data: tool},
		ociimage.File{Path: "tmp/.keep", Mode: 0o644})
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "busybox.tar"))
	if err != nil {
		return err
	}
	defer f.Close()
	return ociimage.Write(f, ociimage.Image{
		Name:  BusyboxImage,
		Files: files,
		Cmd:   []string{"sh"},
		Env:   []string{"PATH=/bin"},
	})
}

var toolOnce struct {
	sync.Once
	path string
	data []byte
	err  error
}

// testTool builds the image's client and server program (tests/image/tool).
func testTool() ([]byte, error) {
	toolOnce.Do(func() {
		// Built next to the skiff binary under test (bin/); hosts in network
		// namespaces run it from there too.
		out := filepath.Join(filepath.Dir(Binary()), "skiff-test-tool")
		cmd := exec.Command("go", "build", "-o", out, "github.com/skiff-dev/skiff/tests/image/tool")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			toolOnce.err = fmt.Errorf("building the test image's tool: %v: %s", err, msg)
			return
		}
		toolOnce.path = out
		toolOnce.data, toolOnce.err = os.ReadFile(out)
	})
	return toolOnce.data, toolOnce.err
}

// NewNode describes a server that is also a node, with its own cgroup root
// and kubelet root, the tests' resolver, and the test image in its air-gap
// folder.
func NewNode(dir string, extra ...string) (*Server, error) {
	s := New(dir, extra...)
	if err := s.makeNode(); err != nil {
		return nil, err
	}
	return s, nil
}

// NewAgent describes `skiff agent` in dir joining server with its token, a
// node as NewNode's.
func NewAgent(dir string, server *Server, extra ...string) (*Server, error) {
	token, err := server.JoinToken()
	if err != nil {
		return nil, err
	}
	a := &Server{
		Dir:     dir,
		DataDir: filepath.Join(dir, "data"),
		Log:     filepath.Join(dir, "agent.log"),
		Join:    fmt.Sprintf("https://127.0.0.1:%d", server.Port),
		Token:   token,
		Extra:   extra,
	}
	if err := a.makeNode(); err != nil {
		return nil, err
	}
	return a, nil
}

// makeNode makes s a node of its own: a cgroup root no other node has, the
// tests' resolver and the test image.
func (s *Server) makeNode() error {
	var b [4]byte
	rand.Read(b[:])
	resolv, err := WriteResolvConf(s.Dir)
	if err != nil {
		return err
	}
	s.Node, s.ResolvConf, s.CgroupRoot = true, resolv, "/skiff-test-"+hex.EncodeToString(b[:])
	return WriteBusyboxImage(filepath.Join(s.DataDir, "agent", "images"))
}

// Teardown removes what a stopped node left on the host (its pods'
// processes, mounts, cgroups, network devices and runtime state dir) with
// `skiff killall`, run in the node's network namespace.
func (s *Server) Teardown() error {
	if !s.Node {
		return nil
	}
	args := []string{Binary(), "killall", "--data-dir", s.DataDir}
	if s.Netns != "" {
		if _, err := os.Stat("/run/netns/" + s.Netns); err == nil {
			args = append([]string{"nsenter", "--net=/run/netns/" + s.Netns, "--"}, args...)
		}
	}
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("skiff killall --data-dir %s: %v: %s", s.DataDir, err, out)
	}
	return nil
}

// NodeNames are what skiff names after a node's non-default data dir, as its
// README says (see host.For): the tests look for these as a user
// would, with ip link and nft.
type NodeNames struct {
	RunDir, CgroupRoot, Bridge, Overlay, Table, HostPortTable, NetpolTable string
}

// NamesOf is the names of the node whose data dir is dataDir.
func NamesOf(dataDir string) NodeNames {
	h := fmt.Sprintf("%x", sha256.Sum256([]byte(dataDir)))[:8]
	return NodeNames{RunDir: "/run/skiff-" + h, CgroupRoot: "/skiff-" + h, Bridge: "cni-" + h, Overlay: "vxlan-" + h, Table: "skiff-" + h,
		HostPortTable: "skiff-" + h + "-hostports", NetpolTable: "skiff-" + h + "-netpol"}
}

func cgroupHierarchies() []string {
	var out []string
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		out = append(out, "/sys/fs/cgroup")
	}
	return out
}

func cgroupPids(root string) []int {
	var pids []int
	for _, hier := range cgroupHierarchies() {
		filepath.Walk(filepath.Join(hier, root), func(path string, info os.FileInfo, err error) error {
			if err == nil && info.Name() == "cgroup.procs" {
				data, _ := os.ReadFile(path)
				for _, f := range strings.Fields(string(data)) {
					var p int
					fmt.Sscan(f, &p)
					pids = append(pids, p)
				}
			}
			return nil
		})
	}
	return pids
}

// CRIEndpoint is the node's containerd socket, as a CRI endpoint.
func (s *Server) CRIEndpoint() string { return "unix://" + s.containerdSocket() }

func (s *Server) containerdSocket() string {
	return filepath.Join(NamesOf(s.DataDir).RunDir, "containerd", "containerd.sock")
}

// Crictl runs `skiff crictl` against the node's containerd.
func (s *Server) Crictl(args ...string) (string, error) {
	out, err := exec.Command(Binary(), append([]string{"crictl", "--runtime-endpoint", s.CRIEndpoint()}, args...)...).CombinedOutput()
	return string(out), err
}

// Ctr runs `skiff ctr` against the node's containerd, in the CRI's
// namespace.
func (s *Server) Ctr(args ...string) (string, error) {
	out, err := exec.Command(Binary(), append([]string{"ctr", "--address", s.containerdSocket(), "--namespace", "k8s.io"}, args...)...).CombinedOutput()
	return string(out), err
}

// ContainerdPid is the pid of the node's containerd: the server's child
// running `skiff containerd`, or 0.
func (s *Server) ContainerdPid() int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, st := range stats {
		data, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		// The fields after the command name; the fourth of stat is the parent.
		fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
		if len(fields) < 2 || fields[1] != fmt.Sprint(s.Pid()) {
			continue
		}
		if cmdline, _ := os.ReadFile(filepath.Join(filepath.Dir(st), "cmdline")); strings.Contains(string(cmdline), "containerd\x00--config") {
			var pid int
			fmt.Sscan(filepath.Base(filepath.Dir(st)), &pid)
			return pid
		}
	}
	return 0
}

// ShimPids are the node's runc shims: the processes `containerd-shim-runc-v2
// -namespace NS -id ID -address SOCKET` whose socket is in its run dir.
func (s *Server) ShimPids() []int {
	run := NamesOf(s.DataDir).RunDir + "/"
	var out []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, _ := os.ReadFile(p)
		args := strings.Split(string(data), "\x00")
		if len(args) < 2 || args[1] != "-namespace" || !strings.Contains(string(data), run) {
			continue
		}
		var pid int
		fmt.Sscan(filepath.Base(filepath.Dir(p)), &pid)
		out = append(out, pid)
	}
	return out
}

// SandboxPids are the node's pod sandbox processes: the shims' children
// that run /pause.
func (s *Server) SandboxPids() []int {
	var out []int
	for _, shim := range s.ShimPids() {
		files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", shim))
		for _, f := range files {
			data, _ := os.ReadFile(f)
			for _, child := range strings.Fields(string(data)) {
				cmdline, _ := os.ReadFile(filepath.Join("/proc", child, "cmdline"))
				if strings.TrimRight(string(cmdline), "\x00") == "/pause" {
					var pid int
					fmt.Sscan(child, &pid)
					out = append(out, pid)
				}
			}
		}
	}
	return out
}

// JoinToken is the server's join token, from its data dir.
func (s *Server) JoinToken() (string, error) {
	data, err := os.ReadFile(filepath.Join(s.DataDir, "server", "token"))
	if err != nil {
		return "", fmt.Errorf("the server's join token: %w", err)
	}
	return strings.TrimSpace(string(data)), nil
}
