package datastore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/k3s-io/kine/pkg/drivers"
	"github.com/k3s-io/kine/pkg/server"
	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	// The backends skiff offers: the embedded SQLite, PostgreSQL, MySQL
	// (and MariaDB), and "remote", which hands an etcd's http(s):// URLs to
	// the API server as they are.
	_ "github.com/k3s-io/kine/pkg/drivers/mysql"
	_ "github.com/k3s-io/kine/pkg/drivers/pgsql"
	_ "github.com/k3s-io/kine/pkg/drivers/remote"
	_ "github.com/k3s-io/kine/pkg/drivers/sqlite"
)

// Schemes are the --datastore-endpoint schemes skiff accepts.
const Schemes = "sqlite://, postgres://, mysql://, or http(s):// for an etcd"

// kine's server settings, as kine's own command line defaults them.
const (
	notifyInterval      = 5 * time.Second
	emulatedETCDVersion = "3.6.11"
)

// listen starts the backend for cfg.Endpoint and serves kine's etcd API for
// it on socket until ctx ends, then stops the backend; wg counts what
// still runs. It returns what the API server's --etcd-servers takes: the
// socket, or an etcd's own URLs, which need no kine in between.
//
// kine's endpoint.Listen does the same, written here by hand because that
// package links every kine backend, NATS (with the NATS server) and t4
// (with pebble and an S3 client) among them: 11 MB of the binary (2.4 MB
// of its xz download) for endpoints skiff does not offer. The gRPC
// settings are kine's, which are etcd's own defaults.
func listen(ctx context.Context, wg *sync.WaitGroup, socket string, cfg drivers.Config) ([]string, error) {
	bctx, bcancel := context.WithCancel(context.Background())
	_, backend, err := drivers.New(bctx, wg, &cfg)
	if err != nil {
		bcancel()
		return nil, err
	}
	if backend == nil {
		bcancel()
		return strings.Split(cfg.Endpoint, ","), nil
	}
	if err := backend.Start(bctx); err != nil {
		bcancel()
		return nil, fmt.Errorf("starting kine backend: %w", err)
	}
	backend = trackPolled(bctx, backend)
	gs := grpc.NewServer(
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: embed.DefaultGRPCKeepAliveMinTime}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    embed.DefaultGRPCKeepAliveInterval,
			Timeout: embed.DefaultGRPCKeepAliveTimeout,
		}),
		grpc.MaxConcurrentStreams(embed.DefaultMaxConcurrentStreams),
		// etcd's request limit, plus room for gRPC's own framing.
		grpc.MaxRecvMsgSize(int(embed.DefaultMaxRequestBytes)+512*1024),
		grpc.MaxSendMsgSize(math.MaxInt32),
	)
	server.New(backend, "unix", notifyInterval, emulatedETCDVersion).Register(gs)

	// A socket left by a process that was killed blocks the listener.
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		bcancel()
		return nil, err
	}
	l, err := net.Listen("unix", socket)
	if err == nil {
		err = os.Chmod(socket, 0o600)
	}
	if err != nil {
		bcancel()
		return nil, err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		gs.Serve(l)
	}()
	go func() {
		<-ctx.Done()
		// The datastore stops after the API server, its only client:
		// what is left are watches, which never end by themselves, and
		// calls the API server left behind, whose writes it was never told
		// were done. The backend stops first: a watch ends when the
		// backend's poll loop next looks (PollInterval) unless the backend
		// is gone. Then the calls get a moment.
		bcancel()
		t := time.AfterFunc(250*time.Millisecond, gs.Stop)
		gs.GracefulStop()
		t.Stop()
	}()
	return []string{"unix://" + socket}, nil
}

// polledRevision is a kine backend whose CurrentRevision is at least the
// revision its poll loop has delivered to watchers.
//
// Written by hand because kine's SQL log (v0.17.5) can report a revision
// that stays behind when another server writes to the same database: its
// current-revision counter is read from the database once at start-up,
// and its poll loop starts from a second read and moves the counter only
// by a compare-and-swap against its own position. When the other server
// writes between the two reads, the swap never matches again, and only a
// write through this server moves the counter. Watch progress notifications
// carry that counter: the API server's watch caches then never reach the
// revision its reads ask for, no request that needs them is answered,
// and the server never becomes ready, so it never writes. What the poll
// loop has delivered is safe to report: kine sends a progress notification
// only once every watch of a stream has been sent that revision.
type polledRevision struct {
	server.Backend
	polled atomic.Int64
}

// trackPolled wraps backend, following its poll loop with a watch of its own
// until ctx ends.
func trackPolled(ctx context.Context, backend server.Backend) server.Backend {
	b := &polledRevision{Backend: backend}
	wr := backend.Watch(ctx, 0)
	go func() {
		// The only writer; batches come in revision order.
		for batch := range wr.Eventc {
			if batch.CurrentRev > b.polled.Load() {
				b.polled.Store(batch.CurrentRev)
			}
		}
	}()
	return b
}

// CurrentRevision implements server.Backend.
func (b *polledRevision) CurrentRevision(ctx context.Context) (int64, error) {
	rev, err := b.Backend.CurrentRevision(ctx)
	if err != nil {
		return rev, err
	}
	return max(rev, b.polled.Load()), nil
}

// checkScheme refuses an endpoint whose scheme skiff has no backend for.
func checkScheme(endpoint string) error {
	scheme, _, found := strings.Cut(endpoint, "://")
	if !found {
		return fmt.Errorf("the datastore endpoint has no scheme: use %s", Schemes)
	}
	if _, ok := drivers.Get(scheme); !ok {
		return fmt.Errorf("unknown datastore scheme %q: use %s", scheme, Schemes)
	}
	return nil
}
