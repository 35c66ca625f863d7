package proxy

import (
	"fmt"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
)

// benchScenario is n Services with m endpoints each (a third of them on
// this node); every fourth Service is a NodePort.
func benchScenario(n, m int) ([]*v1.Service, []*discoveryv1.EndpointSlice) {
	var svcs []*v1.Service
	var eps []*discoveryv1.EndpointSlice
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		var opts []svcOpt
		if i%4 == 0 {
			opts = append(opts, nodePort(int32(30000+i)))
		}
		svcs = append(svcs, service("bench", name, fmt.Sprintf("10.43.%d.%d", i/250, i%250+1), opts...))
		var list []ep
		for j := range m {
			k := i*m + j
			node := "node-b"
			if j%3 == 0 {
				node = testNode
			}
			list = append(list, readyEP(fmt.Sprintf("10.42.%d.%d", k/250, k%250+1), node))
		}
		eps = append(eps, slice("bench", name, name+"-1", httpPort, list...))
	}
	return svcs, eps
}

// BenchmarkFullSync times a sync that writes the whole table of 1,000
// Services with 10 endpoints each, replacing the previous one.
func BenchmarkFullSync(b *testing.B) {
	fd := testNetns(b)
	svcs, eps := benchScenario(1000, 10)
	for b.Loop() {
		s := testSyncer(b, fd, "skiff-bench")
		if err := s.Sync(svcs, eps); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIncremental times a sync after one endpoint of one Service
// changed (it becomes unready, or ready again), in that table.
func BenchmarkIncremental(b *testing.B) {
	fd := testNetns(b)
	svcs, eps := benchScenario(1000, 10)
	s := testSyncer(b, fd, "skiff-bench")
	if err := s.Sync(svcs, eps); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		// A new object, as an informer delivers it.
		k := (i * 7) % len(eps)
		sl := eps[k].DeepCopy()
		c := &sl.Endpoints[0].Conditions
		c.Ready = ptr.To(c.Ready != nil && !*c.Ready)
		eps[k] = sl
		i++
		if err := s.Sync(svcs, eps); err != nil {
			b.Fatal(err)
		}
		if s.last.full || s.last.services != 1 {
			b.Fatalf("sync: full %v, %d service ports; want a partial sync of one", s.last.full, s.last.services)
		}
	}
}

// BenchmarkModel times the pure part of a sync: computing the table.
func BenchmarkModel(b *testing.B) {
	st := testSettings(b, testConfig())
	svcs, eps := benchScenario(1000, 10)
	for b.Loop() {
		buildRuleset(st, svcs, eps, nil, nil)
	}
}
