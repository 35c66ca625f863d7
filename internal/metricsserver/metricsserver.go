// Package metricsserver serves the resource metrics API (metrics.k8s.io, what
// `kubectl top` and HorizontalPodAutoscalers read) inside skiff server, with
// upstream metrics-server's own packages: it scrapes every kubelet's
// /metrics/resource over TLS verified against the CA that signs kubelet
// serving certificates, and the API server reaches it as an aggregated API.
package metricsserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	discoveryv1ac "k8s.io/client-go/applyconfigurations/discovery/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	apiregistrationv1ac "k8s.io/kube-aggregator/pkg/client/applyconfiguration/apiregistration/v1"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"
	"sigs.k8s.io/metrics-server/cmd/metrics-server/app/options"

	"github.com/skiff-dev/skiff/internal/kubeconfig"
	"github.com/skiff-dev/skiff/internal/leader"
)

const (
	// Namespace and ServiceName name the Service the APIService points at.
	Namespace   = "kube-system"
	ServiceName = "metrics-server"
	// APIServiceName is the aggregated API's registration.
	APIServiceName = "v1beta1.metrics.k8s.io"
	// DefaultPort is where a server with the default data dir serves the
	// API (on its bind address); the API server is its only client.
	DefaultPort = 10251
	// Resolution is how often kubelets are scraped, as k3s's metrics-server.
	Resolution = 15 * time.Second
	managedBy  = "metrics-server.skiff.dev"
)

// DNSNames are the names its serving certificate carries: the API server
// verifies the Service's name.
func DNSNames(clusterDomain string) []string {
	svc := ServiceName + "." + Namespace + ".svc"
	return []string{svc, svc + "." + clusterDomain}
}

// Config is the metrics API's settings.
type Config struct {
	// Kubeconfig is its own identity: it reads nodes and pods, scrapes
	// kubelets, and checks its callers with the API server.
	Kubeconfig string
	// AdminKubeconfig publishes its APIService, Service and EndpointSlice.
	AdminKubeconfig string
	// ServerCA signs its serving certificate; KubeletCA verifies the
	// kubelets'.
	ServerCA, KubeletCA     string
	ServingCert, ServingKey string
	BindAddress             string
	Port                    int
	// AdvertiseIP is where the API server reaches it.
	AdvertiseIP net.IP
	// LeaderElect: with several servers, the leader scrapes and serves.
	LeaderElect bool
}

// MetricsServer is the metrics API component.
type MetricsServer struct {
	cfg     Config
	opts    *options.Options
	scrapes *scrapeLog
}

// New checks the settings and builds metrics-server's options; it writes
// nothing.
func New(cfg Config) (*MetricsServer, error) {
	if cfg.Kubeconfig == "" || cfg.AdminKubeconfig == "" || cfg.ServerCA == "" || cfg.KubeletCA == "" || cfg.AdvertiseIP == nil || cfg.Port <= 0 {
		return nil, errors.New("metrics-server: kubeconfigs, the server CA, an address and a port are needed")
	}
	o := options.NewOptions()
	o.Kubeconfig = cfg.Kubeconfig
	o.MetricResolution = Resolution
	o.SecureServing.BindAddress = net.ParseIP(cfg.BindAddress)
	if o.SecureServing.BindAddress == nil {
		o.SecureServing.BindAddress = net.IPv4zero
	}
	o.SecureServing.BindPort = cfg.Port
	o.SecureServing.ServerCert.CertKey.CertFile = cfg.ServingCert
	o.SecureServing.ServerCert.CertKey.KeyFile = cfg.ServingKey
	o.Authentication.RemoteKubeConfigFile = cfg.Kubeconfig
	o.Authorization.RemoteKubeConfigFile = cfg.Kubeconfig
	o.Features.EnableProfiling = false
	// Verified against the CA of the kubelets' serving certificates.
	o.KubeletClient.KubeletCAFile = cfg.KubeletCA
	o.KubeletClient.KubeletUseNodeStatusPort = true
	o.KubeletClient.KubeletPreferredAddressTypes = []string{string(corev1.NodeInternalIP), string(corev1.NodeExternalIP), string(corev1.NodeHostName)}
	o.KubeletClient.KubeletRequestTimeout = Resolution * 2 / 3
	// Not o.Validate: it applies a logging configuration of its own, and
	// the process's is skiff's.
	errs := append(o.KubeletClient.Validate(), o.GenericServerRunOptions.Validate()...)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("metrics-server: %w", err)
	}
	return &MetricsServer{cfg: cfg, opts: o, scrapes: newScrapeLog()}, nil
}

// Name implements component.Component.
func (m *MetricsServer) Name() string { return "metrics-server" }

// Run implements component.Component: it serves the API, or with leader
// election campaigns and serves while it leads.
func (m *MetricsServer) Run(ctx context.Context) error {
	rc, err := kubeconfig.RESTConfig(m.cfg.AdminKubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	agg, err := aggregator.NewForConfig(rc)
	if err != nil {
		return err
	}
	if !m.cfg.LeaderElect {
		return m.serve(ctx, cs, agg)
	}
	return leader.Run(ctx, cs, "skiff-metrics-server", leader.Identity(m.cfg.AdvertiseIP.String()), func(ctx context.Context) error {
		return m.serve(ctx, cs, agg)
	})
}

// serve runs metrics-server's API server until ctx ends, once its
// registration points at this server.
func (m *MetricsServer) serve(ctx context.Context, cs kubernetes.Interface, agg aggregator.Interface) error {
	cfg, err := m.opts.ServerConfig()
	if err != nil {
		return err
	}
	cfg.Kubelet.Client.WrapTransport = m.scrapes.wrap
	srv, err := cfg.Complete()
	if err != nil {
		return err
	}
	// At shutdown, in-flight requests drain before the server exits
	// whatever this says; it bounds only the wait for clients (the API
	// server's aggregator) to hang up after the GOAWAY, which Go's HTTP/2
	// clients do only when they next use an idle connection: the rest of a
	// second otherwise.
	srv.GenericAPIServer.ShutdownTimeout = 100 * time.Millisecond
	if err := m.publish(ctx, cs, agg); err != nil {
		return err
	}
	return srv.RunUntil(ctx.Done())
}

// publish points the APIService, through a Service without selector and an
// EndpointSlice of its own, at this server's address and port (server-side
// apply: whichever server serves last owns them).
func (m *MetricsServer) publish(ctx context.Context, cs kubernetes.Interface, agg aggregator.Interface) error {
	ca, err := os.ReadFile(m.cfg.ServerCA)
	if err != nil {
		return err
	}
	labels := map[string]string{"app.kubernetes.io/managed-by": managedBy}
	addressType := discoveryv1.AddressTypeIPv4
	if m.cfg.AdvertiseIP.To4() == nil {
		addressType = discoveryv1.AddressTypeIPv6
	}
	port := int32(m.cfg.Port)
	svc := corev1ac.Service(ServiceName, Namespace).WithLabels(labels).WithSpec(corev1ac.ServiceSpec().
		WithType(corev1.ServiceTypeClusterIP).
		WithPorts(corev1ac.ServicePort().WithName("https").WithPort(443).WithProtocol(corev1.ProtocolTCP).WithTargetPort(intstr.FromInt32(port))))
	slice := discoveryv1ac.EndpointSlice(ServiceName, Namespace).
		WithLabels(map[string]string{discoveryv1.LabelServiceName: ServiceName, discoveryv1.LabelManagedBy: managedBy}).
		WithAddressType(addressType).
		WithEndpoints(discoveryv1ac.Endpoint().WithAddresses(m.cfg.AdvertiseIP.String()).WithConditions(discoveryv1ac.EndpointConditions().WithReady(true))).
		WithPorts(discoveryv1ac.EndpointPort().WithName("https").WithPort(port).WithProtocol(corev1.ProtocolTCP))
	api := apiregistrationv1ac.APIService(APIServiceName).WithLabels(labels).WithSpec(apiregistrationv1ac.APIServiceSpec().
		WithService(apiregistrationv1ac.ServiceReference().WithNamespace(Namespace).WithName(ServiceName).WithPort(443)).
		WithGroup("metrics.k8s.io").WithVersion("v1beta1").WithCABundle(ca...).
		WithGroupPriorityMinimum(100).WithVersionPriority(100))
	opts := metav1.ApplyOptions{FieldManager: managedBy, Force: true}
	steps := []struct {
		what  string
		apply func(context.Context) error
	}{
		{"Service", func(ctx context.Context) error {
			_, err := cs.CoreV1().Services(Namespace).Apply(ctx, svc, opts)
			return err
		}},
		{"EndpointSlice", func(ctx context.Context) error {
			_, err := cs.DiscoveryV1().EndpointSlices(Namespace).Apply(ctx, slice, opts)
			return err
		}},
		{"APIService", func(ctx context.Context) error {
			_, err := agg.ApiregistrationV1().APIServices().Apply(ctx, api, opts)
			return err
		}},
	}
	for _, s := range steps {
		var last error
		// The API server may still be starting.
		err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			err := s.apply(ctx)
			if err != nil && ctx.Err() == nil {
				last = err
			}
			return err == nil, nil
		})
		if err != nil {
			return fmt.Errorf("publishing its %s: %v", s.what, last)
		}
	}
	klog.InfoS("serving the resource metrics API", "address", net.JoinHostPort(m.cfg.AdvertiseIP.String(), strconv.Itoa(m.cfg.Port)))
	return nil
}
