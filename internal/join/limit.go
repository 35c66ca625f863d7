package join

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// failureLimiter allows each source address a burst of failed joins, then
// one more every failureEvery: a guesser of tokens gets a few tries a minute.
type failureLimiter struct {
	mu      sync.Mutex
	sources map[string]*rate.Limiter
	swept   time.Time
}

const (
	failureBurst = 10
	failureEvery = 6 * time.Second
)

// allowed says whether source may try (it has failures left).
func (f *failureLimiter) allowed(source string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.sources[source]
	return !ok || l.Tokens() >= 1
}

// failed counts a failed join from source.
func (f *failureLimiter) failed(source string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if f.sources == nil {
		f.sources = map[string]*rate.Limiter{}
	}
	// Forget sources whose limiter is full again, at most once a minute.
	if now.Sub(f.swept) > time.Minute {
		for s, l := range f.sources {
			if l.TokensAt(now) >= failureBurst {
				delete(f.sources, s)
			}
		}
		f.swept = now
	}
	l, ok := f.sources[source]
	if !ok {
		l = rate.NewLimiter(rate.Every(failureEvery), failureBurst)
		f.sources[source] = l
	}
	l.AllowN(now, 1)
}
