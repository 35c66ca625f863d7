package component

import (
	"context"
	"time"

	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// Sync pacing: a change syncs at once if the last sync is older than
// MinSyncInterval, else when it is that old, so a burst of changes costs
// one sync per interval. Failed syncs are retried with backoff.
const (
	MinSyncInterval = 100 * time.Millisecond
	MinRetry        = time.Second
	MaxRetry        = 30 * time.Second
)

// SyncLoop runs a component's sync (the Service proxy's, the hostPorts')
// whenever something it watches changed: events only mark a sync as
// pending (a channel of one), and the loop spaces syncs by
// MinSyncInterval: at once when idle, coalesced under a burst. A workqueue
// would do the same with a single key; this is shorter and has no rate
// limiter to tune.
type SyncLoop struct {
	// What the loop syncs, for logs: "service proxy".
	What string
	kick chan struct{}
	// OnIdle, if not nil, is called each time the loop is about to wait
	// with no change pending: for the next change, a retry, or the end of
	// its context. Tests set it to know that the loop has nothing to do.
	OnIdle func()
}

// NewSyncLoop returns the loop of what.
func NewSyncLoop(what string) *SyncLoop {
	return &SyncLoop{What: what, kick: make(chan struct{}, 1)}
}

// Handler is an informer event handler that triggers the loop on every
// change.
func (l *SyncLoop) Handler() cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { l.Trigger() },
		UpdateFunc: func(any, any) { l.Trigger() },
		DeleteFunc: func(any) { l.Trigger() },
	}
}

// Trigger marks a sync as pending.
func (l *SyncLoop) Trigger() {
	select {
	case l.kick <- struct{}{}:
	default: // a sync is pending already
	}
}

// Run syncs once, sets ready, then syncs on triggers until ctx ends. A
// failed sync is logged and retried; ready is set even after a failed
// first sync.
func (l *SyncLoop) Run(ctx context.Context, ready *Latch, sync func() error) error {
	var (
		last     time.Time
		failures int
		retry    <-chan time.Time
	)
	run := func() {
		if wait := MinSyncInterval - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		select { // changes that came while waiting are in this sync
		case <-l.kick:
		default:
		}
		last = time.Now()
		if err := sync(); err != nil {
			failures++
			delay := MaxRetry
			if failures < 6 {
				delay = min(MinRetry<<(failures-1), MaxRetry)
			}
			klog.ErrorS(err, l.What+": sync failed; the next one rewrites the whole table", "retryIn", delay)
			retry = time.After(delay)
			return
		}
		failures, retry = 0, nil
	}
	run()
	ready.SetReady()
	for {
		if l.OnIdle != nil && len(l.kick) == 0 {
			l.OnIdle()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-l.kick:
		case <-retry:
		}
		run()
	}
}
