package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/component"
	"github.com/skiff-dev/skiff/internal/host"
	"github.com/skiff-dev/skiff/internal/join"
	"github.com/skiff-dev/skiff/internal/loadbalancer"
	"github.com/skiff-dev/skiff/internal/renewal"
)

// Options are `skiff agent`'s settings.
type Options struct {
	Config
	Server string
	Token  string
	// InsecureSkipCAVerify: see join.Agent.
	InsecureSkipCAVerify bool
}

// Run joins the server and runs the node until ctx ends. A node that joined
// before starts even while its server is down, with the settings and
// certificates of its last join.
func Run(ctx context.Context, o Options) error {
	if o.Server == "" {
		return errors.New("skiff agent needs --server https://SERVER:6443 (and --token)")
	}
	dataDir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return err
	}
	ip, err := host.NodeIP(o.NodeIP)
	if err != nil {
		return err
	}
	cfg := o.Config
	cfg.DataDir = dataDir
	cfg.NodeName = host.NodeName(cfg.NodeName)
	cfg.NodeIP = ip.String()
	files := join.Files{Dir: filepath.Join(dataDir, "agent")}
	cfg.Kubeconfig, cfg.ClientCA = files.Kubeconfig(), files.ClientCA()
	cfg.ServingCert, cfg.ServingKey = files.ServingCert(), files.ServingKey()
	// Check the node's own flags before anything is written or sent (with
	// the default cluster settings, until the server gives its own).
	check := cfg
	check.ClusterCIDR, check.ClusterDNS, check.ClusterDomain = host.DefaultClusterCIDR, "10.43.0.10", "cluster.local"
	if _, err := Components(check); err != nil {
		return err
	}
	// What this start makes before the first join succeeds, it removes
	// should the join be refused: a refused start leaves nothing behind.
	undo := undoList(dataDir, files.Dir, filepath.Join(dataDir, host.LockFile))
	if err := os.MkdirAll(files.Dir, 0o700); err != nil {
		undo()
		return fmt.Errorf("data dir %s cannot be created (%v): pick another with --data-dir", dataDir, err)
	}
	release, err := host.Lock(dataDir)
	if err != nil {
		undo()
		return err
	}
	defer release()
	// The node's clients reach the API servers through the load balancer,
	// which moves to another server when theirs goes down.
	port := 0
	if host.For(dataDir).WellKnownPorts {
		port = loadbalancer.DefaultPort
	}
	lb, err := loadbalancer.New(loadbalancer.Config{Port: port, File: filepath.Join(files.Dir, "api-servers.json"), Server: o.Server, Kubeconfig: cfg.Kubeconfig})
	if err != nil {
		return err
	}
	joiner := &join.Agent{Server: o.Server, Token: o.Token, NodeName: cfg.NodeName, Addresses: []string{cfg.NodeIP}, Files: files,
		InsecureSkipCAVerify: o.InsecureSkipCAVerify}
	settings, err := joiner.Join(ctx)
	if errors.Is(err, join.ErrUnreachable) {
		stored, serr := files.Stored()
		if serr != nil {
			release()
			undo()
			return err
		}
		klog.InfoS("the server is unreachable; starting with the settings and certificates of the last join", "err", err)
		settings = stored
	} else if err != nil {
		release()
		undo()
		return err
	}
	// The cluster's settings come from the server, so that a node cannot
	// disagree with it.
	cfg.ClusterCIDR, cfg.ClusterDNS, cfg.ClusterDomain = settings.ClusterCIDR, settings.ClusterDNS, settings.ClusterDomain
	cfg.ServiceCIDR = settings.ServiceCIDR
	cfg.DisableLocalStorage = settings.DisableLocalStorage
	cfg.DisableIngress = settings.DisableIngress
	cfg.GatewayAddressPool = settings.GatewayAddressPool
	cfg.DisableNetworkPolicy = cfg.DisableNetworkPolicy || settings.DisableNetworkPolicy
	if err := CheckRange(dataDir, cfg.ClusterCIDR); err != nil {
		return fmt.Errorf("the cluster's pod network %s: %v (another cluster's node on this host?): stop that node first (skiff killall --data-dir ITS_DATA_DIR), or join from another host", cfg.ClusterCIDR, err)
	}
	if err := files.WriteKubeconfig(lb.URL()); err != nil {
		return err
	}
	components, err := Components(cfg)
	if err != nil {
		return err
	}
	renew := *joiner
	renew.Server = lb.URL()
	components = append([]component.Component{lb}, components...)
	// Renewal authenticates with the node's current client certificate.
	renewer, err := renewal.New(renewal.Config{What: "the node's certificates", Renew: func(ctx context.Context) (bool, error) {
		if !renew.Files.NeedsRenewal(time.Now()) {
			return false, nil
		}
		_, err := renew.Join(ctx)
		return err == nil, err
	}})
	if err != nil {
		return err
	}
	components = append(components, renewer)
	return component.Run(ctx, components, func() {
		klog.InfoS("skiff agent is ready", "node", cfg.NodeName, "ip", cfg.NodeIP, "server", o.Server)
	})
}

// undoList returns a function that removes those of paths that do not exist
// now, the first that does not exist with everything under it: what a start
// is about to make.
func undoList(paths ...string) func() {
	var made []string
	for _, p := range paths {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			made = append(made, p)
		}
	}
	return func() {
		for _, p := range made {
			os.RemoveAll(p)
		}
	}
}
