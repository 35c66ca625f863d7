package component

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fake records what happens to it in a log shared by the test's components.
type fake struct {
	name    string
	log     *events
	ready   bool // has a Ready method that waits for markReady
	readyCh chan struct{}
	fail    chan error // Run returns what it receives
}

type events struct {
	mu sync.Mutex
	e  []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.e = append(e.e, s)
}

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.e)
}

func (f *fake) Name() string { return f.name }

func (f *fake) Run(ctx context.Context) error {
	f.log.add("start " + f.name)
	select {
	case <-ctx.Done():
		f.log.add("stop " + f.name)
		return nil
	case err := <-f.fail:
		return err
	}
}

// withReady is a fake with a Ready method.
type withReady struct{ *fake }

func (w withReady) Ready(ctx context.Context) error {
	select {
	case <-w.readyCh:
		w.log.add("ready " + w.name)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func newFakes(log *events, names ...string) ([]Component, map[string]*fake) {
	var cs []Component
	m := map[string]*fake{}
	for _, n := range names {
		f := &fake{name: strings.TrimSuffix(n, "*"), log: log, readyCh: make(chan struct{}), fail: make(chan error, 1)}
		m[f.name] = f
		if strings.HasSuffix(n, "*") { // has Ready
			cs = append(cs, withReady{f})
		} else {
			cs = append(cs, f)
		}
	}
	return cs, m
}

func waitFor(t *testing.T, log *events, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Contains(log.list(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in %v", want, log.list())
		}
		time.Sleep(time.Millisecond)
	}
}

func TestOrderAndReverseStop(t *testing.T) {
	log := &events{}
	cs, m := newFakes(log, "a*", "b", "c*")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	readyCalled := make(chan struct{})
	go func() { done <- Run(ctx, cs, func() { close(readyCalled) }) }()

	waitFor(t, log, "start a")
	if slices.Contains(log.list(), "start b") {
		t.Fatal("b started before a was ready")
	}
	close(m["a"].readyCh)
	waitFor(t, log, "start c") // b has no Ready: c follows at once
	select {
	case <-readyCalled:
		t.Fatal("onReady before c was ready")
	default:
	}
	close(m["c"].readyCh)
	<-readyCalled
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("a requested stop returned %v", err)
	}
	want := []string{"start a", "ready a", "start b", "start c", "ready c", "stop c", "stop b", "stop a"}
	if got := log.list(); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}

func TestFailureAfterStart(t *testing.T) {
	log := &events{}
	cs, m := newFakes(log, "a", "b", "c")
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), cs, nil) }()
	waitFor(t, log, "start c")
	m["b"].fail <- errors.New("boom")
	err := <-done
	if err == nil || err.Error() != "b: boom" {
		t.Fatalf("Run returned %v, want b: boom", err)
	}
	got := log.list()
	if !slices.Contains(got, "stop c") || !slices.Contains(got, "stop a") || slices.Index(got, "stop c") > slices.Index(got, "stop a") {
		t.Fatalf("events %v: want c then a stopped", got)
	}
}

func TestFailureWhileStarting(t *testing.T) {
	log := &events{}
	cs, m := newFakes(log, "a", "b*", "c")
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), cs, nil) }()
	waitFor(t, log, "start b")
	m["b"].fail <- errors.New("no port")
	if err := <-done; err == nil || err.Error() != "b: no port" {
		t.Fatalf("Run returned %v, want b: no port", err)
	}
	if got := log.list(); slices.Contains(got, "start c") || !slices.Contains(got, "stop a") {
		t.Fatalf("events %v: want c never started and a stopped", got)
	}
}

func TestReadyTimeout(t *testing.T) {
	defer func(r, w time.Duration) { ReadyTimeout, WaitingLog = r, w }(ReadyTimeout, WaitingLog)
	ReadyTimeout, WaitingLog = 50*time.Millisecond, 10*time.Millisecond
	log := &events{}
	cs, _ := newFakes(log, "a", "slow*")
	err := Run(context.Background(), cs, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "slow was not ready within 50ms") {
		t.Fatalf("Run returned %v, want slow's timeout", err)
	}
	if got := log.list(); !slices.Contains(got, "stop slow") || !slices.Contains(got, "stop a") {
		t.Fatalf("events %v: want both stopped", got)
	}
}

func TestUnexpectedReturn(t *testing.T) {
	log := &events{}
	cs, m := newFakes(log, "a")
	m["a"].fail <- nil
	if err := Run(context.Background(), cs, nil); err == nil || err.Error() != "a: stopped unexpectedly" {
		t.Fatalf("Run returned %v", err)
	}
}

// A Gate holds the components after it until its latch is set; the ones
// between the latch's owner and the gate start meanwhile.
func TestGate(t *testing.T) {
	log := &events{}
	var built Latch
	between := &fake{name: "between", log: log}
	after := &fake{name: "after", log: log}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []Component{between, Gate{What: "the build", Latch: &built}, after}, nil)
	}()
	waitFor(t, log, "start between")
	log.add("built")
	built.SetReady()
	waitFor(t, log, "start after")
	if l := log.list(); slices.Index(l, "start after") < slices.Index(l, "built") {
		t.Fatalf("started before the gate opened: %v", l)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
