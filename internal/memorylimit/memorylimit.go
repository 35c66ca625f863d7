// Package memorylimit sets the Go runtime's memory settings of a skiff
// process for the machine it runs on.
//
// The soft memory limit is by default a share of the memory the process may
// use: its memory cgroup's limit, else the machine's memory. On a board with
// 1 or 2 GB the garbage collector then works harder as the process nears
// that share, before the kernel has to reclaim or kill; where memory is
// plentiful the limit is never reached and costs nothing.
//
// With a limit of SmallLimit or less (a board of 2 GB or less, or a
// --memory-limit that small), the collector also runs at GOGC=50 instead of
// 100. Measured on an idle control plane: RSS 364 MB instead of 393 MB and
// no more CPU (4.0% of a core against 4.6%). GOGC=25 gave 331 MB at the same
// idle CPU, but a busy process collects four times as often as at 100, which
// a small board's CPU cannot spare; 50 doubles it.
package memorylimit

import (
	"fmt"
	"os"
	"runtime/debug"
	"strings"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Share is the part of the available memory a skiff process sets as its
// limit by default. The rest is for the containerd child, the shims, the
// pods and the host's own processes.
const Share = 0.5

// Parse reads a --memory-limit value: "auto" (or empty) for the default
// share, "off" for no limit, or a size such as 600Mi or 1G. It returns the
// limit in bytes, 0 for auto and -1 for off.
func Parse(value string) (int64, error) {
	switch v := strings.TrimSpace(value); v {
	case "", "auto":
		return 0, nil
	case "off", "none":
		return -1, nil
	default:
		q, err := resource.ParseQuantity(v)
		if err != nil || q.Sign() <= 0 {
			return 0, fmt.Errorf("--memory-limit %q is not a size: give one like 600Mi or 1G, auto for %.0f%% of the memory, or off", value, Share*100)
		}
		return q.Value(), nil
	}
}

// SmallLimit is the largest limit at which the collector runs at
// SmallGCPercent.
const SmallLimit = 1 << 30

// SmallGCPercent is GOGC under a limit of SmallLimit or less.
const SmallGCPercent = 50

// Settings are the runtime's memory settings in effect.
type Settings struct {
	Limit     int64 // bytes; -1 for none
	GCPercent int
}

// Set applies a limit from Parse, then GOGC for it, and returns the
// settings in effect. GOMEMLIMIT and GOGC in the environment win, as the Go
// runtime documents.
func Set(limit int64) (Settings, error) {
	var err error
	switch {
	case os.Getenv("GOMEMLIMIT") != "":
		limit = current()
	case limit < 0:
	case limit > 0:
		debug.SetMemoryLimit(limit)
	default:
		if _, err = memlimit.Set(memlimit.WithRatio(Share),
			memlimit.WithProvider(memlimit.ApplyFallback(memlimit.FromCgroup, memlimit.FromSystem))); err != nil {
			err = fmt.Errorf("the memory this process may use: %w", err)
		}
		limit = current()
	}
	gc := 100
	if limit > 0 && limit <= SmallLimit {
		gc = SmallGCPercent
	}
	if os.Getenv("GOGC") != "" {
		gc = debug.SetGCPercent(-1) // the environment's, read back
	}
	debug.SetGCPercent(gc)
	applied = Settings{Limit: limit, GCPercent: gc}
	return applied, err
}

// applied is what Set applied last.
var applied Settings

// Applied returns what Set applied to this process; GCPercent is 0 before
// Set. The node passes GCPercent on to containerd.
func Applied() Settings { return applied }

// current is the runtime's limit, -1 for none.
func current() int64 {
	if l := debug.SetMemoryLimit(-1); l != 1<<63-1 {
		return l
	}
	return -1
}
