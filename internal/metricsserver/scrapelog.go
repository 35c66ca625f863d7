package metricsserver

import (
	"fmt"
	"net/http"
	"sync"

	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/logging"
)

// The scraper's own lines, printed on every failed scrape of a node (every
// 15 s), give way to scrapeLog's.
var scraperErrors = []string{"Failed to scrape node", "Failed to scrape node, timeout to access kubelet"}

// scrapeLog logs a kubelet that cannot be scraped once when its failures
// start, with the reason, and once when it answers again: the node's
// metrics are missing in between.
type scrapeLog struct {
	mu      sync.Mutex
	failing map[string]bool // by kubelet host:port
}

func newScrapeLog() *scrapeLog {
	for _, msg := range scraperErrors {
		logging.Replace(msg)
	}
	return &scrapeLog{failing: map[string]bool{}}
}

// wrap is a rest.Config WrapTransport for the kubelet client.
func (l *scrapeLog) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		switch {
		case err != nil:
			l.failed(req.URL.Host, err)
		case resp.StatusCode >= 300:
			l.failed(req.URL.Host, fmt.Errorf("the kubelet answered %s", resp.Status))
		default:
			l.answered(req.URL.Host)
		}
		return resp, err
	})
}

func (l *scrapeLog) failed(kubelet string, err error) {
	l.mu.Lock()
	first := !l.failing[kubelet]
	l.failing[kubelet] = true
	l.mu.Unlock()
	if first {
		klog.ErrorS(err, "cannot scrape a kubelet: its node has no metrics until it answers (logged once)", "kubelet", kubelet)
	}
}

func (l *scrapeLog) answered(kubelet string) {
	l.mu.Lock()
	was := l.failing[kubelet]
	delete(l.failing, kubelet)
	l.mu.Unlock()
	if was {
		klog.InfoS("scraping a kubelet again", "kubelet", kubelet)
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
