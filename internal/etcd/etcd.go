// Package etcd runs etcd in the server's process: the datastore of a server
// started with --cluster-init, which the API server talks to directly.
//
// It is go.etcd.io/etcd/server/v3 v3.7.3 (the version Kubernetes v1.37.2
// pins) through its embed package, with TLS from a CA of the cluster's own
// for clients and peers alike.
package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/logutil"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/atomicfile"
	"github.com/skiff-dev/skiff/internal/component"
)

// The ports etcd listens on by default (those of k3s and of etcd itself).
const (
	DefaultClientPort = 2379
	DefaultPeerPort   = 2380
)

// Timings that suit SD cards, k3s's: etcd's own (100 ms, 1 s) make a
// member whose disk stalls for a second lose its leadership.
const (
	DefaultHeartbeatInterval = 500 * time.Millisecond
	DefaultElectionTimeout   = 5 * time.Second
)

// Config is the member's settings.
type Config struct {
	// Dir is etcd's data dir, <data-dir>/server/db/etcd.
	Dir string
	// Name is the member's name when Dir holds none yet.
	Name string
	// NodeIP is where peers reach the member; clients reach it there and
	// on loopback.
	NodeIP net.IP
	// ClientPort and PeerPort are the ports of a new member; a member
	// keeps the ones it started with.
	ClientPort, PeerPort int
	// CAFile is the etcd CA, which every client and peer certificate
	// must come from. ServerCert serves clients, PeerCert serves peers and
	// is this member's client certificate towards them.
	CAFile                                   string
	ServerCert, ServerKey, PeerCert, PeerKey string
	// HeartbeatInterval and ElectionTimeout are raft's timings.
	HeartbeatInterval, ElectionTimeout time.Duration
	// QuotaBackendBytes bounds the database; 0 is etcd's default (2 GiB).
	QuotaBackendBytes int64
}

// member is what the data dir remembers of the member: its name and
// ports, which its peers know it by.
type member struct {
	Name       string `json:"name"`
	ClientPort int    `json:"clientPort"`
	PeerPort   int    `json:"peerPort"`
}

// memberFile is member's file in the data dir.
const memberFile = "skiff-member.json"

// ETCD is the etcd component.
type ETCD struct {
	Config
	component.Latch
	member member
	// clusterID is the cluster's ID, once ready.
	clusterID uint64
}

// New returns the etcd component, once its settings are checked and its
// ports found free. It writes nothing.
func New(cfg Config) (*ETCD, error) {
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.ElectionTimeout == 0 {
		cfg.ElectionTimeout = DefaultElectionTimeout
	}
	if err := CheckTimings(cfg.HeartbeatInterval, cfg.ElectionTimeout); err != nil {
		return nil, err
	}
	e := &ETCD{Config: cfg, member: member{Name: cfg.Name, ClientPort: cfg.ClientPort, PeerPort: cfg.PeerPort}}
	data, err := os.ReadFile(filepath.Join(cfg.Dir, memberFile))
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &e.member); err != nil || e.member.Name == "" || e.member.ClientPort <= 0 || e.member.PeerPort <= 0 {
			return nil, fmt.Errorf("%s is damaged: restore it from a backup (it names this etcd member and its ports)", filepath.Join(cfg.Dir, memberFile))
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, err
	}
	for _, p := range []struct {
		port int
		what string
	}{{e.member.ClientPort, "client"}, {e.member.PeerPort, "peer"}} {
		ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(p.port)))
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("port %d, etcd's %s port, is already in use: stop what listens there (another etcd or skiff server?)", p.port, p.what)
		}
		if err != nil {
			return nil, fmt.Errorf("cannot listen on etcd's %s port %d: %v", p.what, p.port, err)
		}
		ln.Close()
	}
	return e, nil
}

// CheckTimings refuses raft timings etcd would refuse, with the flags'
// names.
func CheckTimings(heartbeat, election time.Duration) error {
	switch {
	case heartbeat < time.Millisecond || heartbeat%time.Millisecond != 0:
		return fmt.Errorf("--etcd-heartbeat-interval %s must be a whole number of milliseconds, such as 500ms", heartbeat)
	case election < 5*heartbeat:
		return fmt.Errorf("--etcd-election-timeout %s must be at least 5 times --etcd-heartbeat-interval %s, such as 5s with 500ms", election, heartbeat)
	case election > 50*time.Second:
		return fmt.Errorf("--etcd-election-timeout %s is above etcd's limit of 50s", election)
	}
	return nil
}

// Exists says whether dir holds an etcd member's data: then the server
// keeps using etcd, with or without --cluster-init.
func Exists(dir string) bool {
	_, err := os.Stat(dir)
	return err == nil
}

// Name implements component.Component.
func (e *ETCD) Name() string { return "etcd" }

// ETCDServers is what the API server's --etcd-servers takes.
func (e *ETCD) ETCDServers() string {
	return "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(e.member.ClientPort))
}

// Identity names the cluster behind the member (its ID), valid once ready.
func (e *ETCD) Identity() string {
	if e.clusterID == 0 {
		return ""
	}
	return fmt.Sprintf("etcd cluster %x", e.clusterID)
}

// embedConfig is etcd's configuration for the member.
func (e *ETCD) embedConfig(state string) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = e.member.Name
	cfg.Dir = e.Dir
	host := e.NodeIP.String()
	peer := url.URL{Scheme: "https", Host: net.JoinHostPort(host, strconv.Itoa(e.member.PeerPort))}
	clientPort := strconv.Itoa(e.member.ClientPort)
	loopback := url.URL{Scheme: "https", Host: net.JoinHostPort("127.0.0.1", clientPort)}
	node := url.URL{Scheme: "https", Host: net.JoinHostPort(host, clientPort)}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.ListenClientUrls = []url.URL{loopback}
	if !e.NodeIP.IsLoopback() {
		cfg.ListenClientUrls = append(cfg.ListenClientUrls, node)
	}
	cfg.AdvertiseClientUrls = []url.URL{node}
	cfg.InitialCluster = e.member.Name + "=" + peer.String()
	cfg.InitialClusterToken = "skiff"
	cfg.ClusterState = state
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: e.ServerCert, KeyFile: e.ServerKey, TrustedCAFile: e.CAFile, ClientCertAuth: true}
	cfg.PeerTLSInfo = transport.TLSInfo{CertFile: e.PeerCert, KeyFile: e.PeerKey, TrustedCAFile: e.CAFile, ClientCertAuth: true}
	cfg.TickMs = uint(e.HeartbeatInterval / time.Millisecond)
	cfg.ElectionMs = uint(e.ElectionTimeout / time.Millisecond)
	cfg.QuotaBackendBytes = e.QuotaBackendBytes
	// The API server speaks gRPC: no HTTP gateway.
	cfg.EnableGRPCGateway = false
	// etcd's warnings (a slow disk, a lost leader) and errors, in the
	// console format of the rest of the log, without the stack traces it
	// adds to errors.
	lcfg := logutil.DefaultZapLoggerConfig
	lcfg.Level = zap.NewAtomicLevelAt(zapcore.WarnLevel)
	lcfg.Encoding = "console"
	lcfg.DisableStacktrace = true
	if lg, err := lcfg.Build(); err == nil {
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	}
	return cfg
}

// Run implements component.Component.
func (e *ETCD) Run(ctx context.Context) error {
	if err := os.MkdirAll(e.Dir, 0o700); err != nil {
		return err
	}
	data, err := json.Marshal(e.member)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(e.Dir, memberFile), append(data, '\n'), 0o600); err != nil {
		return err
	}
	state := embed.ClusterStateFlagNew
	if _, err := os.Stat(filepath.Join(e.Dir, "member", "wal")); err == nil {
		state = embed.ClusterStateFlagExisting
	}
	srv, err := embed.StartEtcd(e.embedConfig(state))
	if err != nil {
		return fmt.Errorf("starting etcd in %s: %w", e.Dir, err)
	}
	defer srv.Close()
	select {
	case <-srv.Server.ReadyNotify():
	case err := <-srv.Err():
		return err
	case <-srv.Server.StopNotify():
		return errors.New("etcd stopped while starting: see its lines above")
	case <-ctx.Done():
		return nil
	}
	if err := clearNoSpace(ctx, srv); err != nil {
		return err
	}
	e.clusterID = uint64(srv.Server.Cluster().ID())
	e.SetReady()
	select {
	case <-ctx.Done():
		return nil
	case err := <-srv.Err():
		return err
	case <-srv.Server.StopNotify():
		return errors.New("etcd stopped")
	}
}

// clearNoSpace disarms a NOSPACE alarm that a database which reached its
// quota left: it would refuse every write, the API server's own at start
// included. The history is compacted and the database defragmented first,
// so that the space the alarm was about is given back.
func clearNoSpace(ctx context.Context, srv *embed.Etcd) error {
	var alarm *etcdserverpb.AlarmMember
	for _, a := range srv.Server.Alarms() {
		if a.Alarm == etcdserverpb.AlarmType_NOSPACE {
			alarm = a
		}
	}
	if alarm == nil {
		return nil
	}
	before := srv.Server.Backend().Size()
	klog.InfoS("etcd's database reached its quota before this start (NOSPACE alarm, writes refused): compacting its history, defragmenting and disarming the alarm", "dbBytes", before, "quotaBytes", srv.Config().QuotaBackendBytes)
	cli := v3client.New(srv.Server)
	defer cli.Close()
	resp, err := cli.Get(ctx, "compact-revision-probe", clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("reading etcd's revision to compact: %w", err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil && !errors.Is(err, rpctypes.ErrCompacted) && !errors.Is(err, rpctypes.ErrGRPCCompacted) {
		return fmt.Errorf("compacting etcd's history: %w", err)
	}
	if err := srv.Server.Defragment(); err != nil {
		return fmt.Errorf("defragmenting etcd's database: %w", err)
	}
	if _, err := cli.AlarmDisarm(ctx, (*clientv3.AlarmMember)(alarm)); err != nil {
		return fmt.Errorf("disarming etcd's NOSPACE alarm: %w", err)
	}
	after := srv.Server.Backend().Size()
	klog.InfoS("etcd's NOSPACE alarm is disarmed", "dbBytesBefore", before, "dbBytesAfter", after)
	return nil
}
