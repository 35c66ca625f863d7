// Package servicelb is the built-in load balancer controller: without a
// cloud, a LoadBalancer Service's addresses are the nodes' own addresses, and
// every node's service proxy answers the Service's ports on them. No pods are
// involved.
package servicelb

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedv1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/component"
	"github.com/skiff-dev/skiff/internal/kubeconfig"
)

// NodeLabel set to "true" on some nodes limits the load balancer addresses
// to those nodes; without it on any node, all nodes serve.
const NodeLabel = "svccontroller.skiff.dev/enablelb"

// Config is the controller's settings.
type Config struct {
	// Kubeconfig has rights to update Service status.
	Kubeconfig string
	// Reserved are the ports the nodes themselves listen on, as "6443/TCP",
	// with what listens there: a LoadBalancer Service may not take them
	// (every node's kubelet port is added from its Node).
	Reserved map[string]string
}

// Controller is the load balancer controller component.
type Controller struct {
	cfg Config
	component.Latch
}

// New returns the controller.
func New(cfg Config) (*Controller, error) {
	if cfg.Kubeconfig == "" {
		return nil, fmt.Errorf("service load balancer: a kubeconfig is needed")
	}
	return &Controller{cfg: cfg}, nil
}

// Name implements component.Component.
func (c *Controller) Name() string { return "service load balancer" }

// Run implements component.Component.
func (c *Controller) Run(ctx context.Context) error {
	client, err := kubeconfig.Client(c.cfg.Kubeconfig)
	if err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	services := factory.Core().V1().Services()
	nodes := factory.Core().V1().Nodes()
	// Every change recomputes all LoadBalancer Services at once: ports are
	// shared between them, and there are few.
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	defer queue.ShutDown()
	enqueue := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { queue.Add("all") },
		UpdateFunc: func(any, any) { queue.Add("all") },
		DeleteFunc: func(any) { queue.Add("all") },
	}
	if _, err := services.Informer().AddEventHandler(enqueue); err != nil {
		return err
	}
	if _, err := nodes.Informer().AddEventHandler(enqueue); err != nil {
		return err
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	defer broadcaster.Shutdown()
	broadcaster.StartRecordingToSink(&typedv1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	recorder := broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "skiff-servicelb"})

	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitFor(ctx, "", services.Informer().HasSyncedChecker(), nodes.Informer().HasSyncedChecker()) {
		return nil
	}
	c.SetReady()
	go func() {
		<-ctx.Done()
		queue.ShutDown()
	}()
	reported := map[string]string{} // Service -> the conflict last reported
	for {
		key, shutdown := queue.Get()
		if shutdown {
			return nil
		}
		svcs, _ := services.Lister().List(labels.Everything())
		ns, _ := nodes.Lister().List(labels.Everything())
		err := sync(ctx, client, recorder, svcs, ns, c.cfg.Reserved, reported)
		if err != nil {
			klog.ErrorS(err, "updating LoadBalancer Services")
			queue.AddRateLimited(key)
		} else {
			queue.Forget(key)
		}
		queue.Done(key)
	}
}

// sync writes every LoadBalancer Service's status from the plan.
func sync(ctx context.Context, client kubernetes.Interface, rec record.EventRecorder, svcs []*v1.Service, nodes []*v1.Node, reserved, reported map[string]string) error {
	assigned, conflicts := Plan(svcs, nodes, reserved)
	// Forget reports of conflicts that ended, deleted Services included.
	for key := range reported {
		if _, still := conflicts[key]; !still {
			delete(reported, key)
		}
	}
	for _, s := range svcs {
		if !Managed(s) {
			continue
		}
		key := s.Namespace + "/" + s.Name
		want := v1.LoadBalancerStatus{}
		if c, bad := conflicts[key]; bad {
			if reported[key] != c {
				rec.Event(s, v1.EventTypeWarning, "PortInUse", c)
				reported[key] = c
			}
		} else {
			want.Ingress = assigned
		}
		if equality.Semantic.DeepEqual(s.Status.LoadBalancer, want) {
			continue
		}
		s = s.DeepCopy()
		s.Status.LoadBalancer = want
		if _, err := client.CoreV1().Services(s.Namespace).UpdateStatus(ctx, s, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("service %s: %w", key, err)
		}
	}
	return nil
}

// Managed tells whether a Service is one this controller serves.
func Managed(s *v1.Service) bool {
	return s.Spec.Type == v1.ServiceTypeLoadBalancer && s.Spec.LoadBalancerClass == nil && s.DeletionTimestamp == nil
}

// Plan returns the load balancer addresses (the serving nodes' addresses) and,
// for each Service that can't have them because an older Service already
// takes one of its ports on those addresses, or the nodes themselves listen
// there (reserved, and each node's kubelet port), the reason.
func Plan(svcs []*v1.Service, nodes []*v1.Node, reserved map[string]string) ([]v1.LoadBalancerIngress, map[string]string) {
	var ips []string
	labelled := slices.ContainsFunc(nodes, func(n *v1.Node) bool { return n.Labels[NodeLabel] == "true" })
	for _, n := range nodes {
		if (labelled && n.Labels[NodeLabel] != "true") || !ready(n) || n.DeletionTimestamp != nil {
			continue
		}
		if ip := address(n); ip != "" && !slices.Contains(ips, ip) {
			ips = append(ips, ip)
		}
	}
	sort.Slice(ips, func(i, j int) bool { return compareIP(ips[i], ips[j]) })
	var ingress []v1.LoadBalancerIngress
	vip := v1.LoadBalancerIPModeVIP
	for _, ip := range ips {
		ingress = append(ingress, v1.LoadBalancerIngress{IP: ip, IPMode: &vip})
	}

	managed := slices.DeleteFunc(slices.Clone(svcs), func(s *v1.Service) bool { return !Managed(s) })
	sort.Slice(managed, func(i, j int) bool {
		a, b := managed[i], managed[j]
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	own := maps.Clone(reserved)
	if own == nil {
		own = map[string]string{}
	}
	for _, n := range nodes {
		if p := n.Status.DaemonEndpoints.KubeletEndpoint.Port; p != 0 {
			own[fmt.Sprintf("%d/TCP", p)] = "the kubelet"
		}
	}
	taken := map[string]string{} // "80/TCP" -> Service
	conflicts := map[string]string{}
	for _, s := range managed {
		key := s.Namespace + "/" + s.Name
		var clash []string
		for _, p := range s.Spec.Ports {
			if what, ok := own[portKey(p)]; ok {
				clash = append(clash, fmt.Sprintf("%s is where %s listens on the nodes' addresses: pick another port", portKey(p), what))
			} else if owner, ok := taken[portKey(p)]; ok && owner != key {
				clash = append(clash, fmt.Sprintf("%s is already used by LoadBalancer Service %s on the nodes' addresses: pick another port, or delete that Service", portKey(p), owner))
			}
		}
		if len(clash) > 0 {
			conflicts[key] = strings.Join(clash, "; ")
			continue
		}
		for _, p := range s.Spec.Ports {
			taken[portKey(p)] = key
		}
	}
	return ingress, conflicts
}

func portKey(p v1.ServicePort) string {
	proto := p.Protocol
	if proto == "" {
		proto = v1.ProtocolTCP
	}
	return fmt.Sprintf("%d/%s", p.Port, proto)
}

func ready(n *v1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// address is the node's external address if it has one, else its internal.
func address(n *v1.Node) string {
	for _, t := range []v1.NodeAddressType{v1.NodeExternalIP, v1.NodeInternalIP} {
		for _, a := range n.Status.Addresses {
			if a.Type == t && net.ParseIP(a.Address).To4() != nil {
				return a.Address
			}
		}
	}
	return ""
}

func compareIP(a, b string) bool {
	return string(net.ParseIP(a).To16()) < string(net.ParseIP(b).To16())
}
