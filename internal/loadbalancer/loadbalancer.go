// Package loadbalancer is an agent's way to the API servers: a TCP proxy on
// loopback through which the kubelet and the node's other clients reach the
// cluster. Each connection goes to the server that answered last, or else to
// the next one that answers, so that the node keeps working while any server
// is up. It learns the servers from the kubernetes Service's endpoints
// (every API server is one) and keeps them in a file, so that a node started
// again while its --server is down still finds the others.
//
// The byte copying is github.com/inetaf/tcpproxy's; what is written here is
// the choice of server.
package loadbalancer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/inetaf/tcpproxy"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/atomicfile"
	"github.com/skiff-dev/skiff/internal/component"
	"github.com/skiff-dev/skiff/internal/kubeconfig"
)

// DefaultPort is where the default data dir's agent listens, k3s's.
const DefaultPort = 6444

// dialTimeout bounds the wait for one server: a host that is down does not
// answer at all.
const dialTimeout = 5 * time.Second

// Config is the load balancer's settings.
type Config struct {
	// Port on 127.0.0.1 (0: a free port).
	Port int
	// File keeps the servers known, for a restart while Server is down.
	File string
	// Server is the agent's --server URL, which stays on the list: it may
	// be a name that always leads to a live server.
	Server string
	// Kubeconfig is the node's, which names the load balancer itself: its
	// client watches the kubernetes Service's endpoints.
	Kubeconfig string
}

// LoadBalancer is the load balancer component.
type LoadBalancer struct {
	kubeconfig string
	file       string
	fallback   string
	ln         net.Listener
	proxy      *tcpproxy.DialProxy

	mu      sync.Mutex
	servers []string
	current string

	component.Latch
}

// New listens on 127.0.0.1 for the servers kept in the file and the agent's
// --server.
func New(cfg Config) (*LoadBalancer, error) {
	port, file, server := cfg.Port, cfg.File, cfg.Server
	u, err := url.Parse(server)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("--server %q is not a URL such as https://SERVER:6443", server)
	}
	fallback := u.Host
	if u.Port() == "" {
		fallback = net.JoinHostPort(u.Hostname(), "443")
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("port %d, where the agent reaches the API servers, is already in use: stop what listens there", port)
	}
	if err != nil {
		return nil, fmt.Errorf("the agent's API load balancer cannot listen on 127.0.0.1:%d (%v): check the host's loopback interface", port, err)
	}
	lb := &LoadBalancer{kubeconfig: cfg.Kubeconfig, file: file, fallback: fallback, ln: ln, current: fallback}
	var kept []string
	if data, err := os.ReadFile(file); err == nil {
		json.Unmarshal(data, &kept)
	}
	lb.servers = merge(kept, fallback)
	lb.proxy = &tcpproxy.DialProxy{DialContext: lb.dial, DialTimeout: -1, OnDialError: func(src net.Conn, err error) {
		klog.ErrorS(err, "no API server answers", "servers", lb.Servers())
		src.Close()
	}}
	return lb, nil
}

// URL is the address the node's clients use.
func (lb *LoadBalancer) URL() string { return "https://" + lb.ln.Addr().String() }

// Servers are the servers it passes connections to, in the order it tries
// them after the current one.
func (lb *LoadBalancer) Servers() []string {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return slices.Clone(lb.servers)
}

// merge is the servers to try: those the cluster lists, then the fallback,
// each once.
func merge(servers []string, fallback string) []string {
	var out []string
	for _, s := range append(slices.Clone(servers), fallback) {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// order is the order to try servers in: current first, then the rest as
// listed.
func order(servers []string, current string) []string {
	out := []string{}
	if slices.Contains(servers, current) {
		out = append(out, current)
	}
	for _, s := range servers {
		if s != current {
			out = append(out, s)
		}
	}
	return out
}

// dial connects to the current server, or else to the first other one that
// answers, which becomes current.
func (lb *LoadBalancer) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	lb.mu.Lock()
	try := order(lb.servers, lb.current)
	lb.mu.Unlock()
	var errs []error
	for _, s := range try {
		d := net.Dialer{Timeout: dialTimeout}
		c, err := d.DialContext(ctx, network, s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		lb.mu.Lock()
		if lb.current != s {
			klog.InfoS("the agent now reaches the API through another server", "server", s, "was", lb.current)
			lb.current = s
		}
		lb.mu.Unlock()
		return c, nil
	}
	return nil, errors.Join(errs...)
}

// setServers takes the cluster's list of servers and keeps it in the file.
func (lb *LoadBalancer) setServers(servers []string) {
	if len(servers) == 0 {
		return // a moment without endpoints: keep the last known ones
	}
	all := merge(servers, lb.fallback)
	lb.mu.Lock()
	changed := !slices.Equal(all, lb.servers)
	lb.servers = all
	lb.mu.Unlock()
	if !changed {
		return
	}
	klog.InfoS("API servers", "servers", all)
	data, _ := json.Marshal(servers)
	if err := atomicfile.Write(lb.file, data, 0o600); err != nil {
		klog.ErrorS(err, "cannot keep the list of API servers", "file", lb.file)
	}
}

// Name implements component.Component.
func (lb *LoadBalancer) Name() string { return "API server load balancer" }

// Run implements component.Component.
func (lb *LoadBalancer) Run(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		lb.ln.Close()
	}()
	accepted := make(chan error, 1)
	go func() {
		for {
			c, err := lb.ln.Accept()
			if err != nil {
				accepted <- err
				return
			}
			go lb.proxy.HandleConn(c)
		}
	}()
	lb.SetReady()
	if lb.kubeconfig != "" {
		go lb.watch(ctx)
	}
	err := <-accepted
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("the agent's API load balancer stopped: %w", err)
}

// watch follows the kubernetes Service's endpoints: the API servers.
func (lb *LoadBalancer) watch(ctx context.Context) {
	client, err := kubeconfig.Client(lb.kubeconfig)
	if err != nil {
		klog.ErrorS(err, "cannot watch the API servers' endpoints; keeping the known servers")
		return
	}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(metav1.NamespaceDefault),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = discoveryv1.LabelServiceName + "=kubernetes"
		}))
	eps := factory.Discovery().V1().EndpointSlices()
	update := func() {
		all, err := eps.Lister().List(labels.Everything())
		if err == nil {
			lb.setServers(addresses(all))
		}
	}
	eps.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { update() },
		UpdateFunc: func(any, any) { update() },
		DeleteFunc: func(any) { update() },
	})
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
}

// addresses are the ready endpoints' address:port, sorted.
func addresses(all []*discoveryv1.EndpointSlice) []string {
	var out []string
	for _, s := range all {
		for _, p := range s.Ports {
			if p.Port == nil {
				continue
			}
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && !*e.Conditions.Ready {
					continue
				}
				for _, a := range e.Addresses {
					out = append(out, net.JoinHostPort(a, strconv.Itoa(int(*p.Port))))
				}
			}
		}
	}
	slices.Sort(out)
	return out
}
