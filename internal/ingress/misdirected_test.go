package ingress

import "testing"

// TestMisdirectedRequests: the conformance suite's cases for HTTPS
// listeners of one port (GatewayHTTPSListenerDetectMisdirectedRequests):
// a request whose host belongs to another listener than the connection's
// server name is misdirected (421); the others are routed (200 or 404).
func TestMisdirectedRequests(t *testing.T) {
	in, _ := conformanceInput(t, "tests/httproute-https-listener-detect-misdirected-requests.yaml")
	res := Build(testConfig, in)
	l := res.Table.ListenerFor(testConfig.Addresses[0], 443)
	if l == nil {
		t.Fatal("nothing serves port 443")
	}
	for _, c := range []struct {
		sni, host  string
		misdirects bool
	}{
		{"example.org", "example.org", false},
		{"example.org", "second-example.org", true},
		{"example.org", "unknown-example.org", false},
		{"second-example.org", "second-example.org", false},
		{"second-example.org", "example.org", true},
		{"second-example.org", "unknown-example.org", true},
		{"third-example.wildcard.org", "third-example.wildcard.org", false},
		{"third-example.wildcard.org", "fith-example.wildcard.org", false},
		{"third-example.wildcard.org", "fourth-example.wildcard.org", true},
		{"third-example.wildcard.org", "second-example.org", true},
		{"third-example.wildcard.org", "unknown-example.org", true},
		{"fourth-example.wildcard.org", "fourth-example.wildcard.org", false},
		{"fourth-example.wildcard.org", "fith-example.wildcard.org", true},
		{"unknown-example.org", "example.org", false},
		{"unknown-example.org", "unknown-example.org", false},
		{"", "second-example.org", false}, // no SNI: nothing to compare
		{"example.org", "EXAMPLE.org:443", false},
	} {
		if got := l.Misdirected(c.sni, c.host); got != c.misdirects {
			t.Errorf("server name %q, host %q: misdirected %v, want %v", c.sni, c.host, got, c.misdirects)
		}
	}
}
