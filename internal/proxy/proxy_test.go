package proxy

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/skiff-dev/skiff/internal/component"
)

// TestLoop checks the pacing of syncs: one at start, before the proxy is
// ready; a burst of changes costs one or two; a failed sync is retried
// without a change. Each sync hands the test a channel for its result and
// waits for it, so the test knows at every step what the loop has seen;
// the loop's onIdle hook tells it when the loop has nothing left to do.
// Nothing waits a fixed time.
func TestLoop(t *testing.T) {
	p, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	syncs := make(chan chan<- error)
	idle := make(chan struct{})
	p.loop.OnIdle = func() {
		select {
		case idle <- struct{}{}:
		case <-ctx.Done():
		}
	}
	done := make(chan error, 1)
	go func() {
		done <- p.loop.Run(ctx, &p.Latch, func() error {
			result := make(chan error)
			select {
			case syncs <- result:
			case <-ctx.Done():
				return ctx.Err()
			}
			select {
			case err := <-result:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()

	const timeout = 10 * time.Second
	// nextSync waits for the loop's next sync, and returns where its
	// result goes.
	nextSync := func(what string) chan<- error {
		t.Helper()
		select {
		case result := <-syncs:
			return result
		case <-idle:
			t.Fatalf("%s: the loop went idle, want a sync", what)
		case <-time.After(timeout):
			t.Fatalf("%s: no sync within %v", what, timeout)
		}
		return nil
	}
	// nextIdle waits for the loop to have nothing to do: a sync before
	// that is one too many.
	nextIdle := func(what string) {
		t.Helper()
		select {
		case <-idle:
		case <-syncs:
			t.Fatalf("%s: one sync too many", what)
		case <-time.After(timeout):
			t.Fatalf("%s: the loop neither synced nor went idle within %v", what, timeout)
		}
	}

	result := nextSync("start")
	ended, end := context.WithCancel(ctx)
	end()
	if p.Ready(ended) == nil {
		t.Error("ready during the first sync")
	}
	result <- nil
	nextIdle("after the first sync")
	if err := p.Ready(ctx); err != nil {
		t.Fatal(err)
	}

	// The burst's first change wakes the loop, whose sync takes the
	// changes made until it starts; those made later, and the one made
	// during that sync, are the next sync's. However the burst falls
	// against the loop, that is two syncs, then nothing.
	for range 100 {
		p.trigger()
	}
	result = nextSync("after a burst of changes")
	p.trigger()
	result <- nil
	result = nextSync("after a change during a sync")
	result <- nil
	nextIdle("after the burst")

	p.trigger()
	result = nextSync("after a change")
	failed := time.Now()
	result <- errors.New("test failure")
	nextIdle("after a failed sync")
	result = nextSync("retrying the failed sync")
	if waited := time.Since(failed); waited < component.MinRetry {
		t.Errorf("the failed sync was retried after %v, want at least %v", waited, component.MinRetry)
	}
	result <- nil
	nextIdle("after the retry")

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("loop: %v", err)
		}
	case <-time.After(timeout):
		t.Fatal("the loop did not return after its context ended")
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
