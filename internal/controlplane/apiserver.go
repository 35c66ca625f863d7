package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	basecompatibility "k8s.io/component-base/compatibility"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/component-base/version"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	rbacrest "k8s.io/kubernetes/pkg/registry/rbac/rest"
	schedulingrest "k8s.io/kubernetes/pkg/registry/scheduling/rest"

	"github.com/skiff-dev/skiff/internal/atomicfile"
	"github.com/skiff-dev/skiff/internal/component"
)

// APIServerConfig is the API server's settings beside the control plane's.
type APIServerConfig struct {
	*Config
	// Listener is the secure port, bound before anything is written so that a
	// port in use fails start-up early.
	Listener net.Listener
	// ETCDServers gives the datastore's address once it is ready.
	ETCDServers func() string
	// ETCDCAFile, ETCDCertFile and ETCDKeyFile are the API server's TLS
	// towards an etcd that asks clients for a certificate (the embedded
	// one); empty for kine.
	ETCDCAFile, ETCDCertFile, ETCDKeyFile string
	// AnonymousHandlers are served on the API port beside the API, by path,
	// to anonymous clients too (a joining node has only its token, which
	// its handler checks): nothing else but the health endpoints is open
	// to them.
	AnonymousHandlers map[string]http.Handler
	// DatastoreIdentity names the database behind ETCDServers (see
	// policyStamp); empty when it cannot be told.
	DatastoreIdentity func() string
}

// APIServer runs kube-apiserver.
type APIServer struct {
	APIServerConfig
	component.Latch
}

// NewAPIServer returns the API server component.
func NewAPIServer(cfg APIServerConfig) (*APIServer, error) {
	if cfg.Config == nil || cfg.Listener == nil || cfg.ETCDServers == nil {
		return nil, fmt.Errorf("kube-apiserver: a control plane config, a listener and a datastore are needed")
	}
	return &APIServer{APIServerConfig: cfg}, nil
}

// Name implements component.Component.
func (a *APIServer) Name() string { return "kube-apiserver" }

func (a *APIServer) args() []string {
	c, f := a.Config, a.Config.Files
	var extra []string
	if c.SecretsEncryption {
		// Reloaded when the file changes: keys rotate without a restart.
		extra = []string{flag("encryption-provider-config", f.EncryptionConfig()), flag("encryption-provider-config-automatic-reload", true)}
	}
	if a.ETCDCAFile != "" {
		extra = append(extra, flag("etcd-cafile", a.ETCDCAFile), flag("etcd-certfile", a.ETCDCertFile), flag("etcd-keyfile", a.ETCDKeyFile))
	}
	return append(extra,
		flag("advertise-address", c.AdvertiseIP),
		flag("bind-address", c.BindAddress),
		flag("secure-port", c.Port),
		flag("etcd-servers", a.ETCDServers()),
		flag("allow-privileged", true),
		flag("authorization-mode", "Node,RBAC"),
		flag("enable-admission-plugins", "NodeRestriction"),
		flag("authentication-config", f.AuthenticationConfig()),
		flag("client-ca-file", f.ClientCA()),
		flag("tls-cert-file", f.ServingCert()),
		flag("tls-private-key-file", f.ServingKey()),
		flag("kubelet-client-certificate", f.APIServerClientCert()),
		flag("kubelet-client-key", f.APIServerClientKey()),
		flag("kubelet-certificate-authority", f.KubeletCABundle()),
		flag("kubelet-preferred-address-types", "InternalIP,ExternalIP,Hostname"),
		flag("service-account-key-file", f.ServiceAccountKey()),
		flag("service-account-signing-key-file", f.ServiceAccountKey()),
		flag("service-account-issuer", "https://kubernetes.default.svc."+c.ClusterDomain),
		flag("api-audiences", "https://kubernetes.default.svc."+c.ClusterDomain+",skiff"),
		flag("service-cluster-ip-range", c.ServiceCIDR),
		flag("service-node-port-range", c.ServiceNodePortRange),
		flag("requestheader-client-ca-file", f.RequestHeaderCA()),
		flag("requestheader-allowed-names", "system:auth-proxy"),
		flag("requestheader-username-headers", "X-Remote-User"),
		flag("requestheader-group-headers", "X-Remote-Group"),
		flag("requestheader-extra-headers-prefix", "X-Remote-Extra-"),
		flag("proxy-client-cert-file", f.AuthProxyCert()),
		flag("proxy-client-key-file", f.AuthProxyKey()),
		flag("enable-aggregator-routing", true),
		flag("cert-dir", c.DataDir+"/server/tls/temporary-certs"),
		flag("profiling", false),
		// The in-process kubelet keeps its watches open until the process
		// ends: close them at shutdown instead of waiting for them.
		flag("shutdown-watch-termination-grace-period", "2s"),
		flag("v", c.Verbosity),
	)
}

// Run implements component.Component.
func (a *APIServer) Run(ctx context.Context) error {
	ctx = klog.NewContext(ctx, klog.Background().WithName("apiserver"))
	if err := a.writeAuthenticationConfig(); err != nil {
		return err
	}
	s := options.NewServerRunOptions()
	if err := parseFlags("kube-apiserver", s.Flags(), a.args(), a.Config.APIServerArgs); err != nil {
		return err
	}
	s.SecureServing.Listener = a.Listener
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	// The API server's loopback clients should not log their own warnings.
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	fg := s.GenericServerRunOptions.ComponentGlobalsRegistry.FeatureGateFor(basecompatibility.DefaultKubeComponent)
	if err := logsapi.ValidateAndApply(s.Logs, fg); err != nil {
		return err
	}
	completed, err := s.Complete(ctx)
	if err != nil {
		return err
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return utilerrors.NewAggregate(errs)
	}
	// What app.Run does, with our handlers added to the outermost server's
	// mux before it serves.
	if completed.InformerName == nil {
		if completed.InformerName, err = cache.NewInformerName("kube-apiserver"); err != nil {
			return err
		}
	}
	config, err := app.NewConfig(completed)
	if err != nil {
		return err
	}
	// The policy hooks run in a hook of ours (see ensurePolicy).
	config.KubeAPIs.ControlPlane.Generic.DisabledPostStartHooks.Insert(policyHooks...)
	completedConfig, err := config.Complete()
	if err != nil {
		return err
	}
	server, err := app.CreateServerChain(completedConfig)
	if err != nil {
		return err
	}
	// At shutdown, in-flight requests drain and watches end before the API
	// server exits whatever this says; it bounds only the wait for clients
	// to hang up after the GOAWAY, which Go's HTTP/2 clients do only when
	// they next use an idle connection: the rest of a second otherwise.
	server.GenericAPIServer.ShutdownTimeout = shutdownTimeout
	for path, h := range a.AnonymousHandlers {
		server.GenericAPIServer.Handler.NonGoRestfulMux.Handle(path, h)
	}
	server.GenericAPIServer.AddPostStartHookOrDie("skiff/bootstrap-policy", a.ensurePolicy)
	prepared, err := server.PrepareRun()
	if err != nil {
		return err
	}
	go a.waitReady(ctx)
	return prepared.Run(ctx)
}

// shutdownTimeout bounds the API server's wait for its clients to close
// their connections once it stops (see Run).
const shutdownTimeout = 100 * time.Millisecond

// policyHooks are the API server's post-start hooks that create or update
// the bootstrap policy, the default RBAC roles and bindings and the system
// PriorityClasses. Each waits a second before its first try (upstream's
// wait.Poll), and /readyz waits for both: a second of every start.
var policyHooks = []string{rbacrest.PostStartHookName, schedulingrest.PostStartHookName}

// policyStamp says whether the datastore already holds this Kubernetes
// version's bootstrap policy: the stamp that a start writes once the policy
// hooks have run to the end (this version and the datastore's identity) is
// on disk. stamp is what this start records then.
func (a *APIServer) policyStamp() (stamp string, warm bool) {
	if a.DatastoreIdentity == nil {
		return "", false
	}
	id := a.DatastoreIdentity()
	if id == "" {
		return "", false
	}
	stamp = version.Get().GitVersion + "\n" + id + "\n"
	old, err := os.ReadFile(a.policyStampPath())
	return stamp, err == nil && string(old) == stamp
}

func (a *APIServer) policyStampPath() string {
	return filepath.Join(a.Config.DataDir, "server", "bootstrap-policy")
}

// ensurePolicy runs upstream's policy hooks, and skiff's node roles (see
// nodeRoles). When the datastore holds the policy already (policyStamp),
// they run beside the API server and do not hold /readyz back; a failure is
// logged, as the earlier start's policy is in place. On a new data dir
// (no stamp at all), this hook first writes the policy itself, all at once
// (writeFirstPolicy), and /readyz waits for that only; the stamp is
// recorded then, and upstream's hooks run beside. On another database or a
// new version, or should that first write fail, it waits for upstream's
// hooks as upstream's /readyz does, then records the stamp.
func (a *APIServer) ensurePolicy(hc genericapiserver.PostStartHookContext) error {
	_, rbac, err := rbacrest.RESTStorageProvider{}.PostStartHook()
	if err != nil {
		return err
	}
	hooks := []genericapiserver.PostStartHookFunc{rbac, schedulingrest.AddSystemPriorityClasses(), ensureNodeRoles}
	names := append(slices.Clone(policyHooks), "skiff/node-roles")
	runHooks := func() error {
		errs := make([]error, len(hooks))
		var wg sync.WaitGroup
		for i, hook := range hooks {
			wg.Go(func() {
				if errs[i] = hook(hc); errs[i] != nil {
					klog.ErrorS(errs[i], "bootstrap policy not updated", "hook", names[i])
				}
			})
		}
		wg.Wait()
		return utilerrors.NewAggregate(errs)
	}
	record := func(stamp string) {
		if stamp == "" {
			return
		}
		if err := atomicfile.Write(a.policyStampPath(), []byte(stamp), 0o600); err != nil {
			klog.ErrorS(err, "cannot record that the bootstrap policy is in place; the next start waits for it again")
		}
	}
	stamp, warm := a.policyStamp()
	if warm {
		go runHooks()
		return nil
	}
	if _, err := os.Stat(a.policyStampPath()); errors.Is(err, fs.ErrNotExist) {
		err := writeFirstPolicy(hc.Context, hc.LoopbackClientConfig)
		if err == nil {
			record(stamp)
			go runHooks()
			return nil
		}
		klog.InfoS("the bootstrap policy was not written at once; waiting for the API server's own hooks", "err", err)
	}
	if err := runHooks(); err != nil {
		return err
	}
	record(stamp)
	return nil
}

// waitReady polls /readyz, as a user's health check would, and closes
// ready.
func (a *APIServer) waitReady(ctx context.Context) {
	caPEM, err := os.ReadFile(a.Config.Files.ServerCA())
	if err != nil {
		return
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}},
	}
	defer client.CloseIdleConnections()
	url := fmt.Sprintf("https://%s/readyz", net.JoinHostPort(a.Config.LoopbackAddress(), fmt.Sprint(a.Config.Port)))
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err == nil {
		a.SetReady()
	}
}

// writeAuthenticationConfig allows anonymous requests to the health endpoints
// (load balancers and probes need no credentials) and to the anonymous
// handlers; nothing else is open.
func (a *APIServer) writeAuthenticationConfig() error {
	paths := []string{"/healthz", "/livez", "/readyz"}
	for p := range a.AnonymousHandlers {
		paths = append(paths, p)
	}
	slices.Sort(paths[3:])
	var b strings.Builder
	b.WriteString("apiVersion: apiserver.config.k8s.io/v1\nkind: AuthenticationConfiguration\nanonymous:\n  enabled: true\n  conditions:\n")
	for _, p := range paths {
		fmt.Fprintf(&b, "  - path: %s\n", p)
	}
	return atomicfile.Write(a.Config.Files.AuthenticationConfig(), []byte(b.String()), 0o600)
}
