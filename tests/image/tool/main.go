// Command tool is the test image's client and server: busybox has no working
// HTTP(S) client and no DNS benchmark, so the end-to-end tests and benchmarks
// use this static program inside pods.
//
//	tool serve [-port 8080]            HTTP and UDP echo of "host=H peer=IP:PORT"; an HTTP Upgrade echoes bytes
//	tool get [-ca F] [-token F] URL    print the body of a GET
//	tool dial [-timeout D] HOST:PORT   connect over TCP, print the outcome and time
//	tool udp HOST:PORT                 send one datagram, print the reply
//	tool lookup [-cname] NAME          resolve with /etc/resolv.conf (search list included)
//	tool dnsbench [-n N] [-c C] NAME   query the first nameserver, print qps and p99
//	tool sink [-port 5201]             accept TCP connections and discard what they send
//	tool blast [-d 5s] HOST:PORT       send over one TCP connection for d, print Mbit/s
//	tool loop [-every 50ms] HOST:PORT  connect over TCP again and again, print each outcome with its time
//	tool hold [-d 10s] HOST:PORT       send HTTP requests over one TCP connection for d, fail if it breaks
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: tool serve|get|dial|lookup|dnsbench ..."))
	}
	cmd, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	var err error
	switch cmd {
	case "serve":
		port := fs.Int("port", 8080, "port")
		fs.Parse(args)
		err = serve(*port)
	case "get":
		ca := fs.String("ca", "", "CA bundle")
		token := fs.String("token", "", "bearer token file")
		fs.Parse(args)
		err = get(fs.Arg(0), *ca, *token)
	case "dial":
		timeout := fs.Duration("timeout", 5*time.Second, "timeout")
		fs.Parse(args)
		err = dial(fs.Arg(0), *timeout)
	case "udp":
		fs.Parse(args)
		err = udp(fs.Arg(0))
	case "lookup":
		cname := fs.Bool("cname", false, "print the canonical name")
		fs.Parse(args)
		err = lookup(fs.Arg(0), *cname)
	case "dnsbench":
		n := fs.Int("n", 5000, "queries")
		c := fs.Int("c", 4, "concurrent clients")
		fs.Parse(args)
		err = dnsbench(fs.Arg(0), *n, *c)
	case "sink":
		port := fs.Int("port", 5201, "port")
		fs.Parse(args)
		err = sink(*port)
	case "blast":
		d := fs.Duration("d", 5*time.Second, "how long to send")
		fs.Parse(args)
		err = blast(fs.Arg(0), *d)
	case "connbench":
		n := fs.Int("n", 2000, "connections")
		fs.Parse(args)
		err = connbench(fs.Arg(0), *n)
	case "loop":
		every := fs.Duration("every", 50*time.Millisecond, "interval")
		fs.Parse(args)
		loop(fs.Arg(0), *every)
	case "hold":
		d := fs.Duration("d", 10*time.Second, "how long")
		fs.Parse(args)
		err = hold(fs.Arg(0), *d)
	default:
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "tool:", err)
	os.Exit(1)
}

func serve(port int) error {
	host, _ := os.Hostname()
	addr := fmt.Sprintf(":%d", port)
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			_, peer, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(fmt.Sprintf("host=%s peer=%s\n", host, peer)), peer)
		}
	}()
	return http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			upgradeEcho(w, r)
			return
		}
		w.Header().Set("X-Path", r.URL.RequestURI())
		fmt.Fprintf(w, "host=%s peer=%s\n", host, r.RemoteAddr)
	}))
}

// upgradeEcho switches to the protocol the client asks for and sends back
// every byte it gets (a WebSocket or raw Upgrade echo, framing untouched).
func upgradeEcho(w http.ResponseWriter, r *http.Request) {
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n", r.Header.Get("Upgrade"))
	if rw.Flush() != nil {
		return
	}
	_, _ = io.Copy(conn, rw)
}

func get(url, caFile, tokenFile string) error {
	tr := &http.Transport{}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if tokenFile != "" {
		tok, err := os.ReadFile(tokenFile)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s", resp.Status)
	}
	return nil
}

// dial prints "connected", "refused" or "timeout" and the time it took.
func dial(addr string, timeout time.Duration) error {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, timeout)
	took := time.Since(start).Round(time.Millisecond)
	if err == nil {
		c.Close()
	}
	if o := outcome(err); o != "error" {
		fmt.Printf("%s %s\n", o, took)
	} else {
		fmt.Printf("error %s: %v\n", took, err)
	}
	return nil
}

func udp(addr string) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	os.Stdout.Write(buf[:n])
	return nil
}

func lookup(name string, cname bool) error {
	if cname {
		c, err := net.DefaultResolver.LookupCNAME(context.Background(), name)
		if err != nil {
			return err
		}
		fmt.Println(c)
		return nil
	}
	ips, err := net.DefaultResolver.LookupHost(context.Background(), name)
	if err != nil {
		return err
	}
	sort.Strings(ips)
	for _, ip := range ips {
		fmt.Println(ip)
	}
	return nil
}

// nameserver is the first nameserver of /etc/resolv.conf.
func nameserver() (string, error) {
	f, err := os.Open("/etc/resolv.conf")
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fs := strings.Fields(s.Text()); len(fs) >= 2 && fs[0] == "nameserver" {
			return net.JoinHostPort(fs[1], "53"), nil
		}
	}
	return "", errors.New("no nameserver in /etc/resolv.conf")
}

// dnsbench sends n A queries for a fully qualified name from c clients, one
// outstanding query each, and prints the rate and latency percentiles.
func dnsbench(name string, n, c int) error {
	server, err := nameserver()
	if err != nil {
		return err
	}
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	q, err := dnsmessage.NewName(name)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var lat []time.Duration
	var failed int
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			conn, err := net.Dial("udp", server)
			if err != nil {
				mu.Lock()
				failed += n / c
				mu.Unlock()
				return
			}
			defer conn.Close()
			buf := make([]byte, 1500)
			for i := 0; i < n/c; i++ {
				id := uint16(w<<12 | i&0xfff)
				msg := dnsmessage.Message{
					Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
					Questions: []dnsmessage.Question{{Name: q, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
				}
				pkt, _ := msg.Pack()
				t0 := time.Now()
				conn.SetDeadline(t0.Add(2 * time.Second))
				ok := false
				if _, err := conn.Write(pkt); err == nil {
					for {
						m, err := conn.Read(buf)
						if err != nil {
							break
						}
						var resp dnsmessage.Message
						if resp.Unpack(buf[:m]) == nil && resp.Header.ID == id {
							ok = resp.Header.RCode == dnsmessage.RCodeSuccess && len(resp.Answers) > 0
							break
						}
					}
				}
				d := time.Since(t0)
				mu.Lock()
				if ok {
					lat = append(lat, d)
				} else {
					failed++
				}
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	total := time.Since(start)
	if len(lat) == 0 {
		return fmt.Errorf("no answers from %s for %s", server, name)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration { return lat[int(float64(len(lat)-1)*p)] }
	fmt.Printf("queries=%d failed=%d qps=%.0f p50=%s p99=%s\n", len(lat), failed,
		float64(len(lat))/total.Seconds(), pct(0.50), pct(0.99))
	return nil
}

// sink discards what every TCP connection sends: the receiving end of a
// throughput measurement.
func sink(port int) error {
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			io.Copy(io.Discard, c)
			c.Close()
		}()
	}
}

// blast sends as fast as one TCP connection goes for d and prints the rate
// in Mbit/s (bytes handed to the kernel; the close waits for the rest).
func blast(addr string, d time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	buf := make([]byte, 128<<10)
	var sent int64
	start := time.Now()
	for time.Since(start) < d {
		n, err := c.Write(buf)
		sent += int64(n)
		if err != nil {
			return err
		}
	}
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, c) // the sink closes once it has read everything
	c.Close()
	fmt.Printf("%.0f Mbit/s\n", float64(sent)*8/time.Since(start).Seconds()/1e6)
	return nil
}

// connbench opens n TCP connections to addr one after another, each
// closed once established, and prints the median and 99th percentile of
// the time to establish one, in microseconds.
func connbench(addr string, n int) error {
	took := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		took = append(took, time.Since(start))
		c.Close()
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	fmt.Printf("p50 %d us p99 %d us\n", took[len(took)/2].Microseconds(), took[len(took)*99/100].Microseconds())
	return nil
}

// outcome names how a connection attempt ended.
func outcome(err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return "connected"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "error"
}

// loop connects to addr every interval, forever, and prints each attempt's
// start (Unix milliseconds) and outcome: "1700000000000 refused".
func loop(addr string, every time.Duration) {
	for {
		start := time.Now()
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		fmt.Printf("%d %s\n", start.UnixMilli(), outcome(err))
		time.Sleep(every - time.Since(start))
	}
}

// hold sends an HTTP request every 100ms over one TCP connection for d,
// and fails if one goes unanswered.
func hold(addr string, d time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Println("connected")
	r := bufio.NewReader(c)
	n := 0
	for start := time.Now(); time.Since(start) < d; n++ {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", addr); err != nil {
			return fmt.Errorf("request %d: %w", n, err)
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return fmt.Errorf("request %d: %w", n, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Printf("held %d requests\n", n)
	return nil
}
