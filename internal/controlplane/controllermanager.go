package controlplane

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/rest"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app/options"

	"github.com/skiff-dev/skiff/internal/component"
)

// ControllerManager runs kube-controller-manager.
type ControllerManager struct {
	Config *Config
	// Built is set once the controllers are built (see readyOnceBuilt).
	// The component itself counts as ready as soon as it runs: only the
	// in-process kubelet waits for Built, so the components between them
	// start while the controllers are being built.
	Built component.Latch
}

// NewControllerManager returns the controller manager component.
func NewControllerManager(cfg *Config) (*ControllerManager, error) {
	if cfg == nil {
		return nil, fmt.Errorf("kube-controller-manager: a control plane config is needed")
	}
	return &ControllerManager{Config: cfg}, nil
}

// Name implements component.Component.
func (m *ControllerManager) Name() string { return "kube-controller-manager" }

func (m *ControllerManager) args() []string {
	c, f := m.Config, m.Config.Files
	kubeconfig := f.Kubeconfig("controller")
	return []string{
		flag("kubeconfig", kubeconfig),
		flag("authentication-kubeconfig", kubeconfig),
		flag("authorization-kubeconfig", kubeconfig),
		flag("bind-address", "127.0.0.1"),
		flag("secure-port", cmp.Or(c.ControllerManagerPort, 10257)),
		flag("tls-cert-file", f.ControllerManagerServingCert()),
		flag("tls-private-key-file", f.ControllerManagerServingKey()),
		flag("allocate-node-cidrs", true),
		flag("cluster-cidr", c.ClusterCIDR),
		flag("service-cluster-ip-range", c.ServiceCIDR),
		flag("configure-cloud-routes", false),
		flag("root-ca-file", f.ServerCA()),
		flag("service-account-private-key-file", f.ServiceAccountKey()),
		flag("use-service-account-credentials", true),
		// The scheduler's and the kubelet's default request rate instead
		// of the controller manager's 20 a second (bursts of 30). With
		// service account credentials it fetches a token for each of its
		// some 40 controllers one after another as it builds them: at 20
		// a second that took 1.4 s of every start, during which the node
		// waits (see Built); at 50 it takes 0.35 s. The API server's
		// priority and fairness still has the last word.
		flag("kube-api-qps", 50),
		flag("kube-api-burst", 100),
		// Kubelet serving certificates chain to the server CA, client
		// certificates to the client CA.
		flag("cluster-signing-kubelet-serving-cert-file", f.ServerCA()),
		flag("cluster-signing-kubelet-serving-key-file", f.ServerCAKey()),
		flag("cluster-signing-kubelet-client-cert-file", f.ClientCA()),
		flag("cluster-signing-kubelet-client-key-file", f.ClientCAKey()),
		flag("cluster-signing-kube-apiserver-client-cert-file", f.ClientCA()),
		flag("cluster-signing-kube-apiserver-client-key-file", f.ClientCAKey()),
		flag("cluster-signing-legacy-unknown-cert-file", f.ServerCA()),
		flag("cluster-signing-legacy-unknown-key-file", f.ServerCAKey()),
		flag("controllers", "*,tokencleaner"),
		flag("leader-elect", c.LeaderElect),
		flag("profiling", false),
		flag("v", c.Verbosity),
	}
}

// Run implements component.Component.
func (m *ControllerManager) Run(ctx context.Context) error {
	ctx = klog.NewContext(ctx, klog.Background().WithName("controller-manager"))
	s, err := options.NewKubeControllerManagerOptions()
	if err != nil {
		return err
	}
	known, disabled, aliases := app.KnownControllers(), app.ControllersDisabledByDefault(), app.ControllerAliases()
	fss := s.Flags(known, disabled, aliases)
	s.ParsedFlags = &fss
	if err := parseFlags("kube-controller-manager", fss, m.args(), m.Config.ControllerManagerArgs); err != nil {
		return err
	}
	if err := s.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	if err := logsapi.ValidateAndApply(s.Logs, utilfeature.DefaultFeatureGate); err != nil {
		return err
	}
	c, err := s.Config(ctx, known, disabled, aliases)
	if err != nil {
		return err
	}
	if c.ComponentConfig.Generic.LeaderElection.LeaderElect || !attachDetachEnabled(c.ComponentConfig.Generic.Controllers) || c.SecureServing == nil {
		m.Built.SetReady()
	} else {
		go m.readyOnceBuilt(ctx, c.SecureServing.Listener.Addr().String())
	}
	if c.ComponentConfig.Generic.LeaderElection.LeaderElect {
		return detach(ctx, func(ctx context.Context) error { return app.Run(ctx, c.Complete()) })
	}
	return app.Run(ctx, c.Complete())
}

// attachDetach is the attach/detach controller's name.
const attachDetach = "persistentvolume-attach-detach-controller"

// readyOnceBuilt sets Built once the controller manager has built its
// controllers, which its /healthz then lists. The attach/detach controller
// initialises the volume plugins when it is built, and the CSI plugin keeps
// its node in a package variable: built after the in-process kubelet's
// plugins, it would leave the kubelet's with no node name, and the kubelet
// would give up on its CSINode and exit. So the node starts after it.
func (m *ControllerManager) readyOnceBuilt(ctx context.Context, addr string) {
	// The controller manager's serving certificate is its own, made in
	// memory at start; this only reads which checks it has registered.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer client.CloseIdleConnections()
	url := "https://" + addr + "/healthz?verbose"
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			return false, nil
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return strings.Contains(string(body), attachDetach), nil
	})
	if err == nil {
		m.Built.SetReady()
	}
}

// attachDetachEnabled says whether the --controllers list runs the
// attach/detach controller.
func attachDetachEnabled(controllers []string) bool {
	star := false
	for _, c := range controllers {
		switch c {
		case attachDetach, "attachdetach":
			return true
		case "-" + attachDetach, "-attachdetach":
			return false
		case "*":
			star = true
		}
	}
	return star
}
