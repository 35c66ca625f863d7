// Package kubelet runs the upstream kubelet in the skiff process, configured
// through its own KubeletFlags and KubeletConfiguration.
package kubelet

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/klog/v2"
	kubeletapp "k8s.io/kubernetes/cmd/kubelet/app"
	"k8s.io/kubernetes/cmd/kubelet/app/options"
	kubeletconfig "k8s.io/kubernetes/pkg/kubelet/apis/config"
	"k8s.io/kubernetes/pkg/kubelet/apis/config/validation"
)

// Config is what the kubelet is built from.
type Config struct {
	NodeName      string
	NodeIP        string
	Labels        map[string]string
	Taints        []v1.Taint
	Kubeconfig    string
	ClientCA      string
	ServingCert   string
	ServingKey    string
	CRIEndpoint   string
	ClusterDNS    string
	ClusterDomain string
	ResolvConf    string
	DataDir       string
	// RootDir and CgroupRoot are the kubelet's root dir and (with the
	// cgroupfs driver) cgroup root unless --kubelet-arg sets them.
	RootDir    string
	CgroupRoot string
	// Port and HealthzPort are the kubelet's ports unless --kubelet-arg
	// sets them; 0 leaves upstream's 10250 and 10248.
	Port, HealthzPort int
	// RunDir, if set, receives kubelet.json: the root dir and cgroup root
	// in use, for `skiff killall`.
	RunDir string
	// ExtraArgs are the user's pass-through kubelet flags, name=value.
	ExtraArgs []string
}

// defaultRootDir is the upstream kubelet's root dir.
const defaultRootDir = "/var/lib/kubelet"

// Kubelet is the kubelet component.
type Kubelet struct {
	Config *Config
	server *options.KubeletServer
}

// New parses the configuration (so that bad pass-through flags fail before
// anything starts) and returns the component.
func New(cfg *Config) (*Kubelet, error) {
	kf := options.NewKubeletFlags()
	kc, err := options.NewKubeletConfiguration()
	if err != nil {
		return nil, err
	}
	systemd := systemdIsInit()
	kf.KubeConfig = cfg.Kubeconfig
	kf.HostnameOverride = cfg.NodeName
	kf.NodeIP = cfg.NodeIP
	kf.NodeLabels = cfg.Labels
	kf.CertDirectory = filepath.Join(cfg.DataDir, "agent", "kubelet", "pki")
	if cfg.RootDir != "" {
		kf.RootDirectory = cfg.RootDir
	}
	kc.ContainerRuntimeEndpoint = cfg.CRIEndpoint
	kc.RegisterWithTaints = cfg.Taints
	kc.ClusterDNS = []string{cfg.ClusterDNS}
	kc.ClusterDomain = cfg.ClusterDomain
	kc.ResolverConfig = cfg.ResolvConf
	kc.StaticPodPath = filepath.Join(cfg.DataDir, "agent", "pod-manifests")
	kc.TLSCertFile, kc.TLSPrivateKeyFile = cfg.ServingCert, cfg.ServingKey
	kc.Authentication.Anonymous.Enabled = false
	kc.Authentication.Webhook.Enabled = true
	kc.Authentication.X509.ClientCAFile = cfg.ClientCA
	kc.Authorization.Mode = kubeletconfig.KubeletAuthorizationModeWebhook
	kc.ReadOnlyPort = 0
	if cfg.Port != 0 {
		kc.Port = int32(cfg.Port)
	}
	if cfg.HealthzPort != 0 {
		kc.HealthzPort = int32(cfg.HealthzPort)
	}
	kc.FailSwapOn = false
	kc.SerializeImagePulls = false
	kc.CgroupsPerQOS = true
	kc.EnforceNodeAllocatable = []string{"pods"}
	if systemd {
		kc.CgroupDriver = "systemd"
	} else {
		kc.CgroupDriver = "cgroupfs"
		kc.CgroupRoot = cfg.CgroupRoot
		if kc.CgroupRoot == "" {
			kc.CgroupRoot = "/skiff"
		}
	}
	if !cgroupV2() {
		kc.FailCgroupV1 = false
	}

	fs := pflag.NewFlagSet("kubelet", pflag.ContinueOnError)
	fs.SetNormalizeFunc(cliflag.WordSepNormalizeFunc)
	fs.SetOutput(discard{})
	kf.AddFlags(fs)
	options.AddKubeletConfigFlags(fs, kc)
	var args []string
	for _, a := range cfg.ExtraArgs {
		args = append(args, "--"+strings.TrimLeft(a, "-"))
	}
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("--kubelet-arg: %w (see the upstream kubelet's flags)", err)
	}
	// Pod logs live beside the kubelet's root: the default /var/log/pods
	// for the default root, else in it, so that nodes sharing a host (each
	// with its own --kubelet-arg root-dir) don't garbage-collect each
	// other's logs.
	if kf.RootDirectory != defaultRootDir {
		kc.PodLogsDir = filepath.Join(kf.RootDirectory, "pod-logs")
	}
	if err := options.ValidateKubeletFlags(kf); err != nil {
		return nil, fmt.Errorf("kubelet: %w", err)
	}
	if err := validation.ValidateKubeletConfiguration(kc, utilfeature.DefaultFeatureGate); err != nil {
		return nil, fmt.Errorf("kubelet configuration: %w", err)
	}
	return &Kubelet{Config: cfg, server: &options.KubeletServer{KubeletFlags: *kf, KubeletConfiguration: *kc}}, nil
}

// Name implements component.Component.
func (k *Kubelet) Name() string { return "kubelet" }

// CgroupRoot is the cgroup the pods go under.
func (k *Kubelet) CgroupRoot() string { return k.server.CgroupRoot }

// RootDirectory is the kubelet's root dir (volumes, pod data).
func (k *Kubelet) RootDirectory() string { return k.server.RootDirectory }

// Run implements component.Component. The kubelet cannot be stopped and
// started again in one process; it ends with the process.
func (k *Kubelet) Run(ctx context.Context) error {
	if !cgroupV2() {
		klog.InfoS("this host uses cgroup v1; the kubelet runs with failCgroupV1=false (cgroup v1 support is deprecated upstream)")
	}
	if k.Config.RunDir != "" {
		if err := WriteState(k.Config.RunDir, State{RootDir: k.server.RootDirectory, CgroupRoot: k.server.CgroupRoot, CgroupDriver: k.server.CgroupDriver,
			Port: int(k.server.Port), HealthzPort: int(k.server.HealthzPort)}); err != nil {
			return err
		}
	}
	if err := prepareCgroupRoot(k.server.CgroupRoot); err != nil {
		return fmt.Errorf("cgroup root %s: %w", k.server.CgroupRoot, err)
	}
	for _, d := range []string{k.server.RootDirectory, k.server.StaticPodPath} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	deps, err := kubeletapp.UnsecuredDependencies(ctx, k.server, utilfeature.DefaultFeatureGate)
	if err != nil {
		return err
	}
	kctx := klog.NewContext(context.WithoutCancel(ctx), klog.Background().WithName("kubelet"))
	if err := podSources(kctx, k.server, deps); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		errc <- kubeletapp.Run(kctx, k.server, deps, utilfeature.DefaultFeatureGate)
	}()
	select {
	case err := <-errc:
		if err == nil {
			err = fmt.Errorf("kubelet stopped")
		}
		return err
	case <-ctx.Done():
		return nil
	}
}

// State is what a running kubelet leaves in the node's run dir: for `skiff
// killall`, where its pods' volumes and cgroups are; for its next start,
// the ports it listened on.
type State struct {
	RootDir      string `json:"rootDir"`
	CgroupRoot   string `json:"cgroupRoot"`
	CgroupDriver string `json:"cgroupDriver"`
	Port         int    `json:"port,omitempty"`
	HealthzPort  int    `json:"healthzPort,omitempty"`
}

const stateFile = "kubelet.json"

// WriteState records s in runDir.
func WriteState(runDir string, s State) error {
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(runDir, stateFile), data, 0o600)
}

// ReadState reads what WriteState recorded; false when there is nothing.
func ReadState(runDir string) (State, bool) {
	var s State
	data, err := os.ReadFile(filepath.Join(runDir, stateFile))
	if err != nil || json.Unmarshal(data, &s) != nil {
		return State{}, false
	}
	return s, true
}

// Ready implements component.Component: the kubelet's healthz answers.
func (k *Kubelet) Ready(ctx context.Context) error {
	url := fmt.Sprintf("http://%s:%d/healthz", k.server.HealthzBindAddress, k.server.HealthzPort)
	client := &http.Client{Timeout: time.Second}
	// Only while the node starts, and a loopback request: the node waits
	// for this, so a short interval.
	return wait.PollUntilContextCancel(ctx, 25*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		resp, err := client.Get(url)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// DefaultResolvConf is the host's resolver file that pods inherit and the
// cluster DNS forwards to, skipping a stub resolver on loopback that pods
// could not reach.
func DefaultResolvConf() string {
	const resolved = "/run/systemd/resolve/resolv.conf"
	data, err := os.ReadFile("/etc/resolv.conf")
	if err == nil && strings.Contains(string(data), "nameserver 127.") {
		if _, err := os.Stat(resolved); err == nil {
			return resolved
		}
	}
	return "/etc/resolv.conf"
}

func systemdIsInit() bool {
	data, err := os.ReadFile("/proc/1/comm")
	return err == nil && strings.TrimSpace(string(data)) == "systemd"
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
