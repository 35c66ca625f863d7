package controlplane

import (
	"context"
	"net"
)

// Config is what the control plane components are built from.
type Config struct {
	DataDir              string
	Files                Files
	BindAddress          string
	Port                 int
	AdvertiseIP          net.IP
	ClusterCIDR          string
	ServiceCIDR          string
	ServiceNodePortRange string
	ClusterDomain        string
	// ControllerManagerPort and SchedulerPort are their secure ports on
	// loopback; 0 leaves upstream's 10257 and 10259.
	ControllerManagerPort, SchedulerPort int
	// LeaderElect is on when other servers may share the datastore.
	LeaderElect bool
	// SecretsEncryption encrypts Secrets at rest with Files.EncryptionConfig.
	SecretsEncryption bool
	Verbosity         int
	// The user's pass-through flags, name=value.
	APIServerArgs         []string
	ControllerManagerArgs []string
	SchedulerArgs         []string
}

// LoopbackAddress is where the components reach the API server.
func (c *Config) LoopbackAddress() string { return "127.0.0.1" }

// detach runs fn, which returns only when its context ends, and returns once
// ctx ends. Upstream components that run a leader election exit the process
// when their context ends; they are left to end with the process instead.
func detach(ctx context.Context, fn func(context.Context) error) error {
	errc := make(chan error, 1)
	go func() { errc <- fn(context.WithoutCancel(ctx)) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return nil
	}
}
