// Package server assembles `skiff server`: the datastore and the control plane
// (and, later, the node) as one ordered list of components.
package server

import (
	"context"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/addons"
	"github.com/skiff-dev/skiff/internal/agent"
	"github.com/skiff-dev/skiff/internal/bootstrap"
	"github.com/skiff-dev/skiff/internal/cni"
	"github.com/skiff-dev/skiff/internal/component"
	"github.com/skiff-dev/skiff/internal/containerd"
	"github.com/skiff-dev/skiff/internal/controlplane"
	"github.com/skiff-dev/skiff/internal/datastore"
	"github.com/skiff-dev/skiff/internal/deploy"
	"github.com/skiff-dev/skiff/internal/etcd"
	"github.com/skiff-dev/skiff/internal/flannel"
	"github.com/skiff-dev/skiff/internal/helmchart"
	"github.com/skiff-dev/skiff/internal/host"
	"github.com/skiff-dev/skiff/internal/ingress"
	"github.com/skiff-dev/skiff/internal/join"
	"github.com/skiff-dev/skiff/internal/kubeconfig"
	"github.com/skiff-dev/skiff/internal/leader"
	"github.com/skiff-dev/skiff/internal/loadbalancer"
	"github.com/skiff-dev/skiff/internal/metricsserver"
	"github.com/skiff-dev/skiff/internal/pki"
	"github.com/skiff-dev/skiff/internal/renewal"
	"github.com/skiff-dev/skiff/internal/secretsencrypt"
	"github.com/skiff-dev/skiff/internal/servicelb"
	"github.com/skiff-dev/skiff/internal/snapshot"
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
	AgentToken               string
	WriteKubeconfig          string
	WriteKubeconfigMode      string
	DisableAgent             bool
	Disable                  []string
	DisableScheduler         bool
	DisableControllerManager bool
	DisableHelmController    bool
	APIServerArgs            []string
	ControllerManagerArgs    []string
	SchedulerArgs            []string
	Verbosity                int
	// SnapshotCron schedules snapshots of the embedded datastore, into
	// SnapshotDir (default <data-dir>/server/db/snapshots), keeping the
	// newest SnapshotRetention.
	SnapshotCron      string
	SnapshotDir       string
	SnapshotRetention int
	// SecretsEncryption encrypts Secrets at rest with
	// SecretsEncryptionProvider (secretbox or aescbc).
	SecretsEncryption         bool
	SecretsEncryptionProvider string
	// ClusterReset with ClusterResetRestorePath restores a snapshot into
	// the data dir, then the server exits.
	ClusterReset            bool
	ClusterResetRestorePath string
	// CertificateCheckInterval is how often the running server renews its
	// certificates that are close to expiry (renewal.DefaultEvery when
	// zero).
	CertificateCheckInterval time.Duration
	// GatewayAddressPool gives each Gateway an address of its own (see
	// ingress.ParseAddressPool); empty: Gateways share the nodes'.
	GatewayAddressPool string
	// ClusterInit starts a cluster on the embedded etcd instead of
	// SQLite. A data dir that holds etcd's data keeps using it without.
	ClusterInit bool
	// ETCDHeartbeatInterval and ETCDElectionTimeout are the embedded
	// etcd's raft timings (etcd.Default* when zero).
	ETCDHeartbeatInterval, ETCDElectionTimeout time.Duration
}

// Run runs the server until ctx ends or a component fails. Every check that
// can fail on bad input runs before anything is written to the data dir.
func Run(ctx context.Context, o Options) error {
	p, err := check(o)
	if err != nil {
		return err
	}
	defer p.ln.Close()
	// Every check passed: only now is the data dir made.
	if err := os.MkdirAll(p.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir %s cannot be created (%v): pick another with --data-dir", p.cfg.DataDir, unwrapPath(err))
	}
	release, err := host.Lock(p.cfg.DataDir)
	if err != nil {
		return err
	}
	defer release()
	if o.ClusterReset {
		return p.restore()
	}
	components, err := p.components()
	if err != nil {
		return err
	}
	var readyErr error
	err = component.Run(ctx, components, func() { readyErr = p.ready() })
	if err != nil {
		return err
	}
	return readyErr
}

// plan is a server whose settings were checked: what its components need.
type plan struct {
	o         Options
	cfg       *controlplane.Config
	mode      os.FileMode // of the admin kubeconfig
	serviceIP net.IP
	advertise net.IP
	ips       []net.IP
	hostname  string
	ln        net.Listener
	node      []component.Component // empty with --disable-agent
	// cm is the controller manager; nil with --disable-controller-manager.
	cm        *controlplane.ControllerManager
	ncfg      agent.Config
	secret    string // the token's, and the hash the user gave with it
	givenHash string
	// agentSecret is the agent token's, empty without one.
	agentSecret string
	joins       *join.Handler
	// store is kine's datastore; nil on the embedded etcd.
	store *datastore.Datastore
	// etcd is the embedded etcd; nil on kine.
	etcd *etcd.ETCD
	// metrics is the resource metrics API; nil with --disable metrics-server.
	metrics *metricsserver.MetricsServer
	// snapshots saves scheduled snapshots; nil without a schedule.
	snapshots *snapshot.Scheduler
	// cas are the cluster's CAs once the data dir is prepared (with an
	// external datastore, once its files came), for the renewal.
	cas atomic.Pointer[authorities]
}

// check validates every setting and binds the API port; it writes nothing.
func check(o Options) (*plan, error) {
	mode, err := strconv.ParseUint(o.WriteKubeconfigMode, 8, 32)
	if err != nil || mode > 0o777 {
		return nil, fmt.Errorf("--write-kubeconfig-mode %q is not an octal file mode such as 0600 or 0644", o.WriteKubeconfigMode)
	}
	if err := addons.CheckDisable(o.Disable); err != nil {
		return nil, err
	}
	if _, err := ingress.ParseAddressPool(o.GatewayAddressPool); err != nil {
		return nil, fmt.Errorf("--gateway-address-pool: %v", err)
	}
	p := &plan{o: o, mode: os.FileMode(mode)}
	if p.serviceIP, err = checkNetworks(&p.o); err != nil {
		return nil, err
	}
	o = p.o
	dataDir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return nil, err
	}
	if !o.DisableAgent {
		if err := agent.CheckRange(dataDir, o.ClusterCIDR); err != nil {
			return nil, fmt.Errorf("--cluster-cidr %s: %v (another cluster on this host?): give this cluster a range of its own with --cluster-cidr, and --service-cidr too", o.ClusterCIDR, err)
		}
	}
	if err := checkWritable(dataDir); err != nil {
		return nil, err
	}
	if p.advertise, p.ips, err = addresses(o); err != nil {
		return nil, err
	}
	useETCD, err := checkDatastore(o, dataDir)
	if err != nil {
		return nil, err
	}
	// Servers that share a datastore elect one of them to run each
	// controller: an external database, or etcd, which others join.
	leaderElect := !datastore.Embedded(o.DatastoreEndpoint) || useETCD
	p.cfg = &controlplane.Config{
		DataDir:               dataDir,
		Files:                 controlplane.Files{Dir: filepath.Join(dataDir, "server", "tls")},
		BindAddress:           o.BindAddress,
		Port:                  o.HTTPSPort,
		AdvertiseIP:           p.advertise,
		ClusterCIDR:           o.ClusterCIDR,
		ServiceCIDR:           o.ServiceCIDR,
		ServiceNodePortRange:  o.ServiceNodePortRange,
		ClusterDomain:         o.ClusterDomain,
		LeaderElect:           leaderElect,
		Verbosity:             o.Verbosity,
		APIServerArgs:         o.APIServerArgs,
		ControllerManagerArgs: o.ControllerManagerArgs,
		SchedulerArgs:         o.SchedulerArgs,
		SecretsEncryption:     o.SecretsEncryption,
	}
	if o.SecretsEncryption {
		if err := secretsencrypt.CheckProvider(o.SecretsEncryptionProvider); err != nil {
			return nil, err
		}
	}
	metricsPort := metricsserver.DefaultPort
	if !host.For(dataDir).WellKnownPorts {
		ports, err := host.FreePorts(3)
		if err != nil {
			return nil, err
		}
		p.cfg.ControllerManagerPort, p.cfg.SchedulerPort, metricsPort = ports[0], ports[1], ports[2]
	}
	if !slices.Contains(o.Disable, "metrics-server") {
		f := p.cfg.Files
		if p.metrics, err = metricsserver.New(metricsserver.Config{
			Kubeconfig: f.Kubeconfig("metrics-server"), AdminKubeconfig: f.Kubeconfig("admin"),
			ServerCA: f.ServerCA(), KubeletCA: f.KubeletCABundle(), ServingCert: f.MetricsServingCert(), ServingKey: f.MetricsServingKey(),
			BindAddress: o.BindAddress, Port: metricsPort, AdvertiseIP: p.advertise, LeaderElect: p.cfg.LeaderElect,
		}); err != nil {
			return nil, err
		}
	}
	if err := p.cfg.CheckArgs(); err != nil {
		return nil, err
	}
	hostname, _ := os.Hostname()
	p.hostname = strings.ToLower(hostname)
	p.ncfg = nodeConfig(p.cfg, o, host.NodeName(o.NodeName), p.ips[0])
	if !o.DisableControllerManager {
		if p.cm, err = controlplane.NewControllerManager(p.cfg); err != nil {
			return nil, err
		}
		// The kubelet starts once the controller manager has built its
		// volume plugins (see ControllerManager.Built); what starts
		// between them does not wait.
		p.ncfg.BeforeKubelet = []component.Component{component.Gate{What: "kube-controller-manager's volume plugins", Latch: &p.cm.Built}}
	}
	if !o.DisableAgent {
		if p.node, err = agent.Components(p.ncfg); err != nil {
			return nil, err
		}
	}
	if p.secret, p.givenHash, err = serverSecret(p.cfg, o.Token); err != nil {
		return nil, err
	}
	if p.agentSecret, err = agentSecret(p.cfg, o.AgentToken); err != nil {
		return nil, err
	}
	p.joins = &join.Handler{
		TokenFile:    tokenFile(p.cfg),
		ServerCAFile: p.cfg.Files.ServerCA(),
		Settings: join.Settings{
			ClusterCIDR: o.ClusterCIDR, ServiceCIDR: o.ServiceCIDR,
			ClusterDNS: o.ClusterDNS, ClusterDomain: o.ClusterDomain,
			DisableLocalStorage:  slices.Contains(o.Disable, "local-storage"),
			DisableIngress:       slices.Contains(o.Disable, "ingress"),
			DisableNetworkPolicy: o.DisableNetworkPolicy,
			GatewayAddressPool:   o.GatewayAddressPool,
		},
		ReservedNames: apiServerNames(o.ClusterDomain, o.TLSSANs),
		Client:        func() (kubernetes.Interface, error) { return kubeconfig.Client(p.cfg.Files.Kubeconfig("admin")) },
	}
	if useETCD {
		if p.etcd, err = p.newETCD(); err != nil {
			return nil, err
		}
	} else {
		dcfg := datastore.Config{Dir: dbDir(dataDir), Endpoint: o.DatastoreEndpoint}
		if !datastore.Embedded(o.DatastoreEndpoint) {
			// Servers sharing an external datastore share its CAs too.
			dcfg.Bootstrap = func(ctx context.Context, kv clientv3.KV) error {
				return bootstrap.Sync(ctx, kv, p.shared(), p.secret, p.prepare)
			}
		}
		if p.store, err = datastore.New(dcfg); err != nil {
			return nil, err
		}
	}
	if err := p.checkSnapshots(); err != nil {
		return nil, err
	}
	if p.ln, err = listen(o.BindAddress, o.HTTPSPort); err != nil {
		return nil, err
	}
	return p, nil
}

// shared are the files every server of the cluster holds alike: the CAs
// and keys, and the encryption configuration when Secrets are encrypted.
func (p *plan) shared() []string {
	files := p.cfg.Files.Shared()
	if p.cfg.SecretsEncryption {
		files = append(files, p.cfg.Files.EncryptionConfig())
	}
	if p.etcd != nil {
		files = append(files, p.cfg.Files.ETCDShared()...)
	}
	return files
}

// prepare makes the certificates and the token, once the cluster's CAs are
// in place.
func (p *plan) prepare() error {
	cfg := p.cfg
	if cfg.SecretsEncryption {
		if err := os.MkdirAll(cfg.Files.Dir, 0o700); err != nil {
			return err
		}
		if _, err := secretsencrypt.Ensure(cfg.Files.EncryptionConfig(), p.o.SecretsEncryptionProvider); err != nil {
			return fmt.Errorf("the encryption configuration: %w", err)
		}
	}
	cas, err := ensurePKI(cfg, p.servingNames())
	if err != nil {
		return fmt.Errorf("certificates in %s: %w", cfg.Files.Dir, err)
	}
	if p.etcd != nil {
		if cas.etcd, err = pki.LoadOrCreateCA(cfg.Files.Dir, "etcd-ca", "skiff-etcd-ca"); err != nil {
			return fmt.Errorf("certificates in %s: %w", cfg.Files.Dir, err)
		}
		if _, err := ensureETCDLeaves(cfg, cas.etcd, p.etcdNames()); err != nil {
			return fmt.Errorf("etcd's certificates in %s: %w", cfg.Files.Dir, err)
		}
	}
	if !p.o.DisableAgent {
		if _, err := ensureNodeCerts(cfg, p.ncfg, p.ips[0], cas); err != nil {
			return fmt.Errorf("node certificates: %w", err)
		}
	}
	p.cas.Store(cas)
	token, err := writeToken(cfg, p.secret, p.givenHash)
	if err != nil {
		return err
	}
	if err := writeAgentToken(cfg, token.CAHash, p.agentSecret); err != nil {
		return err
	}
	p.joins.AgentSecret = p.agentSecret
	p.joins.ServerCA, p.joins.ClientCA, p.joins.KubeletCA = cas.server, cas.client, cas.kubelet
	return nil
}

// servingNames are the names and addresses of the API server's serving
// certificate.
func (p *plan) servingNames() servingNames {
	return servingNames{hostname: p.hostname, sans: p.o.TLSSANs, ips: p.ips, serviceIP: p.serviceIP}
}

// renewCerts renews, while the server runs, its leaf certificates that are
// close to expiry, its node's, and the admin kubeconfig that embeds one.
func (p *plan) renewCerts(context.Context) (bool, error) {
	cas := p.cas.Load()
	if cas == nil { // an external datastore's CAs are not there yet
		return false, nil
	}
	renewed, err := ensureLeaves(p.cfg, cas, p.servingNames())
	if err != nil {
		return renewed, err
	}
	if cas.etcd != nil {
		etcdRenewed, err := ensureETCDLeaves(p.cfg, cas.etcd, p.etcdNames())
		if renewed = renewed || etcdRenewed; err != nil {
			return renewed, err
		}
	}
	if !p.o.DisableAgent {
		node, err := ensureNodeCerts(p.cfg, p.ncfg, p.ips[0], cas)
		if renewed = renewed || node; err != nil {
			return renewed, err
		}
	}
	if renewed && p.o.WriteKubeconfig != "" {
		if err := writeAdminKubeconfig(p.cfg, p.o.WriteKubeconfig, p.mode); err != nil {
			return renewed, fmt.Errorf("the admin kubeconfig %s: %w", p.o.WriteKubeconfig, err)
		}
	}
	return renewed, nil
}

// components prepares the data dir (the embedded datastore's certificates
// and token; an external one's come with the datastore) and lists the
// server's components in start order.
func (p *plan) components() ([]component.Component, error) {
	o, cfg := p.o, p.cfg
	if datastore.Embedded(o.DatastoreEndpoint) {
		if err := p.prepare(); err != nil {
			return nil, err
		}
	}
	acfg := controlplane.APIServerConfig{Config: cfg, Listener: p.ln,
		AnonymousHandlers: map[string]http.Handler{join.CACertsPath: p.joins, join.JoinPath: p.joins}}
	var store component.Component
	if p.etcd != nil {
		store = p.etcd
		acfg.ETCDServers, acfg.DatastoreIdentity = p.etcd.ETCDServers, p.etcd.Identity
		acfg.ETCDCAFile, acfg.ETCDCertFile, acfg.ETCDKeyFile = cfg.Files.ETCDCA(), cfg.Files.ETCDClientCert(), cfg.Files.ETCDClientKey()
	} else {
		store = p.store
		acfg.ETCDServers, acfg.DatastoreIdentity = p.store.ETCDServers, p.store.Identity
	}
	apiserver, err := controlplane.NewAPIServer(acfg)
	if err != nil {
		return nil, err
	}
	passwords := &join.Passwords{Client: p.joins.Client}
	if !o.DisableAgent {
		passwords.ServerNode = p.ncfg.NodeName
		if passwords.ServerPassword, err = nodePassword(cfg); err != nil {
			return nil, err
		}
	}
	// Node passwords right after the API: a Node deleted while the rest
	// starts must not slip past the component that drops its password.
	renewer, err := renewal.New(renewal.Config{What: "the server's certificates", Every: o.CertificateCheckInterval, Renew: p.renewCerts})
	if err != nil {
		return nil, err
	}
	components := []component.Component{store, apiserver, passwords, renewer}
	// The node's containerd needs nothing of the cluster: it starts first,
	// beside the datastore and the API server instead of after them (it
	// takes about as long to serve as they do to be ready), and the node's
	// list keeps its place with a gate (see containerd.Containerd.Serving).
	node := p.node
	if i := slices.IndexFunc(node, func(c component.Component) bool { _, ok := c.(*containerd.Containerd); return ok }); i >= 0 {
		components = append([]component.Component{node[i]}, components...)
		node = slices.Delete(slices.Clone(node), i, i+1)
	}
	if p.cm != nil {
		components = append(components, p.cm)
	}
	if !o.DisableScheduler {
		sched, err := controlplane.NewScheduler(cfg)
		if err != nil {
			return nil, err
		}
		components = append(components, sched)
	}
	addOns, err := addons.New(addons.Config{Kubeconfig: cfg.Files.Kubeconfig("admin"),
		Values: manifests.Values{ClusterDNS: o.ClusterDNS, ClusterDomain: o.ClusterDomain}, Disabled: o.Disable})
	if err != nil {
		return nil, err
	}
	components = append(components, addOns)
	// After the add-ons, which define the Addon kind.
	manifestsDir, err := deploy.New(deploy.Config{Dir: filepath.Join(cfg.DataDir, "server", "manifests"), Kubeconfig: cfg.Files.Kubeconfig("admin")})
	if err != nil {
		return nil, err
	}
	components = append(components, manifestsDir)
	if !o.DisableHelmController && !slices.Contains(o.Disable, "helm-controller") {
		charts, err := helmchart.New(helmchart.Config{Kubeconfig: cfg.Files.Kubeconfig("admin"),
			StaticDir: filepath.Join(cfg.DataDir, "server", "static", "charts"), CacheDir: filepath.Join(cfg.DataDir, "server", "helm"),
			LeaderElect: cfg.LeaderElect, Identity: leader.Identity(p.advertise.String())})
		if err != nil {
			return nil, err
		}
		components = append(components, charts)
	}
	if !slices.Contains(o.Disable, "servicelb") {
		reserved := map[string]string{
			fmt.Sprintf("%d/TCP", o.HTTPSPort):               "the API server",
			fmt.Sprintf("%d/TCP", loadbalancer.DefaultPort):  "an agent's API load balancer",
			fmt.Sprintf("%d/UDP", flannel.Port):              "the VXLAN overlay",
			fmt.Sprintf("%d/TCP", metricsserver.DefaultPort): "the resource metrics API",
		}
		if !slices.Contains(o.Disable, "ingress") {
			// The nodes' Ingress ports: a LoadBalancer there would take
			// their traffic before the proxy sees it.
			for _, p := range []int{o.IngressHTTPPort, o.IngressHTTPSPort} {
				if p > 0 {
					reserved[fmt.Sprintf("%d/TCP", p)] = "Ingresses (--ingress-http-port, --ingress-https-port)"
				}
			}
		}
		lb, err := servicelb.New(servicelb.Config{Kubeconfig: cfg.Files.Kubeconfig("admin"), Reserved: reserved})
		if err != nil {
			return nil, err
		}
		components = append(components, lb)
	}
	// After the add-ons, which bind its roles.
	if p.metrics != nil {
		components = append(components, p.metrics)
	}
	if p.snapshots != nil {
		components = append(components, p.snapshots)
	}
	return append(components, node...), nil
}

// ready writes the admin kubeconfig and says where the cluster is.
func (p *plan) ready() error {
	var err error
	if p.o.WriteKubeconfig != "" {
		if err = writeAdminKubeconfig(p.cfg, p.o.WriteKubeconfig, p.mode); err != nil {
			klog.ErrorS(err, "cannot write the admin kubeconfig", "path", p.o.WriteKubeconfig)
		}
	}
	if p.agentSecret != "" {
		klog.InfoS("agents join with the agent token", "agentToken", agentTokenFile(p.cfg))
	}
	klog.InfoS("skiff server is ready", "api", fmt.Sprintf("https://%s", net.JoinHostPort(p.advertise.String(), itoa(p.o.HTTPSPort))), "kubeconfig", p.o.WriteKubeconfig, "token", tokenFile(p.cfg))
	return err
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
	node, err := host.NodeIP(o.NodeIP)
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

// checkWritable makes sure the data dir can be written, or made, without
// leaving anything behind: a refused start must not leave a data dir that
// was not there.
func checkWritable(dir string) error {
	existing := dir
	for {
		fi, err := os.Stat(existing)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("data dir %s cannot be created (%s is not a directory): pick another with --data-dir", dir, existing)
			}
			break
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			return fmt.Errorf("data dir %s cannot be created (%v): pick another with --data-dir", dir, unwrapPath(err))
		}
		existing = parent
	}
	if existing != dir {
		if err := unix.Access(existing, unix.W_OK|unix.X_OK); err != nil {
			return fmt.Errorf("data dir %s cannot be created (%s: %v): fix its permissions or pick another with --data-dir", dir, existing, err)
		}
		return nil
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
