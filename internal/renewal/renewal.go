// Package renewal is the component that keeps a process's own certificates
// fresh while it runs, on a server as on an agent: on a period it calls a
// renew function, which renews what is close to expiry. The upstream parts
// reload their certificate files by themselves once they change.
package renewal

import (
	"context"
	"errors"
	"time"

	"k8s.io/klog/v2"
)

// DefaultEvery is how often the certificates are checked: leaf certificates
// are renewed 90 days before they expire, so twice a day leaves room for
// many failed tries.
const DefaultEvery = 12 * time.Hour

// Config is what a Renewal renews and how often.
type Config struct {
	// What names the certificates in logs, such as "the server's
	// certificates".
	What string
	// Every is how often Renew is called; DefaultEvery when zero.
	Every time.Duration
	// Renew renews the certificates that are due and says whether it
	// renewed any.
	Renew func(ctx context.Context) (bool, error)
}

// Renewal is the renewal component.
type Renewal struct {
	cfg Config
}

// New returns the component.
func New(cfg Config) (*Renewal, error) {
	if cfg.Renew == nil {
		return nil, errors.New("renewal: no renew function")
	}
	if cfg.Every <= 0 {
		cfg.Every = DefaultEvery
	}
	return &Renewal{cfg: cfg}, nil
}

// Name implements component.Component.
func (r *Renewal) Name() string { return "certificate renewal" }

// Run implements component.Component.
func (r *Renewal) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		renewed, err := r.cfg.Renew(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			klog.ErrorS(err, "renewing "+r.cfg.What+" failed; will try again", "in", r.cfg.Every)
		case renewed:
			klog.InfoS("renewed " + r.cfg.What)
		}
	}
}
