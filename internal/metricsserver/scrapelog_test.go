package metricsserver

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/skiff-dev/skiff/internal/logging"
)

type buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) { b.mu.Lock(); defer b.mu.Unlock(); return b.b.Write(p) }
func (b *buffer) String() string              { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

// TestScrapeLog: a kubelet's failure streak is logged once, with its reason,
// and its end once.
func TestScrapeLog(t *testing.T) {
	var out buffer
	if err := logging.Setup(0, &out); err != nil {
		t.Fatal(err)
	}
	up := true
	kubelet := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up {
			w.WriteHeader(http.StatusForbidden)
		}
	}))
	defer kubelet.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()

	rt := newScrapeLog().wrap(http.DefaultTransport)
	scrape := func(url string) {
		req, _ := http.NewRequest(http.MethodGet, url+"/metrics/resource", nil)
		if resp, err := rt.RoundTrip(req); err == nil {
			resp.Body.Close()
		}
	}
	for range 3 {
		scrape(dead.URL)
		scrape(kubelet.URL)
	}
	up = false
	for range 3 {
		scrape(kubelet.URL)
	}
	up = true
	scrape(kubelet.URL)

	log := out.String()
	deadHost, liveHost := strings.TrimPrefix(dead.URL, "http://"), strings.TrimPrefix(kubelet.URL, "http://")
	if n := strings.Count(log, `"cannot scrape a kubelet`); n != 2 {
		t.Errorf("%d failure lines, want one per streak (2):\n%s", n, log)
	}
	if !strings.Contains(log, "connection refused") || !strings.Contains(log, `kubelet="`+deadHost+`"`) {
		t.Errorf("the dead kubelet's reason is not logged:\n%s", log)
	}
	if !strings.Contains(log, "the kubelet answered 403 Forbidden") {
		t.Errorf("the refusing kubelet's reason is not logged:\n%s", log)
	}
	if n := strings.Count(log, `"scraping a kubelet again" logger="metricsserver" kubelet="`+liveHost+`"`); n != 1 {
		t.Errorf("%d recovery lines, want 1:\n%s", n, log)
	}
}
