// Package cli is skiff's command line.
package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/agent"
	"github.com/skiff-dev/skiff/internal/checkconfig"
	"github.com/skiff-dev/skiff/internal/config"
	"github.com/skiff-dev/skiff/internal/etcd"
	"github.com/skiff-dev/skiff/internal/host"
	"github.com/skiff-dev/skiff/internal/kubectl"
	"github.com/skiff-dev/skiff/internal/logging"
	"github.com/skiff-dev/skiff/internal/memorylimit"
	"github.com/skiff-dev/skiff/internal/server"
	"github.com/skiff-dev/skiff/internal/snapshot"
	"github.com/skiff-dev/skiff/internal/version"
)

// Main runs skiff with args (program name first) and returns the exit code.
func Main(args []string) int {
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print the skiff and Kubernetes versions"}
	cli.VersionPrinter = func(*cli.Context) { fmt.Println(version.String()) }
	app := &cli.App{
		Name:                 "skiff",
		Usage:                "a whole Kubernetes cluster in one binary",
		Version:              version.Version,
		HideHelpCommand:      true,
		EnableBashCompletion: false,
		Commands:             []*cli.Command{serverCommand(), agentCommand(), kubectlCommand(), ctrCommand(), crictlCommand(), checkConfigCommand(), tokenCommand(), snapshotCommand(), secretsEncryptCommand(), waitCommand(), killallCommand(), certificateCommand()},
		ExitErrHandler:       func(*cli.Context, error) {},
		OnUsageError:         usageError,
	}
	if err := app.Run(args); err != nil {
		fmt.Fprintf(os.Stderr, "skiff: %s\n", oneLine(err))
		return 1
	}
	return 0
}

// usageError reports a wrong flag in one line instead of printing the help.
func usageError(c *cli.Context, err error, _ bool) error {
	return fmt.Errorf("%v: see `skiff %s --help`", err, c.Command.Name)
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

func kubectlCommand() *cli.Command {
	return &cli.Command{
		Name:            "kubectl",
		Usage:           "run kubectl against the cluster (admin kubeconfig " + kubectl.DefaultKubeconfig + " by default)",
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			os.Exit(kubectl.Main(c.Args().Slice()))
			return nil
		},
	}
}

func agentCommand() *cli.Command {
	var o agent.Options
	var verbosity int
	return &cli.Command{
		Name:  "agent",
		Usage: "run a node that joins a server",
		Flags: append([]cli.Flag{
			configFlag(),
			&cli.StringFlag{Name: "server", Aliases: []string{"s"}, EnvVars: []string{"SKIFF_URL"}, Destination: &o.Server, Usage: "the server, https://SERVER:6443"},
			&cli.StringFlag{Name: "token", Aliases: []string{"t"}, EnvVars: []string{"SKIFF_TOKEN"}, Destination: &o.Token, Usage: "join token: the server's <data-dir>/server/token, or one from `skiff token create`"},
			tokenFileFlag(),
			&cli.StringFlag{Name: "data-dir", Aliases: []string{"d"}, Value: host.DefaultDataDir, Destination: &o.DataDir, Usage: "where skiff keeps its state"},
			&cli.BoolFlag{Name: "insecure-skip-ca-verify", Destination: &o.InsecureSkipCAVerify, Usage: "with a token that is only a secret (no K10<CA hash>), trust whatever CA the server sends"},
			verbosityFlag(&verbosity),
			memoryLimitFlag(),
		}, nodeFlags(&o.NodeOptions)...),
		Before:       config.Apply,
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			if c.Args().Len() > 0 {
				return fmt.Errorf("agent takes no arguments, got %q: flags start with --", c.Args().First())
			}
			nodeSlices(c, &o.NodeOptions)
			if err := logging.Setup(verbosity, nil); err != nil {
				return err
			}
			if err := memoryLimit(c); err != nil {
				return err
			}
			var err error
			if o.Token, err = tokenFrom(c, o.Token); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return agent.Run(ctx, o)
		},
	}
}

// passThrough is a repeatable flag whose values go to an upstream component
// whole: unlike a string slice flag it does not split at commas, so that
// enable-admission-plugins=NodeRestriction,EventRateLimit stays one value.
func passThrough(name, usage string) cli.Flag {
	return &cli.GenericFlag{Name: name, Usage: usage + " (repeat for more)", Value: &config.Values{}}
}

// passed is a pass-through flag's values.
func passed(c *cli.Context, name string) []string {
	if v, ok := c.Generic(name).(*config.Values); ok {
		return *v
	}
	return nil
}

func tokenFileFlag() cli.Flag {
	return &cli.StringFlag{Name: "token-file", EnvVars: []string{"SKIFF_TOKEN_FILE"}, Usage: "read --token from this file, which keeps it out of `ps`"}
}

// tokenFrom is --token, or the contents of --token-file.
func tokenFrom(c *cli.Context, token string) (string, error) {
	return fileFlag(c, "token", token)
}

// fileFlag is the value of flag name, or the contents of the file that
// name-file gives.
func fileFlag(c *cli.Context, name, value string) (string, error) {
	path := c.String(name + "-file")
	if path == "" {
		return value, nil
	}
	if value != "" {
		return "", fmt.Errorf("--%s and --%s-file both given: keep one", name, name)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--%s-file: %w", name, err)
	}
	if t := strings.TrimSpace(string(data)); t != "" {
		return t, nil
	}
	return "", fmt.Errorf("--%s-file %s is empty: put the %s in it", name, path, strings.ReplaceAll(name, "-", " "))
}

func memoryLimitFlag() cli.Flag {
	return &cli.StringFlag{Name: "memory-limit", Value: "auto",
		Usage: fmt.Sprintf("soft limit of this process's Go memory, which makes its garbage collector work harder as it nears it: a size like 600Mi, auto (%.0f%% of the memory cgroup's limit or of the machine's memory) or off", memorylimit.Share*100)}
}

// memoryLimit applies --memory-limit to this process and logs the limit.
func memoryLimit(c *cli.Context) error {
	limit, err := memorylimit.Parse(c.String("memory-limit"))
	if err != nil {
		return err
	}
	got, err := memorylimit.Set(limit)
	if err != nil {
		klog.InfoS("Go memory limit not set", "err", err)
	}
	// At -v=1 only: a command that then fails says so in one line.
	if got.Limit > 0 {
		klog.V(1).InfoS("Go memory settings", "limitMiB", got.Limit>>20, "gogc", got.GCPercent)
	} else {
		klog.V(1).InfoS("Go memory settings", "limit", "none", "gogc", got.GCPercent)
	}
	return nil
}

func verbosityFlag(v *int) cli.Flag {
	return &cli.IntFlag{Name: "v", Destination: v, Usage: "log verbosity (klog level)"}
}

// nodeFlags are the flags of a node, shared by server and agent.
func nodeFlags(n *agent.NodeOptions) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "node-name", Destination: &n.NodeName, EnvVars: []string{"SKIFF_NODE_NAME"}, Usage: "node name (default: the host name)"},
		&cli.StringFlag{Name: "node-ip", Destination: &n.NodeIP, Usage: "this node's IP (default: the address of the default route's interface)"},
		&cli.StringSliceFlag{Name: "node-label", Usage: "label the node registers with, key=value"},
		&cli.StringSliceFlag{Name: "node-taint", Usage: "taint the node registers with, key=value:Effect"},
		passThrough("kubelet-arg", "extra kubelet flag, name=value"),
		&cli.StringFlag{Name: "container-runtime-endpoint", Destination: &n.ContainerRuntimeEndpoint, Usage: "use this CRI socket instead of the built-in containerd"},
		&cli.StringFlag{Name: "resolv-conf", Destination: &n.ResolvConf, Usage: "resolver file for pods' default DNS and for names outside the cluster (default: /etc/resolv.conf, or systemd-resolved's upstream file)"},
		&cli.BoolFlag{Name: "disable-proxy", Destination: &n.DisableProxy, Usage: "do not run the built-in Service proxy (bring your own)"},
		&cli.BoolFlag{Name: "disable-network-policy", Destination: &n.DisableNetworkPolicy, Usage: "do not enforce NetworkPolicies (bring a CNI that does, such as Calico or Cilium); a server tells its agents"},
		&cli.StringFlag{Name: "flannel-iface", Destination: &n.FlannelIface, Usage: "interface the VXLAN overlay runs over (default: the one holding the node IP)"},
		&cli.StringFlag{Name: "flannel-backend", Value: "vxlan", Destination: &n.FlannelBackend, Usage: "pod network between nodes: vxlan, or none (bring your own)"},
		&cli.StringFlag{Name: "default-local-storage-path", Destination: &n.DefaultLocalStoragePath, Usage: "where the local-path StorageClass keeps this node's volumes (default: <data-dir>/storage)"},
		&cli.StringFlag{Name: "private-registry", Destination: &n.PrivateRegistry, Usage: "registry mirrors and credentials, in k3s's registries.yaml schema (default: /etc/skiff/registries.yaml when it exists)"},
		&cli.BoolFlag{Name: "disable-default-registry-endpoint", Destination: &n.DisableDefaultRegistryEndpoint, Usage: "pull the images of a registry with mirrors from its mirrors only, never from the registry itself"},
		&cli.StringSliceFlag{Name: "nodeport-addresses", Usage: "CIDRs of the node's addresses that NodePorts answer on (default: every address but loopback)"},
		&cli.IntFlag{Name: "ingress-http-port", Value: 80, Destination: &n.IngressHTTPPort, Usage: "port the node serves Ingresses on over HTTP (0: none)"},
		&cli.IntFlag{Name: "ingress-https-port", Value: 443, Destination: &n.IngressHTTPSPort, Usage: "port the node serves Ingresses on over HTTPS (0: none)"},
		&cli.StringSliceFlag{Name: "ingress-trusted-proxies", Usage: "CIDRs of proxies in front of the node whose X-Forwarded-For, -Host and -Proto headers Ingresses and Gateways keep (default: none; the node sets them)"},
	}
}

// nodeSlices reads the node's list flags: labels, taints, kubelet args,
// NodePort addresses.
func nodeSlices(c *cli.Context, n *agent.NodeOptions) {
	n.Labels, n.Taints, n.KubeletArgs = c.StringSlice("node-label"), c.StringSlice("node-taint"), passed(c, "kubelet-arg")
	n.NodePortAddresses = c.StringSlice("nodeport-addresses")
	n.IngressTrustedProxies = c.StringSlice("ingress-trusted-proxies")
}

func checkConfigCommand() *cli.Command {
	return &cli.Command{
		Name:  "check-config",
		Usage: "check that this host can run a skiff node, and say how to fix what is missing",
		Action: func(c *cli.Context) error {
			if !checkconfig.Run(os.Stdout, checkconfig.Host([]int{6443, 10250})) {
				return errors.New("this host cannot run a skiff node yet: fix what is MISSING above")
			}
			return nil
		},
	}
}

// ctrCommand and crictlCommand are listed for help only: main runs them
// before the CLI parses.
func ctrCommand() *cli.Command {
	return &cli.Command{Name: "ctr", Usage: "run containerd's ctr against the node's containerd", SkipFlagParsing: true}
}

func crictlCommand() *cli.Command {
	return &cli.Command{Name: "crictl", Usage: "list the node's containers, pods and images (ps, pods, images, version)", SkipFlagParsing: true}
}

func configFlag() cli.Flag {
	return &cli.StringFlag{
		Name: "config", Aliases: []string{"c"}, Value: config.DefaultPath, EnvVars: []string{"SKIFF_CONFIG_FILE"},
		Usage: "YAML file whose keys are this command's flag names",
	}
}

func serverCommand() *cli.Command {
	var o server.Options
	return &cli.Command{
		Name:  "server",
		Usage: "run the control plane (and the node)",
		Flags: append([]cli.Flag{
			configFlag(),
			&cli.StringFlag{Name: "data-dir", Aliases: []string{"d"}, Value: host.DefaultDataDir, Destination: &o.DataDir, Usage: "where skiff keeps its state"},
			&cli.StringFlag{Name: "bind-address", Value: "0.0.0.0", Destination: &o.BindAddress, Usage: "address the API server listens on"},
			&cli.IntFlag{Name: "https-listen-port", Value: 6443, Destination: &o.HTTPSPort, Usage: "API server port"},
			&cli.StringFlag{Name: "advertise-address", Destination: &o.AdvertiseAddress, Usage: "IP the API server advertises to the cluster (default: node IP)"},
			&cli.StringSliceFlag{Name: "tls-san", Usage: "extra host name or IP for the API server's certificate"},
			&cli.StringFlag{Name: "cluster-cidr", Value: host.DefaultClusterCIDR, Destination: &o.ClusterCIDR, Usage: "pod network"},
			&cli.StringFlag{Name: "service-cidr", Value: "10.43.0.0/16", Destination: &o.ServiceCIDR, Usage: "Service network"},
			&cli.StringFlag{Name: "cluster-dns", Destination: &o.ClusterDNS, Usage: "cluster DNS Service IP (default: the tenth address of --service-cidr, 10.43.0.10)"},
			&cli.StringFlag{Name: "cluster-domain", Value: "cluster.local", Destination: &o.ClusterDomain, Usage: "cluster DNS domain"},
			&cli.StringFlag{Name: "token", Aliases: []string{"t"}, EnvVars: []string{"SKIFF_TOKEN"}, Destination: &o.Token, Usage: "the secret of the server's join token (default: a random one, kept in <data-dir>/server/token)"},
			tokenFileFlag(),
			&cli.StringFlag{Name: "agent-token", EnvVars: []string{"SKIFF_AGENT_TOKEN"}, Destination: &o.AgentToken, Usage: "a secret for agents alone: they join with <data-dir>/server/agent-token, which cannot start a server (default: none; agents use the server token)"},
			&cli.StringFlag{Name: "agent-token-file", EnvVars: []string{"SKIFF_AGENT_TOKEN_FILE"}, Usage: "read --agent-token from this file"},
			&cli.StringFlag{Name: "service-node-port-range", Value: "30000-32767", Destination: &o.ServiceNodePortRange, Usage: "NodePort range"},
			&cli.StringFlag{Name: "datastore-endpoint", Destination: &o.DatastoreEndpoint, Usage: "kine endpoint (postgres://, mysql://, https:// etcd, sqlite://); default SQLite in the data dir"},
			&cli.BoolFlag{Name: "cluster-init", Destination: &o.ClusterInit, Usage: "start a new cluster on the embedded etcd instead of SQLite (a data dir that holds etcd's data keeps using it without this flag)"},
			&cli.DurationFlag{Name: "etcd-heartbeat-interval", Value: etcd.DefaultHeartbeatInterval, Destination: &o.ETCDHeartbeatInterval, Usage: "the embedded etcd's heartbeat interval (etcd's own default, 100ms, suits fast disks)"},
			&cli.DurationFlag{Name: "etcd-election-timeout", Value: etcd.DefaultElectionTimeout, Destination: &o.ETCDElectionTimeout, Usage: "how long the embedded etcd's members wait for a leader before electing another (etcd's own default, 1s, suits fast disks)"},
			&cli.StringFlag{Name: "write-kubeconfig", Aliases: []string{"o"}, Value: kubectl.DefaultKubeconfig, Destination: &o.WriteKubeconfig, Usage: "where to write the admin kubeconfig"},
			&cli.StringFlag{Name: "write-kubeconfig-mode", Value: "0600", Destination: &o.WriteKubeconfigMode, Usage: "file mode of the admin kubeconfig"},
			&cli.BoolFlag{Name: "disable-agent", Destination: &o.DisableAgent, Usage: "run the control plane only, no node"},
			&cli.StringFlag{Name: "gateway-address-pool", Destination: &o.GatewayAddressPool, Usage: "addresses and prefixes (192.168.1.240/29) from which each Gateway gets an address of its own, which the network must route to a node (default: none; Gateways share the nodes' addresses)"},
			&cli.StringSliceFlag{Name: "disable", Usage: "do not deploy a built-in add-on: dns, helm-controller, ingress, local-storage, metrics-server, servicelb"},
			&cli.BoolFlag{Name: "disable-helm-controller", Destination: &o.DisableHelmController, Usage: "do not install HelmCharts (the same as --disable helm-controller)"},
			&cli.BoolFlag{Name: "disable-scheduler", Destination: &o.DisableScheduler, Usage: "do not run kube-scheduler"},
			&cli.BoolFlag{Name: "disable-controller-manager", Destination: &o.DisableControllerManager, Usage: "do not run kube-controller-manager"},
			&cli.StringFlag{Name: "snapshot-schedule-cron", Destination: &o.SnapshotCron, Usage: "snapshot the embedded datastore on this cron schedule, such as \"0 */12 * * *\" (default: none)"},
			&cli.IntFlag{Name: "snapshot-retention", Value: snapshot.DefaultRetention, Destination: &o.SnapshotRetention, Usage: "how many scheduled snapshots to keep"},
			&cli.DurationFlag{Name: "certificate-check-interval", Destination: &o.CertificateCheckInterval, Hidden: true, Usage: "how often the running server renews its certificates that are close to expiry (default 12h)"},
			&cli.StringFlag{Name: "snapshot-dir", Destination: &o.SnapshotDir, Usage: "where snapshots go (default: <data-dir>/server/db/snapshots)"},
			&cli.BoolFlag{Name: "secrets-encryption", Destination: &o.SecretsEncryption, Usage: "encrypt Secrets at rest in the datastore"},
			&cli.StringFlag{Name: "secrets-encryption-provider", Value: "secretbox", Destination: &o.SecretsEncryptionProvider, Usage: "how --secrets-encryption encrypts: secretbox or aescbc"},
			&cli.BoolFlag{Name: "cluster-reset", Destination: &o.ClusterReset, Usage: "restore --cluster-reset-restore-path into the data dir, then exit"},
			&cli.StringFlag{Name: "cluster-reset-restore-path", Destination: &o.ClusterResetRestorePath, Usage: "the snapshot --cluster-reset restores"},
			passThrough("kube-apiserver-arg", "extra kube-apiserver flag, name=value"),
			passThrough("kube-controller-manager-arg", "extra kube-controller-manager flag, name=value"),
			passThrough("kube-scheduler-arg", "extra kube-scheduler flag, name=value"),
			verbosityFlag(&o.Verbosity),
			memoryLimitFlag(),
		}, nodeFlags(&o.NodeOptions)...),
		Before:       config.Apply,
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			if c.Args().Len() > 0 {
				return fmt.Errorf("server takes no arguments, got %q: flags start with --", c.Args().First())
			}
			o.TLSSANs = c.StringSlice("tls-san")
			o.APIServerArgs = passed(c, "kube-apiserver-arg")
			o.ControllerManagerArgs = passed(c, "kube-controller-manager-arg")
			o.SchedulerArgs = passed(c, "kube-scheduler-arg")
			nodeSlices(c, &o.NodeOptions)
			o.Disable = c.StringSlice("disable")
			// Logging is configured once for the whole process; the
			// components' own identical configurations are then accepted.
			if err := logging.Setup(o.Verbosity, nil); err != nil {
				return err
			}
			if err := memoryLimit(c); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			var err error
			if o.Token, err = tokenFrom(c, o.Token); err != nil {
				return err
			}
			if o.AgentToken, err = fileFlag(c, "agent-token", o.AgentToken); err != nil {
				return err
			}
			return server.Run(ctx, o)
		},
	}
}
