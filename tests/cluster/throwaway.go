package cluster

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// NewThrowaway describes the README's throwaway cluster for CI: `skiff
// server` with its data dir in dir, on a free API port, with the test image
// in its air-gap folder and the tests' resolver. Its kubelet, cgroup and
// runtime dirs are the ones skiff derives from the data dir (Names); extra
// are more server flags (a second cluster's ranges, say).
func NewThrowaway(dir string, extra ...string) (*Server, error) {
	s := New(dir, extra...)
	s.Kubeconfig, s.Log, s.Node = filepath.Join(dir, "kubeconfig"), filepath.Join(dir, "skiff.log"), true
	if err := WriteBusyboxImage(filepath.Join(s.DataDir, "agent", "images")); err != nil {
		return nil, err
	}
	var err error
	s.ResolvConf, err = WriteResolvConf(dir)
	return s, err
}

// Names are the run dir, cgroup root, bridge, overlay device and nftables
// table skiff derives from the data dir.
func (s *Server) Names() NodeNames { return NamesOf(s.DataDir) }

// StartCI starts the server as the README's CI recipe does: in the
// background, then `skiff wait` until the cluster can take pods.
func (s *Server) StartCI() error {
	if err := s.StartProcess(); err != nil {
		return err
	}
	_, err := s.Skiff(4*time.Minute, "wait", "--kubeconfig", s.Kubeconfig, "--timeout", "3m")
	return err
}

// RunPod runs the test image as pod p and waits until it is Ready.
func (s *Server) RunPod() error {
	kc := []string{"kubectl", "--kubeconfig", s.Kubeconfig}
	if _, err := s.Skiff(time.Minute, append(kc, "run", "p", "--image", BusyboxImage, "--restart", "Never",
		"--image-pull-policy", "Never", "--", "sleep", "3600")...); err != nil {
		return err
	}
	_, err := s.Skiff(3*time.Minute, append(kc, "wait", "--for", "condition=Ready", "pod/p", "--timeout", "2m")...)
	return err
}

// Skiff runs the binary under test with args and returns its combined
// output.
func (s *Server) Skiff(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, Binary(), args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("skiff %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// ExitsWithin waits up to timeout for the process to end.
func (s *Server) ExitsWithin(timeout time.Duration) bool {
	if s.done == nil || s.Exited() {
		return true
	}
	select {
	case <-s.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Remove ends whatever is left of the node, whatever state it is in: the
// process group, then `skiff killall` (idempotent).
func (s *Server) Remove() {
	if s.cmd != nil && s.cmd.Process != nil {
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
	s.Teardown()
}
