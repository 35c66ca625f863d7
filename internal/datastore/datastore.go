// Package datastore runs kine: the etcd API the API server talks to, backed by
// SQLite in the data dir or by the database a user names.
package datastore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/k3s-io/kine/pkg/drivers"
	"github.com/k3s-io/kine/pkg/drivers/generic"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/skiff-dev/skiff/internal/component"
)

// sqliteParams are the embedded database's settings. synchronous=FULL
// syncs the WAL at every commit, so that a write the API acknowledged
// survives a power loss (NORMAL, kine's default, may lose the last ones).
// kine checkpoints the WAL after each compaction; journal_size_limit then
// truncates it, so the WAL stays bounded instead of keeping its peak size.
// auto_vacuum stays off: INCREMENTAL, which would let free pages go back
// to the disk while running, cost a fifth of the write throughput and
// doubled p99 latency (make bench); SQLite reuses free pages for new
// writes, and kine's startup VACUUM gives them back when they are a
// quarter of the file or more (worthVacuum).
const sqliteParams = "_journal=WAL&_synchronous=FULL&_busy_timeout=30000&_txlock=immediate&_pragma=journal_size_limit(67108864)"

// Config is the datastore's settings.
type Config struct {
	// Dir holds the SQLite database and kine's socket.
	Dir string
	// Endpoint is a kine endpoint (sqlite://, postgres://, mysql://, http(s):// for
	// etcd); empty means SQLite at Dir/state.db.
	Endpoint string
	// Bootstrap, if set, runs once the datastore answers and before it
	// reports ready: what must be read from or stored in the database before
	// the API server starts.
	Bootstrap func(ctx context.Context, kv clientv3.KV) error
}

// Datastore is the kine component.
type Datastore struct {
	Config
	component.Latch
	// endpoints are the API server's --etcd-servers.
	endpoints []string
	// skipVacuum: the database has too few free pages for kine's
	// start-up VACUUM to be worth its time.
	skipVacuum bool
}

// New returns the datastore, once its SQLite file, if it has one, is found
// to be a database. It writes nothing.
func New(cfg Config) (*Datastore, error) {
	d := &Datastore{Config: cfg}
	if err := d.check(); err != nil {
		return nil, err
	}
	return d, nil
}

// Embedded says whether endpoint is a SQLite file that only this server
// uses.
func Embedded(endpoint string) bool {
	return endpoint == "" || strings.HasPrefix(endpoint, "sqlite://")
}

// Name implements component.Component.
func (d *Datastore) Name() string { return "datastore" }

// DBPath is the SQLite file used when no endpoint is given.
func (d *Datastore) DBPath() string { return filepath.Join(d.Dir, "state.db") }

// Socket is the unix socket kine serves the etcd API on.
func (d *Datastore) Socket() string { return filepath.Join(d.Dir, "kine.sock") }

// check refuses a SQLite file that is not a database before anything opens it
// (SQLite would otherwise add a journal beside it).
func (d *Datastore) check() error {
	if d.Endpoint != "" {
		if err := checkScheme(d.Endpoint); err != nil {
			return fmt.Errorf("cannot use --datastore-endpoint: %w", err)
		}
		return nil
	}
	f, err := os.Open(d.DBPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, 100)
	n, err := io.ReadFull(f, head)
	if n == 0 && (err == io.EOF || err == nil) {
		return nil // empty: SQLite makes it a database
	}
	if n < 16 || !bytes.Equal(head[:16], []byte("SQLite format 3\x00")) {
		return fmt.Errorf("%s is not a SQLite database (corrupt or overwritten): restore it from a backup, or move it away to start with an empty cluster", d.DBPath())
	}
	d.skipVacuum = n == len(head) && !worthVacuum(head)
	return nil
}

// worthVacuum says from a SQLite file's 100-byte header whether at least a
// quarter of its pages are free. kine rewrites the whole database with
// VACUUM at every start, which takes seconds once it holds 100,000
// objects; SQLite reuses free pages for new writes, so a VACUUM is worth
// its time only when it gives a good part of the file back. The header is
// read by hand (the file format's fixed offsets: page count at 28, free
// pages at 36, both valid while the change counter at 24 equals the one at
// 92) because opening the database with SQLite before kine does would
// start a WAL of its own.
func worthVacuum(head []byte) bool {
	be := func(off int) uint32 {
		return uint32(head[off])<<24 | uint32(head[off+1])<<16 | uint32(head[off+2])<<8 | uint32(head[off+3])
	}
	pages, free := be(28), be(36)
	if be(24) != be(92) || pages == 0 {
		return true // a header SQLite itself would not trust: let kine decide
	}
	return free*4 >= pages
}

// Run implements component.Component.
func (d *Datastore) Run(ctx context.Context) error {
	if err := os.MkdirAll(d.Dir, 0o700); err != nil {
		return err
	}
	ep := d.Endpoint
	if ep == "" {
		ep = "sqlite://" + d.DBPath() + "?" + sqliteParams
		if d.skipVacuum {
			ep += "&_kine_disable_startup_vacuum=true"
		}
	}
	var wg sync.WaitGroup
	kctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Every field is set, as kine's own command line defaults do (the
	// connection pool aside, see pool): used as a library, kine has no
	// defaults of its own.
	cfg := drivers.Config{
		Endpoint:             ep,
		ConnectionPoolConfig: pool(ep),
		CompactTimeout:       5 * time.Second,
		CompactMinRetain:     1000,
		CompactBatchSize:     1000,
		PollBatchSize:        500,
		PollInterval:         time.Second,
	}
	// kine retries an external database that does not answer for minutes,
	// and its wait cannot be cancelled. Give up on one after ConnectTimeout
	// with a line that says what to check (the server then exits, and the
	// retries with it), or as soon as the server is asked to stop. SQLite
	// opens at once.
	type listening struct {
		endpoints []string
		err       error
	}
	done := make(chan listening, 1)
	go func() {
		endpoints, err := listen(kctx, &wg, d.Socket(), cfg)
		done <- listening{endpoints, err}
	}()
	var l listening
	if Embedded(d.Endpoint) {
		l = <-done
	} else {
		select {
		case l = <-done:
		case <-ctx.Done():
			return nil
		case <-time.After(ConnectTimeout):
			return fmt.Errorf("the datastore at %s did not answer within %s (its errors are above): check --datastore-endpoint (host, port, user, password, database) and that the database is up", redact(d.Endpoint), ConnectTimeout)
		}
	}
	if l.err != nil {
		return describe(l.err, d)
	}
	d.endpoints = l.endpoints
	if d.Bootstrap != nil {
		if err := d.bootstrap(ctx); err != nil {
			cancel()
			waitTimeout(&wg, 20*time.Second)
			return err
		}
	}
	if d.Endpoint == "" {
		exposeSize(ctx, d.DBPath())
		go maintain(ctx, d.DBPath())
	}
	d.SetReady()
	<-ctx.Done()
	cancel()
	// kine closes the database once its server and backend have stopped.
	waitTimeout(&wg, 20*time.Second)
	return nil
}

func (d *Datastore) bootstrap(ctx context.Context) error {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   d.endpoints,
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return err
	}
	defer cli.Close()
	return d.Bootstrap(ctx, cli)
}

// embeddedConns bounds the embedded database's connections. SQLite lets
// one writer in at a time, and the others retry on a sleep schedule that
// leaves the lock idle and serves them out of order (a p99 of 140 ms for
// deletes at 16 clients); a few connections make the extra writers queue in
// Go's pool instead, in order. Three at the least: kine's poll loop keeps
// one, and a long LIST another. Each also holds its own page cache.
const embeddedConns = 8

// pool is the datastore's connection pool: a bounded one for the embedded
// SQLite; for an external database, few idle connections, closed after two
// idle minutes.
func pool(endpoint string) generic.ConnectionPoolConfig {
	if Embedded(endpoint) {
		return generic.ConnectionPoolConfig{MaxIdle: embeddedConns, MaxOpen: embeddedConns}
	}
	return generic.ConnectionPoolConfig{MaxIdle: 2, MaxIdleTime: 2 * time.Minute}
}

// ConnectTimeout bounds the wait for an external database at start.
var ConnectTimeout = 30 * time.Second

// redact hides the password of an endpoint URL.
func redact(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || u.User == nil {
		return endpoint
	}
	return u.Redacted()
}

// Identity names the database behind the datastore, so that what is known
// of its contents from an earlier start can be checked to still hold: the
// embedded SQLite file (its inode: a restored snapshot, or a database moved
// away for an empty cluster, is another file), or a hash of the endpoint.
// Valid once ready.
func (d *Datastore) Identity() string {
	if d.Endpoint == "" {
		var st syscall.Stat_t
		if err := syscall.Stat(d.DBPath(), &st); err != nil {
			return ""
		}
		return fmt.Sprintf("sqlite %s inode %d", d.DBPath(), st.Ino)
	}
	sum := sha256.Sum256([]byte(d.Endpoint))
	return "endpoint " + hex.EncodeToString(sum[:8])
}

// ETCDServers is what the API server's --etcd-servers takes; valid once ready.
func (d *Datastore) ETCDServers() string { return strings.Join(d.endpoints, ",") }

// describe turns kine's start-up errors into what a user can act on.
func describe(err error, d *Datastore) error {
	msg := err.Error()
	if d.Endpoint == "" && (strings.Contains(msg, "file is not a database") || strings.Contains(msg, "malformed")) {
		return fmt.Errorf("%s is corrupt (%v): restore it from a backup, or move it away to start with an empty cluster", d.DBPath(), err)
	}
	if d.Endpoint != "" {
		return fmt.Errorf("cannot use --datastore-endpoint: %w", err)
	}
	return err
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}
