package etcd

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/skiff-dev/skiff/internal/pki"
)

func TestCheckTimings(t *testing.T) {
	for _, c := range []struct {
		heartbeat, election time.Duration
		want                string
	}{
		{DefaultHeartbeatInterval, DefaultElectionTimeout, ""},
		{100 * time.Millisecond, time.Second, ""},
		{500 * time.Millisecond, 2 * time.Second, "at least 5 times"},
		{1500 * time.Microsecond, 5 * time.Second, "whole number of milliseconds"},
		{0, 5 * time.Second, "whole number of milliseconds"},
		{time.Second, time.Minute, "limit of 50s"},
	} {
		err := CheckTimings(c.heartbeat, c.election)
		if (c.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("CheckTimings(%s, %s) = %v, want %q", c.heartbeat, c.election, err, c.want)
		}
	}
}

func freePorts(t *testing.T) (int, int) {
	t.Helper()
	var ports []int
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports[0], ports[1]
}

// testConfig is a member on loopback with certificates from a new CA, and
// a client's certificate.
func testConfig(t *testing.T) (Config, transport.TLSInfo) {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(dir, "etcd-ca", "test-etcd-ca")
	if err != nil {
		t.Fatal(err)
	}
	loopback := []net.IP{net.ParseIP("127.0.0.1")}
	for _, c := range []struct {
		name  string
		usage pki.Usage
	}{{"server", pki.ServerAndClient}, {"peer", pki.ServerAndClient}, {"client", pki.Client}} {
		if _, err := ca.EnsureCert(filepath.Join(dir, c.name+".crt"), filepath.Join(dir, c.name+".key"), pki.Spec{CommonName: c.name, Usage: c.usage, IPs: loopback}); err != nil {
			t.Fatal(err)
		}
	}
	cp, pp := freePorts(t)
	cfg := Config{Dir: filepath.Join(dir, "db", "etcd"), Name: "test", NodeIP: loopback[0], ClientPort: cp, PeerPort: pp,
		CAFile: ca.CertFile, ServerCert: filepath.Join(dir, "server.crt"), ServerKey: filepath.Join(dir, "server.key"),
		PeerCert: filepath.Join(dir, "peer.crt"), PeerKey: filepath.Join(dir, "peer.key")}
	client := transport.TLSInfo{CertFile: filepath.Join(dir, "client.crt"), KeyFile: filepath.Join(dir, "client.key"), TrustedCAFile: ca.CertFile}
	return cfg, client
}

// start runs a member of cfg until the test ends or stop is called.
func start(t *testing.T, cfg Config) (e *ETCD, stop func()) {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	rctx, rcancel := context.WithTimeout(ctx, time.Minute)
	defer rcancel()
	ready := make(chan error, 1)
	go func() { ready <- e.Ready(rctx) }()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("etcd not ready: %v", err)
		}
	case err := <-done:
		t.Fatalf("etcd ended while starting: %v", err)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("etcd stopped with %v", err)
		}
	}
	t.Cleanup(stop)
	return e, stop
}

func client(t *testing.T, e *ETCD, tlsInfo transport.TLSInfo) *clientv3.Client {
	t.Helper()
	tc, err := tlsInfo.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.ETCDServers()}, TLS: tc, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// A database that reached its quota is compacted, defragmented and its
// alarm disarmed at the next start, which then takes writes again; the
// member keeps its ports.
func TestNoSpaceAlarmIsClearedAtStart(t *testing.T) {
	cfg, tlsInfo := testConfig(t)
	cfg.QuotaBackendBytes = 2 << 20
	e, stop := start(t, cfg)
	if e.Identity() == "" {
		t.Fatal("no identity once ready")
	}
	cli := client(t, e, tlsInfo)
	ctx := context.Background()
	value := strings.Repeat("x", 64<<10)
	var n int
	for ; ; n++ {
		_, err := cli.Put(ctx, "/fill/"+string(rune('a'+n%26))+strings.Repeat("-", n/26), value)
		if errors.Is(err, rpctypes.ErrNoSpace) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if n > 1000 {
			t.Fatal("no NOSPACE after 64 MB of writes")
		}
	}
	if _, err := cli.Delete(ctx, "/fill/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	cli.Close()
	stop()

	moved := cfg
	moved.ClientPort, moved.PeerPort = freePorts(t)
	e, _ = start(t, moved)
	if e.ETCDServers() != "https://127.0.0.1:"+itoa(cfg.ClientPort) {
		t.Fatalf("restarted member serves %s, want its first client port %d", e.ETCDServers(), cfg.ClientPort)
	}
	cli = client(t, e, tlsInfo)
	resp, err := cli.AlarmList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Alarms) != 0 {
		t.Fatalf("alarms after start: %v", resp.Alarms)
	}
	if _, err := cli.Put(ctx, "/after", "ok"); err != nil {
		t.Fatalf("write after the restart: %v", err)
	}
}

func TestDamagedMemberFileIsRefused(t *testing.T) {
	cfg, _ := testConfig(t)
	e, stop := start(t, cfg)
	stop()
	if err := writeFile(filepath.Join(e.Dir, memberFile), "{"); err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "is damaged") {
		t.Fatalf("New with a damaged member file: %v", err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func writeFile(path, data string) error { return os.WriteFile(path, []byte(data), 0o600) }
