package proxy

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// healthChecks answers, for each LoadBalancer Service with
// externalTrafficPolicy Local, on its healthCheckNodePort as kube-proxy
// does: 200 and the number of this node's ready endpoints, or 503 when it
// has none, so that a load balancer outside the cluster sends the Service's
// traffic only to nodes that can take it. It listens on every address.
type healthChecks struct {
	node    string
	mu      sync.Mutex
	servers map[int32]*healthServer
}

type healthServer struct {
	svc   types.NamespacedName
	local atomic.Int64
	srv   *http.Server
}

// healthAnswer is kube-proxy's answer.
type healthAnswer struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

func (h *healthServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	var a healthAnswer
	a.Service.Namespace, a.Service.Name = h.svc.Namespace, h.svc.Name
	a.LocalEndpoints, a.ServiceProxyHealthy = int(h.local.Load()), true
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(a.LocalEndpoints))
	if a.LocalEndpoints == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(a)
}

// update serves the health check ports the Services ask for, and stops
// serving those no Service asks for any more. It runs at every sync: with
// no such Service it returns at once, and it counts only those Services'
// endpoints.
func (hc *healthChecks) update(svcs []*v1.Service, slices []*discoveryv1.EndpointSlice) {
	want := map[int32]types.NamespacedName{}
	for _, s := range svcs {
		if s.Spec.Type == v1.ServiceTypeLoadBalancer && s.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal && s.Spec.HealthCheckNodePort > 0 {
			want[s.Spec.HealthCheckNodePort] = types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
		}
	}
	hc.mu.Lock()
	defer hc.mu.Unlock()
	if len(want) == 0 && len(hc.servers) == 0 {
		return
	}
	if hc.servers == nil {
		hc.servers = map[int32]*healthServer{}
	}
	for port, h := range hc.servers {
		if svc, ok := want[port]; !ok || svc != h.svc {
			h.srv.Close()
			delete(hc.servers, port)
		}
	}
	local := localEndpoints(hc.node, want, slices)
	for port, svc := range want {
		h := hc.servers[port]
		if h == nil {
			ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(int(port))))
			if err != nil {
				klog.ErrorS(err, "service proxy: cannot serve a Service's health check port; will try again at the next change", "service", svc, "port", port)
				continue
			}
			h = &healthServer{svc: svc}
			h.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
			go func() {
				if err := h.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					klog.ErrorS(err, "service proxy: health check server failed", "service", svc, "port", port)
				}
			}()
			hc.servers[port] = h
		}
		h.local.Store(int64(local[svc]))
	}
}

// close stops every health check server.
func (hc *healthChecks) close() {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	for port, h := range hc.servers {
		h.srv.Close()
		delete(hc.servers, port)
	}
}

// localEndpoints counts the ready endpoints on node of the Services in want:
// distinct addresses, whatever their ports.
func localEndpoints(node string, want map[int32]types.NamespacedName, slices []*discoveryv1.EndpointSlice) map[types.NamespacedName]int {
	wanted := map[types.NamespacedName]bool{}
	for _, svc := range want {
		wanted[svc] = true
	}
	type key struct {
		svc  types.NamespacedName
		addr string
	}
	seen := map[key]bool{}
	out := map[types.NamespacedName]int{}
	for _, s := range slices {
		svc := types.NamespacedName{Namespace: s.Namespace, Name: s.Labels[discoveryv1.LabelServiceName]}
		if !wanted[svc] {
			continue
		}
		for _, e := range s.Endpoints {
			if e.NodeName == nil || *e.NodeName != node || (e.Conditions.Ready != nil && !*e.Conditions.Ready) {
				continue
			}
			for _, a := range e.Addresses {
				if k := (key{svc, a}); !seen[k] {
					seen[k] = true
					out[svc]++
				}
			}
		}
	}
	return out
}
