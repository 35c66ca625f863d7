package controlplane

import (
	"cmp"
	"context"
	"fmt"

	"k8s.io/client-go/tools/cache"
	basecompatibility "k8s.io/component-base/compatibility"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"

	"github.com/skiff-dev/skiff/internal/component"
)

// Scheduler runs kube-scheduler.
type Scheduler struct {
	Config *Config

	component.Latch
}

// NewScheduler returns the scheduler component.
func NewScheduler(cfg *Config) (*Scheduler, error) {
	if cfg == nil {
		return nil, fmt.Errorf("kube-scheduler: a control plane config is needed")
	}
	return &Scheduler{Config: cfg}, nil
}

// Name implements component.Component.
func (s *Scheduler) Name() string { return "kube-scheduler" }

func (s *Scheduler) args() []string {
	kubeconfig := s.Config.Files.Kubeconfig("scheduler")
	return []string{
		flag("kubeconfig", kubeconfig),
		flag("authentication-kubeconfig", kubeconfig),
		flag("authorization-kubeconfig", kubeconfig),
		flag("bind-address", "127.0.0.1"),
		flag("secure-port", cmp.Or(s.Config.SchedulerPort, 10259)),
		flag("tls-cert-file", s.Config.Files.SchedulerServingCert()),
		flag("tls-private-key-file", s.Config.Files.SchedulerServingKey()),
		flag("leader-elect", s.Config.LeaderElect),
		flag("profiling", false),
		flag("v", s.Config.Verbosity),
	}
}

// Run implements component.Component.
func (s *Scheduler) Run(ctx context.Context) error {
	ctx = klog.NewContext(ctx, klog.Background().WithName("scheduler"))
	opts := options.NewOptions()
	if err := parseFlags("kube-scheduler", *opts.Flags, s.args(), s.Config.SchedulerArgs); err != nil {
		return err
	}
	if err := opts.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	fg := opts.ComponentGlobalsRegistry.FeatureGateFor(basecompatibility.DefaultKubeComponent)
	if err := logsapi.ValidateAndApply(opts.Logs, fg); err != nil {
		return err
	}
	name, err := cache.NewInformerName("kube-scheduler")
	if err != nil {
		return err
	}
	opts.InformerName = name
	cc, sched, err := app.Setup(ctx, opts)
	if err != nil {
		return err
	}
	s.SetReady()
	if cc.LeaderElection != nil {
		return detach(ctx, func(ctx context.Context) error { return app.Run(ctx, cc, sched) })
	}
	err = app.Run(ctx, cc, sched)
	if ctx.Err() != nil {
		return nil // "finished without leader elect" is how it says it stopped
	}
	return err
}
