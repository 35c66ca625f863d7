package proxy

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestLoop checks the pacing of syncs: one at start, then a burst of
// changes costs one or two syncs, and a failed sync is retried.
func TestLoop(t *testing.T) {
	p, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	fail := atomic.Bool{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- p.loop(ctx, func() error {
			calls.Add(1)
			if fail.CompareAndSwap(true, false) {
				return errors.New("test failure")
			}
			return nil
		})
	}()
	if err := p.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d syncs at start, want 1", n)
	}
	for range 100 {
		p.trigger()
	}
	time.Sleep(3 * minSyncInterval)
	if n := calls.Load(); n < 2 || n > 3 {
		t.Errorf("%d syncs after a burst of 100 changes, want 1 or 2 more", n)
	}

	fail.Store(true)
	before := calls.Load()
	p.trigger()
	time.Sleep(minSyncInterval + minRetry + 500*time.Millisecond)
	if n := calls.Load() - before; n != 2 {
		t.Errorf("%d syncs after a failed one, want the failure and one retry", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("loop: %v", err)
	}
}

// TestRun runs the component against a fake API server, in a throwaway
// network namespace.
func TestRun(t *testing.T) {
	fd := testNetns(t)
	svcs, eps := scenario()
	client := fake.NewClientset()
	for _, s := range svcs {
		if _, err := client.CoreV1().Services(s.Namespace).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range eps {
		if _, err := client.DiscoveryV1().EndpointSlices(e.Namespace).Create(context.Background(), e, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dnsKnown := make(chan struct{})
	cfg := testConfig()
	cfg.Table = "skiff-test"
	cfg.DNSAddress = func(ctx context.Context) (net.IP, error) {
		select {
		case <-dnsKnown:
			return net.ParseIP("10.0.0.1"), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.run(ctx, client, fd) }()
	readyCtx, readyCancel := context.WithTimeout(ctx, 10*time.Second)
	defer readyCancel()
	if err := p.Ready(readyCtx); err != nil {
		t.Fatalf("not ready: %v", err)
	}

	waitFor := func(what string, ok func([]string) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			elems := kernelElements(t, fd, cfg.Table)
			if ok(elems) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: map elements:\n\t%s", what, strings.Join(elems, "\n\t"))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	has := func(s string) func([]string) bool {
		return func(e []string) bool {
			return slices.ContainsFunc(e, func(x string) bool { return strings.HasPrefix(x, s) })
		}
	}
	waitFor("first sync", has("service-ips: 10.43.0.20 . tcp . 80 : goto svc-"))
	waitFor("DNS pending", has("no-endpoint-ips: 10.43.0.10 . udp . 53 : goto reject-new"))

	close(dnsKnown)
	waitFor("DNS known", has("service-ips: 10.43.0.10 . udp . 53 : goto svc-"))

	added := service("default", "added", "10.43.0.99")
	if _, err := client.CoreV1().Services("default").Create(ctx, added, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("Service added", has("no-endpoint-ips: 10.43.0.99 . tcp . 80 : goto reject-new"))
	if err := client.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("Service deleted", func(e []string) bool { return !has("service-ips: 10.43.0.20 ")(e) })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
	if len(kernelChains(t, fd, cfg.Table)) == 0 {
		t.Error("the table was removed at shutdown")
	}
}
