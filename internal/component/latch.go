package component

import (
	"context"
	"sync"
)

// Latch is a component's readiness: set once, waited on. Its zero value is
// ready to use; a component that embeds it gets its Ready method.
type Latch struct {
	once sync.Once
	set  sync.Once
	ch   chan struct{}
}

func (l *Latch) init() { l.once.Do(func() { l.ch = make(chan struct{}) }) }

// SetReady marks the component ready; later calls do nothing.
func (l *Latch) SetReady() {
	l.init()
	l.set.Do(func() { close(l.ch) })
}

// Ready returns once SetReady was called, or with ctx's error.
func (l *Latch) Ready(ctx context.Context) error {
	l.init()
	select {
	case <-l.ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Gate is a component that waits in a list for a Latch that a component
// earlier in the list sets: the components after the gate wait for it, and
// the ones between start meanwhile.
type Gate struct {
	// What the gate waits for, for logs: "waiting for " + What.
	What  string
	Latch *Latch
}

// Name implements Component.
func (g Gate) Name() string { return g.What }

// Run implements Component.
func (g Gate) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// Ready implements Readier.
func (g Gate) Ready(ctx context.Context) error { return g.Latch.Ready(ctx) }
