package ingress

// The node component: informers for every object the model reads, one
// sync loop building the table and handing it to the server, and, on the
// node that holds the status Lease, status, events and the certificates
// Secret written back.
//
// A node reads one Secret, CertificatesSecret, and builds its table from
// the key pairs in it. The status writer reads the cluster's TLS Secrets
// with its own (admin) credentials, builds the model from them for status
// and writes the key pairs the table serves to CertificatesSecret.

import (
	"context"
	"errors"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sfields "k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/skiff-dev/skiff/internal/component"
	"github.com/skiff-dev/skiff/internal/kubeconfig"
	"github.com/skiff-dev/skiff/internal/leader"
)

// StatusLease is the Lease in kube-system whose holder writes status.
const StatusLease = "skiff-ingress-status"

// Features are the Gateway API features (conformance names) the node
// serves, written to our GatewayClasses' status: the GATEWAY-HTTP
// profile's core ones, and the extended ones the conformance suite
// (tests/gatewayapi) passes against a node. Not claimed: BackendTLSPolicy,
// client certificates (frontend and backend), CORS, retries by status
// code, ListenerSets, GatewayInfrastructure (no resources are made for a
// Gateway) and GatewayStaticAddresses.
var Features = []string{
	"Gateway", "HTTPRoute", "ReferenceGrant",
	"GatewayAddressEmpty", "GatewayHTTPListenerIsolation", "GatewayHTTPSListenerDetectMisdirectedRequests", "GatewayPort8080",
	"HTTPRoute303RedirectStatusCode", "HTTPRoute307RedirectStatusCode", "HTTPRoute308RedirectStatusCode",
	"HTTPRouteBackendProtocolH2C", "HTTPRouteBackendProtocolWebSocket", "HTTPRouteBackendRequestHeaderModification",
	"HTTPRouteBackendTimeout", "HTTPRouteDestinationPortMatching", "HTTPRouteHostRewrite", "HTTPRouteMethodMatching",
	"HTTPRouteNamedRouteRule", "HTTPRouteParentRefPort", "HTTPRoutePathRedirect", "HTTPRoutePathRewrite",
	"HTTPRoutePortRedirect", "HTTPRouteQueryParamMatching", "HTTPRouteRequestMirror", "HTTPRouteRequestMultipleMirrors",
	"HTTPRouteRequestPercentageMirror", "HTTPRouteRequestTimeout", "HTTPRouteResponseHeaderModification",
	"HTTPRouteRetryConnectionError", "HTTPRouteSchemeRedirect",
}

// NodeConfig configures the component.
type NodeConfig struct {
	NodeName string
	// Kubeconfig gives read access to the objects (the node's
	// credentials).
	Kubeconfig string
	// StatusKubeconfig, when set, makes this node write status and
	// events with these credentials while it holds StatusLease; the
	// server's own node does, agents do not.
	StatusKubeconfig string
	// Identity names this node among the status writers.
	Identity string
	// HTTPPort and HTTPSPort serve Ingresses; 0: none on that scheme.
	HTTPPort, HTTPSPort int32
	// AddressPool gives each Gateway an address of its own.
	AddressPool []netip.Addr
	Server      ServerConfig
}

// Ingress is the component.
type Ingress struct {
	cfg  NodeConfig
	srv  *Server
	loop *component.SyncLoop
	component.Latch
	leading atomic.Bool
}

// New returns the component.
func New(cfg NodeConfig) (*Ingress, error) {
	if cfg.Kubeconfig == "" {
		return nil, errors.New("ingress: a kubeconfig must be given")
	}
	srv, err := NewServer(cfg.Server)
	if err != nil {
		return nil, err
	}
	return &Ingress{cfg: cfg, srv: srv, loop: component.NewSyncLoop("ingress")}, nil
}

// Name implements component.Component.
func (g *Ingress) Name() string { return "ingress" }

// Run implements component.Component.
func (g *Ingress) Run(ctx context.Context) error {
	rest, err := kubeconfig.RESTConfig(g.cfg.Kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(rest)
	if err != nil {
		return err
	}
	gwc, err := gatewayclient.NewForConfig(rest)
	if err != nil {
		return err
	}
	var writer *statusWriter
	var statusClient kubernetes.Interface
	if g.cfg.StatusKubeconfig != "" {
		srest, err := kubeconfig.RESTConfig(g.cfg.StatusKubeconfig)
		if err != nil {
			return err
		}
		if statusClient, err = kubernetes.NewForConfig(srest); err != nil {
			return err
		}
		sgw, err := gatewayclient.NewForConfig(srest)
		if err != nil {
			return err
		}
		events := record.NewBroadcaster(record.WithContext(ctx))
		events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: statusClient.CoreV1().Events("")})
		defer events.Shutdown()
		rec := events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "skiff-ingress", Host: g.cfg.NodeName})
		writer = &statusWriter{client: statusClient, gateways: sgw, controller: DefaultGatewayController,
			events: func(ev Event, ref *corev1.ObjectReference) {
				rec.Event(ref, corev1.EventTypeWarning, ev.Reason, ev.Message)
			}}
	}
	return g.run(ctx, client, gwc, writer, statusClient)
}

func (g *Ingress) run(ctx context.Context, client kubernetes.Interface, gwc gatewayclient.Interface, writer *statusWriter, statusClient kubernetes.Interface) error {
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.srv.Close(sctx)
	}()
	core := informers.NewSharedInformerFactory(client, 0)
	// The node's credentials read the certificates Secret only: RBAC
	// allows a list or watch of it by its name in a field selector.
	certsFactory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(CertificatesNamespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = k8sfields.OneTermEqualSelector("metadata.name", CertificatesSecret).String()
		}))
	gws := gatewayinformers.NewSharedInformerFactory(gwc, 0)
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { g.loop.Trigger() },
		UpdateFunc: func(any, any) { g.loop.Trigger() },
		DeleteFunc: func(any) { g.loop.Trigger() },
	}
	var (
		services       = core.Core().V1().Services()
		slicesInf      = core.Discovery().V1().EndpointSlices()
		namespaces     = core.Core().V1().Namespaces()
		nodes          = core.Core().V1().Nodes()
		ingressClasses = core.Networking().V1().IngressClasses()
		ingresses      = core.Networking().V1().Ingresses()
		certificates   = certsFactory.Core().V1().Secrets()
		classes        = gws.Gateway().V1().GatewayClasses()
		gateways       = gws.Gateway().V1().Gateways()
		routes         = gws.Gateway().V1().HTTPRoutes()
		grants         = gws.Gateway().V1beta1().ReferenceGrants()
	)
	synced := []cache.InformerSynced{}
	for _, inf := range []cache.SharedIndexInformer{services.Informer(), slicesInf.Informer(), namespaces.Informer(), nodes.Informer(),
		ingressClasses.Informer(), ingresses.Informer(), certificates.Informer(), classes.Informer(), gateways.Informer(), routes.Informer(), grants.Informer()} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
		synced = append(synced, inf.HasSynced)
	}
	// The status writer's own view of the cluster's TLS Secrets, read
	// with its credentials, not the node's.
	var tlsSecrets corev1listers.SecretLister
	if writer != nil {
		f := informers.NewSharedInformerFactoryWithOptions(statusClient, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = k8sfields.OneTermEqualSelector("type", string(corev1.SecretTypeTLS)).String()
		}))
		inf := f.Core().V1().Secrets()
		if _, err := inf.Informer().AddEventHandler(handler); err != nil {
			return err
		}
		synced = append(synced, inf.Informer().HasSynced)
		tlsSecrets = inf.Lister()
		f.Start(ctx.Done())
		defer f.Shutdown()
	}
	core.Start(ctx.Done())
	certsFactory.Start(ctx.Done())
	gws.Start(ctx.Done())
	defer core.Shutdown()
	defer certsFactory.Shutdown()
	defer gws.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil // ctx ended
	}
	if writer != nil {
		go func() {
			err := leader.Run(ctx, statusClient, StatusLease, g.cfg.Identity, func(lctx context.Context) error {
				g.leading.Store(true)
				g.loop.Trigger()
				<-lctx.Done()
				g.leading.Store(false)
				return nil
			})
			if err != nil {
				klog.ErrorS(err, "ingress: status Lease")
			}
		}()
	}

	var unavailable map[int32]string
	retry := time.AfterFunc(time.Hour, g.loop.Trigger)
	retry.Stop()
	defer retry.Stop()
	sync := func() error {
		var errs []error
		certs, err := certificates.Lister().Secrets(CertificatesNamespace).Get(CertificatesSecret)
		if apierrors.IsNotFound(err) {
			certs, err = nil, nil
		}
		errs = append(errs, err)
		in := &Input{
			Services:        listAll(services.Lister(), &errs),
			EndpointSlices:  listAll(slicesInf.Lister(), &errs),
			Namespaces:      listAll(namespaces.Lister(), &errs),
			IngressClasses:  listAll(ingressClasses.Lister(), &errs),
			Ingresses:       listAll(ingresses.Lister(), &errs),
			Secrets:         SecretsFromCertificates(certs),
			GatewayClasses:  listAll(classes.Lister(), &errs),
			Gateways:        listAll(gateways.Lister(), &errs),
			HTTPRoutes:      listAll(routes.Lister(), &errs),
			ReferenceGrants: listAll(grants.Lister(), &errs),
		}
		nodeList := listAll(nodes.Lister(), &errs)
		if err := errors.Join(errs...); err != nil {
			return err
		}
		cfg := g.cfg.model(nodeList)
		res := Build(cfg, in)
		failed := g.srv.Apply(res.Table)
		if len(failed) > 0 {
			cfg.UnavailablePorts = failed
			res = Build(cfg, in)
			g.srv.Apply(res.Table)
			retry.Reset(30 * time.Second)
		}
		for p, why := range failed {
			if unavailable[p] != why {
				klog.InfoS("ingress: a port cannot be opened; the node serves the others and tries again every 30s", "port", p, "reason", why)
			}
		}
		for p := range unavailable {
			if _, ok := failed[p]; !ok {
				klog.InfoS("ingress: port open", "port", p)
			}
		}
		unavailable = failed
		klog.V(4).InfoS("ingress sync", "table", res.Table.String())
		if writer != nil && g.leading.Load() {
			// Status and the certificates Secret come from the model
			// built from the real Secrets: status names a Secret that is
			// missing or invalid as it is, and the certificates Secret
			// gets the key pairs of the certificates that model serves.
			full := *in
			full.Secrets = listAll(tlsSecrets, &errs)
			if err := errors.Join(errs...); err != nil {
				return err
			}
			fres := Build(cfg, &full)
			return errors.Join(
				writeCertificates(ctx, statusClient, certs, CertificatesData(fres.Table, full.Secrets)),
				writer.write(ctx, &full, fres))
		}
		return nil
	}
	return g.loop.Run(ctx, &g.Latch, sync)
}

// listAll lists a cache, adding its error to errs.
func listAll[T any](l interface {
	List(labels.Selector) ([]T, error)
}, errs *[]error) []T {
	v, err := l.List(labels.Everything())
	*errs = append(*errs, err)
	return v
}

// model is the model's configuration on this node.
func (c NodeConfig) model(nodes []*corev1.Node) Config {
	return Config{
		GatewayController: DefaultGatewayController,
		IngressController: DefaultIngressController,
		HTTPPort:          c.HTTPPort,
		HTTPSPort:         c.HTTPSPort,
		Addresses:         nodeAddresses(nodes),
		AddressPool:       c.AddressPool,
		SupportedFeatures: Features,
	}
}

// nodeAddresses are the addresses every node serves on: each Ready
// node's external IP, else its internal one, sorted.
func nodeAddresses(nodes []*corev1.Node) []string {
	set := map[string]bool{}
	for _, n := range nodes {
		ready := false
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		if !ready {
			continue
		}
		for _, t := range []corev1.NodeAddressType{corev1.NodeExternalIP, corev1.NodeInternalIP} {
			found := false
			for _, a := range n.Status.Addresses {
				if a.Type == t && net.ParseIP(a.Address) != nil {
					set[a.Address] = true
					found = true
				}
			}
			if found {
				break
			}
		}
	}
	return slices.Sorted(maps.Keys(set))
}
