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
