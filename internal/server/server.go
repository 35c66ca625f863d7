// Package server assembles `skiff server`: the datastore and the control plane
// (and, later, the node) as one ordered list of components.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/addons"
	"github.com/skiff-dev/skiff/internal/agent"
	"github.com/skiff-dev/skiff/internal/bootstrap"
	"github.com/skiff-dev/skiff/internal/cni"
	"github.com/skiff-dev/skiff/internal/component"
	"github.com/skiff-dev/skiff/internal/controlplane"
	"github.com/skiff-dev/skiff/internal/datastore"
	"github.com/skiff-dev/skiff/internal/join"
	"github.com/skiff-dev/skiff/internal/kubeconfig"
	"github.com/skiff-dev/skiff/internal/servicelb"
	"github.com/skiff-dev/skiff/manifests"
)

// Options are the server's settings, one per flag.
type Options struct {
	agent.NodeOptions
	DataDir                  string
	BindAddress              string
	HTTPSPort                int
	AdvertiseAddress         string
	TLSSANs                  []string
	ClusterCIDR              string
	ServiceCIDR              string
	ServiceNodePortRange     string
	DatastoreEndpoint        string
	Token                    string
	WriteKubeconfig          string
	WriteKubeconfigMode      string
	DisableAgent             bool
	Disable                  []string
	DisableScheduler         bool
	DisableControllerManager bool
	APIServerArgs            []string
	ControllerManagerArgs    []string
	SchedulerArgs            []string
	Verbosity                int
}

// Run runs the server until ctx ends or a component fails. Every check that
// can fail on bad input runs before anything is written to the data dir.
func Run(ctx context.Context, o Options) error {
	mode, err := strconv.ParseUint(o.WriteKubeconfigMode, 8, 32)
	if err != nil || mode > 0o777 {
		return fmt.Errorf("--write-kubeconfig-mode %q is not an octal file mode such as 0600 or 0644", o.WriteKubeconfigMode)
	}
	if err := addons.CheckDisable(o.Disable); err != nil {
		return err
	}
	serviceIP, err := checkNetworks(&o)
	if err != nil {
		return err
	}
	dataDir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return err
	}
	if !o.DisableAgent {
		if err := agent.CheckRange(dataDir, o.ClusterCIDR); err != nil {
			return fmt.Errorf("--cluster-cidr %s: %v (another cluster on this host?): give this cluster a range of its own with --cluster-cidr, and --service-cidr too", o.ClusterCIDR, err)
		}
	}
	if err := checkWritable(dataDir); err != nil {
		return err
	}
	store := datastore.New(filepath.Join(dataDir, "server", "db"), o.DatastoreEndpoint)
	if err := store.Check(); err != nil {
		return err
	}
	advertise, ips, err := addresses(o)
	if err != nil {
		return err
	}
	ln, err := listen(o.BindAddress, o.HTTPSPort)
	if err != nil {
		return err
	}
	defer ln.Close()

	hostname, _ := os.Hostname()
	cfg := &controlplane.Config{
		DataDir:               dataDir,
		Files:                 controlplane.Files{Dir: filepath.Join(dataDir, "server", "tls")},
		BindAddress:           o.BindAddress,
		Port:                  o.HTTPSPort,
		AdvertiseIP:           advertise,
		ClusterCIDR:           o.ClusterCIDR,
		ServiceCIDR:           o.ServiceCIDR,
		ServiceNodePortRange:  o.ServiceNodePortRange,
		ClusterDomain:         o.ClusterDomain,
		LeaderElect:           !store.Embedded(),
		Verbosity:             o.Verbosity,
		APIServerArgs:         o.APIServerArgs,
		ControllerManagerArgs: o.ControllerManagerArgs,
		SchedulerArgs:         o.SchedulerArgs,
	}
	if !agent.HostFor(dataDir).WellKnownPorts {
		ports, err := agent.FreePorts(2)
		if err != nil {
			return err
		}
		cfg.ControllerManagerPort, cfg.SchedulerPort = ports[0], ports[1]
	}
	if err := cfg.CheckArgs(); err != nil {
		return err
	}
	nodeName := agent.NodeName(o.NodeName)
	var node []component.Component
	ncfg := nodeConfig(cfg, o, nodeName, ips[0])
	if !o.DisableAgent {
		if node, err = agent.Components(ncfg); err != nil {
			return err
		}
	}
	secret, givenHash, err := serverSecret(cfg, o.Token)
	if err != nil {
		return err
	}
	joins := &join.Handler{
		ServerCAFile: cfg.Files.ServerCA(),
		Settings: join.Settings{
			ClusterCIDR: o.ClusterCIDR, ServiceCIDR: o.ServiceCIDR,
			ClusterDNS: o.ClusterDNS, ClusterDomain: o.ClusterDomain,
		},
		Client: func() (kubernetes.Interface, error) { return kubeconfig.Client(cfg.Files.Kubeconfig("admin")) },
	}
	// prepare makes the certificates and the token, once the cluster's CAs
	// are in place.
	prepare := func() error {
		clientCA, serverCA, err := ensurePKI(cfg, strings.ToLower(hostname), o.TLSSANs, ips, serviceIP)
		if err != nil {
			return fmt.Errorf("certificates in %s: %w", cfg.Files.Dir, err)
		}
		if !o.DisableAgent {
			if err := ensureNodeCerts(cfg, ncfg, ips[0], clientCA, serverCA); err != nil {
				return fmt.Errorf("node certificates: %w", err)
			}
		}
		token, err := writeToken(cfg, secret, givenHash)
		if err != nil {
			return err
		}
		joins.ServerSecret, joins.ServerCA, joins.ClientCA = token.Server, serverCA, clientCA
		return nil
	}
	if store.Embedded() {
		if err := prepare(); err != nil {
			return err
		}
	} else {
		// Servers sharing an external datastore share its CAs too.
		store.Bootstrap = func(ctx context.Context, kv clientv3.KV) error {
			return bootstrap.Sync(ctx, kv, cfg.Files.Shared(), secret, prepare)
		}
	}
	apiserver := controlplane.NewAPIServer(cfg, ln, store.ETCDServers)
	apiserver.Handlers = map[string]http.Handler{join.CACertsPath: joins, join.JoinPath: joins}
	components := []component.Component{store, apiserver}
	if !o.DisableControllerManager {
		components = append(components, controlplane.NewControllerManager(cfg))
	}
	if !o.DisableScheduler {
		components = append(components, controlplane.NewScheduler(cfg))
	}
	addOns, err := addons.New(cfg.Files.Kubeconfig("admin"), manifests.Values{ClusterDNS: o.ClusterDNS, ClusterDomain: o.ClusterDomain}, o.Disable)
	if err != nil {
		return err
	}
	components = append(components, addOns, &join.Passwords{Client: joins.Client})
	if !slices.Contains(o.Disable, "servicelb") {
		components = append(components, servicelb.New(cfg.Files.Kubeconfig("admin")))
	}
	components = append(components, node...)
	var readyErr error
	err = component.Run(ctx, components, func() {
		if o.WriteKubeconfig != "" {
			if readyErr = writeAdminKubeconfig(cfg, o.WriteKubeconfig, os.FileMode(mode)); readyErr != nil {
				klog.ErrorS(readyErr, "cannot write the admin kubeconfig", "path", o.WriteKubeconfig)
			}
		}
		klog.InfoS("skiff server is ready", "api", fmt.Sprintf("https://%s", net.JoinHostPort(advertise.String(), itoa(o.HTTPSPort))), "kubeconfig", o.WriteKubeconfig, "token", tokenFile(cfg))
	})
	if err != nil {
		return err
	}
	return readyErr
}

// checkNetworks validates the cluster's address ranges, sets the cluster DNS
// IP if not given (the tenth of the service range, as in k3s), and returns
// the kubernetes Service's IP (the first of the service range).
func checkNetworks(o *Options) (net.IP, error) {
	_, cluster, err := net.ParseCIDR(o.ClusterCIDR)
	if err != nil {
		return nil, fmt.Errorf("--cluster-cidr %q is not a CIDR such as 10.42.0.0/16", o.ClusterCIDR)
	}
	_, service, err := net.ParseCIDR(o.ServiceCIDR)
	if err != nil {
		return nil, fmt.Errorf("--service-cidr %q is not a CIDR such as 10.43.0.0/16", o.ServiceCIDR)
	}
	if cluster.Contains(service.IP) || service.Contains(cluster.IP) {
		return nil, fmt.Errorf("--cluster-cidr %s and --service-cidr %s overlap: pick ranges apart", cluster, service)
	}
	if o.ClusterDNS == "" {
		p, _ := netip.ParsePrefix(service.String())
		dns := p.Masked().Addr()
		for range 10 {
			dns = dns.Next()
		}
		o.ClusterDNS = dns.String()
	}
	if dns := net.ParseIP(o.ClusterDNS); dns == nil || !service.Contains(dns) {
		return nil, fmt.Errorf("--cluster-dns %q must be an IP inside --service-cidr %s", o.ClusterDNS, service)
	}
	lo, hi, ok := strings.Cut(o.ServiceNodePortRange, "-")
	l, lerr := strconv.Atoi(lo)
	h, herr := strconv.Atoi(hi)
	if !ok || lerr != nil || herr != nil || l < 1 || h > 65535 || l > h {
		return nil, fmt.Errorf("--service-node-port-range %q is not a port range such as 30000-32767", o.ServiceNodePortRange)
	}
	return cni.Gateway(service), nil
}

// addresses returns the IP to advertise and the node's IPs for the serving
// certificate.
func addresses(o Options) (net.IP, []net.IP, error) {
	node, err := agent.NodeIP(o.NodeIP)
	if err != nil {
		return nil, nil, err
	}
	advertise := node
	if o.AdvertiseAddress != "" {
		if advertise = net.ParseIP(o.AdvertiseAddress); advertise == nil || advertise.IsLoopback() {
			return nil, nil, fmt.Errorf("--advertise-address %q must be a non-loopback IP address of this host", o.AdvertiseAddress)
		}
	}
	return advertise, []net.IP{node, advertise}, nil
}

// checkWritable makes sure the data dir can be written, without leaving
// anything behind when it can't.
func checkWritable(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir %s cannot be created (%v): pick another with --data-dir", dir, unwrapPath(err))
	}
	f, err := os.CreateTemp(dir, ".write-check-*")
	if err != nil {
		return fmt.Errorf("data dir %s is not writable (%v): fix its permissions or pick another with --data-dir", dir, unwrapPath(err))
	}
	f.Close()
	return os.Remove(f.Name())
}

// listen binds the API server's port.
func listen(addr string, port int) (net.Listener, error) {
	if net.ParseIP(addr) == nil {
		return nil, fmt.Errorf("--bind-address %q is not an IP address", addr)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, itoa(port)))
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("port %d is already in use: stop what listens there, or pick another with --https-listen-port", port)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s port %d (%v): check --bind-address and --https-listen-port", addr, port, unwrapPath(err))
	}
	return ln, nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func itoa(i int) string { return strconv.Itoa(i) }
