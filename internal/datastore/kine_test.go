package datastore

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/k3s-io/kine/pkg/drivers"
	"github.com/k3s-io/kine/pkg/server"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Two kine backends on one database, as two servers on one external
// datastore are: writes through the first one reach the second's poll loop,
// and the second reports their revision as current, as watch progress
// notifications need, though its own counter is stuck (as kine's is when
// the other server wrote between its two start-up reads; see
// polledRevision) and it never wrote itself.
func TestCurrentRevisionFollowsOtherWriters(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	ep := "sqlite://" + filepath.Join(t.TempDir(), "state.db") + "?" + sqliteParams
	open := func() server.Backend {
		_, b, err := drivers.New(ctx, &wg, &drivers.Config{
			Endpoint: ep, CompactBatchSize: 1000, CompactMinRetain: 1000, CompactTimeout: 5 * time.Second,
			PollBatchSize: 500, PollInterval: 50 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return b
	}
	first := open()
	second := open()
	stuck, err := second.CurrentRevision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tracked := trackPolled(ctx, stuckRevision{second, stuck})
	var last int64
	for i := range 5 {
		rev, err := first.Create(ctx, fmt.Sprintf("/registry/after/%d", i), []byte("v"), 0)
		if err != nil {
			t.Fatal(err)
		}
		last = rev
	}
	var rev int64
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var err error
		rev, err = tracked.CurrentRevision(ctx)
		return err != nil || rev >= last, err
	})
	if err != nil {
		t.Fatalf("the second backend reports revision %d (its own counter: %d), want the first one's last write, %d: %v", rev, stuck, last, err)
	}
}

// stuckRevision is a backend whose own current-revision counter does not move.
type stuckRevision struct {
	server.Backend
	rev int64
}

func (s stuckRevision) CurrentRevision(context.Context) (int64, error) { return s.rev, nil }
