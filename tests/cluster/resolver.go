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
	sync.Mutex
	started map[string]error
}

// StartUpstream starts the upstream resolver once per test process, on UDP
// and TCP port 53 of UpstreamIP.
func StartUpstream() error { return StartUpstreamAt(UpstreamIP) }

// StartUpstreamAt starts the upstream resolver on ip (an address of this
// machine), once per test process and address.
func StartUpstreamAt(ip string) error {
	upstream.Lock()
	defer upstream.Unlock()
	if err, ok := upstream.started[ip]; ok {
		return err
	}
	if upstream.started == nil {
		upstream.started = map[string]error{}
	}
	upstream.started[ip] = func() error {
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
			srv := &dns.Server{Addr: net.JoinHostPort(ip, "53"), Net: proto, Handler: handler}
			started := make(chan error, 1)
			srv.NotifyStartedFunc = func() { started <- nil }
			go func() { started <- srv.ListenAndServe() }()
			if err := <-started; err != nil {
				return fmt.Errorf("upstream resolver on %s/%s: %w", ip, proto, err)
			}
		}
		return nil
	}()
	return upstream.started[ip]
}

// WriteResolvConf writes a resolv.conf naming the upstream resolver into dir
// and returns its path.
func WriteResolvConf(dir string) (string, error) {
	return writeResolvConfAt(dir, UpstreamIP)
}

// writeResolvConfAt is WriteResolvConf with the resolver on ip.
func writeResolvConfAt(dir, ip string) (string, error) {
	if err := StartUpstreamAt(ip); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "resolv.conf")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	return path, os.WriteFile(path, []byte("nameserver "+ip+"\n"), 0o644)
}
