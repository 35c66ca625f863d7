package cluster

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// UpstreamIP is the loopback address of the tests' upstream resolver: nodes
// under test forward names outside the cluster there (--resolv-conf), never
// to the host's resolver.
const UpstreamIP = "127.0.0.77"

// UpstreamDomain is the zone the upstream resolver answers: every name in it
// resolves to UpstreamAnswer (a documentation address, never contacted).
const (
	UpstreamDomain = "example.test."
	UpstreamAnswer = "198.51.100.10"
)

var upstream struct {
	sync.Once
	err error
}

// StartUpstream starts the upstream resolver once per test process, on UDP
// and TCP port 53 of UpstreamIP.
func StartUpstream() error {
	upstream.Do(func() {
		handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			for _, q := range r.Question {
				name := strings.ToLower(q.Name)
				if q.Qtype == dns.TypeA && (name == UpstreamDomain || strings.HasSuffix(name, "."+UpstreamDomain)) {
					m.Answer = append(m.Answer, &dns.A{
						Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
						A:   net.ParseIP(UpstreamAnswer),
					})
				}
			}
			if len(m.Answer) == 0 && len(r.Question) > 0 && !strings.HasSuffix(strings.ToLower(r.Question[0].Name), UpstreamDomain) {
				m.Rcode = dns.RcodeNameError
			}
			w.WriteMsg(m)
		})
		for _, proto := range []string{"udp", "tcp"} {
			srv := &dns.Server{Addr: net.JoinHostPort(UpstreamIP, "53"), Net: proto, Handler: handler}
			started := make(chan error, 1)
			srv.NotifyStartedFunc = func() { started <- nil }
			go func() { started <- srv.ListenAndServe() }()
			if err := <-started; err != nil {
				upstream.err = fmt.Errorf("upstream resolver on %s/%s: %w", UpstreamIP, proto, err)
				return
			}
		}
	})
	return upstream.err
}

// writeResolvConf writes a resolv.conf naming the upstream resolver into dir
// and returns its path.
func writeResolvConf(dir string) (string, error) {
	if err := StartUpstream(); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "resolv.conf")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	return path, os.WriteFile(path, []byte("nameserver "+UpstreamIP+"\n"), 0o644)
}
