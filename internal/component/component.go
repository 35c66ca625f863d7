// Package component runs the long-running parts of a skiff process.
//
// Every part (datastore, API server, kubelet, ...) is a Component. A server or
// an agent is an ordered list of them: each is started once the one before it
// is ready, and when any of them fails, or the process is asked to stop, the
// started ones are stopped in reverse order.
package component

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/klog/v2"
)

// Component is one long-running part of skiff.
type Component interface {
	// Name is a short name for logs and errors.
	Name() string
	// Run does the component's work until ctx is cancelled, then cleans up and
	// returns nil. An error (or a return before ctx ends) means it failed.
	Run(ctx context.Context) error
}

// Readier is a component that is ready some time after it starts: the next
// one starts once Ready returned. A component without it is ready as soon as
// it runs.
type Readier interface {
	// Ready returns once the component is serving, or with ctx's error.
	Ready(ctx context.Context) error
}

var (
	// StopTimeout bounds how long one component may take to stop.
	StopTimeout = 30 * time.Second
	// ReadyTimeout bounds how long one component may take to be ready;
	// start-up then fails with its name. It is generous: containerd is
	// ready once the air-gap images are imported, which on an SD card can
	// take minutes.
	ReadyTimeout = 10 * time.Minute
	// WaitingLog is how often a component that is not ready yet is logged.
	WaitingLog = 15 * time.Second
)

type running struct {
	c      Component
	cancel context.CancelFunc
	done   chan error
}

// Run starts the components in order, each once the one before is ready, calls
// onReady when all are, and runs until ctx ends or a component fails. It then
// stops the started components in reverse order. It returns the first failure,
// or nil after a requested stop.
func Run(ctx context.Context, components []Component, onReady func()) error {
	var started []*running
	failed := make(chan error, len(components))
	var err error

	for _, c := range components {
		r := start(c, failed)
		started = append(started, r)
		if err = waitReady(ctx, r, failed); err != nil {
			if ctx.Err() != nil {
				err = nil // asked to stop while starting
			}
			break
		}
		klog.V(1).InfoS("component ready", "component", c.Name())
	}
	if err == nil && ctx.Err() == nil {
		if onReady != nil {
			onReady()
		}
		select {
		case <-ctx.Done():
		case err = <-failed:
		}
	}
	for i := len(started) - 1; i >= 0; i-- {
		if serr := stop(started[i]); serr != nil && err == nil {
			err = serr
		}
	}
	return err
}

func start(c Component, failed chan<- error) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() {
		err := c.Run(ctx)
		if err == nil && ctx.Err() == nil {
			err = errors.New("stopped unexpectedly")
		}
		if ctx.Err() == nil {
			err = fmt.Errorf("%s: %w", c.Name(), err)
			failed <- err
		}
		r.done <- err
	}()
	return r
}

// waitReady waits for r to be ready, for it to fail, or for ctx to end. A
// component that takes long is logged by name, and one that is not ready
// within ReadyTimeout fails start-up.
func waitReady(ctx context.Context, r *running, failed <-chan error) error {
	readier, ok := r.c.(Readier)
	if !ok {
		return ctx.Err()
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan error, 1)
	go func() { ready <- readier.Ready(rctx) }()
	start := time.Now()
	timeout := time.NewTimer(ReadyTimeout)
	defer timeout.Stop()
	tick := time.NewTicker(WaitingLog)
	defer tick.Stop()
	for {
		select {
		case err := <-ready:
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("%s: %w", r.c.Name(), err)
			}
			return ctx.Err()
		case err := <-failed:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			klog.InfoS("waiting for "+r.c.Name(), "for", time.Since(start).Round(time.Second))
		case <-timeout.C:
			return fmt.Errorf("%s was not ready within %s: see the lines above for why", r.c.Name(), ReadyTimeout)
		}
	}
}

func stop(r *running) error {
	start := time.Now()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			klog.V(1).InfoS("component stopped", "component", r.c.Name(), "took", time.Since(start), "err", err)
		} else {
			klog.V(1).InfoS("component stopped", "component", r.c.Name(), "took", time.Since(start))
		}
		return nil
	case <-time.After(StopTimeout):
		return fmt.Errorf("%s did not stop within %s", r.c.Name(), StopTimeout)
	}
}
