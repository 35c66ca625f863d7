package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/component"
)

// NodeIP is the IP given with --node-ip, else the address of the interface
// that holds the default route.
func NodeIP(flag string) (net.IP, error) {
	if flag != "" {
		ip := net.ParseIP(flag)
		if ip == nil {
			return nil, fmt.Errorf("--node-ip %q is not an IP address", flag)
		}
		return ip, nil
	}
	ip, err := utilnet.ChooseHostInterface()
	if err != nil {
		return nil, fmt.Errorf("cannot find this host's IP (%v): give it with --node-ip", err)
	}
	return ip, nil
}

// NodeName is the name given with --node-name, else the host name.
func NodeName(flag string) string {
	if flag != "" {
		return flag
	}
	h, _ := os.Hostname()
	return strings.ToLower(h)
}

// Options are `skiff agent`'s settings.
type Options struct {
	Config
	Server     string
	UserConfig string // a kubeconfig that may create and approve CSRs
	Token      string
}

// Run runs a standalone node joined to the server until ctx ends.
func Run(ctx context.Context, o Options) error {
	if o.Token != "" {
		return errors.New("joining with --token is not available in this release: give the server's admin kubeconfig with --kubeconfig")
	}
	if o.UserConfig == "" {
		return errors.New("skiff agent needs credentials: give a kubeconfig for the server with --kubeconfig (for example its /etc/skiff/skiff.yaml)")
	}
	if _, err := os.Stat(o.UserConfig); err != nil {
		return fmt.Errorf("--kubeconfig: %w", err)
	}
	dataDir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dataDir, "agent"), 0o700); err != nil {
		return fmt.Errorf("data dir %s cannot be created (%v): pick another with --data-dir", dataDir, err)
	}
	ip, err := NodeIP(o.NodeIP)
	if err != nil {
		return err
	}
	cfg := o.Config
	cfg.DataDir = dataDir
	cfg.NodeName = NodeName(cfg.NodeName)
	cfg.NodeIP = ip.String()
	// A joined node does not learn the server's settings yet: it assumes
	// the default pod network (for the proxy's masquerading decisions).
	cfg.ClusterCIDR = DefaultClusterCIDR
	cfg.Paths()
	components, err := Components(cfg)
	if err != nil {
		return err
	}
	if err := CredentialsFromKubeconfig(ctx, cfg, o.Server, o.UserConfig); err != nil {
		return err
	}
	return component.Run(ctx, components, func() {
		klog.InfoS("skiff agent is ready", "node", cfg.NodeName, "ip", cfg.NodeIP)
	})
}
