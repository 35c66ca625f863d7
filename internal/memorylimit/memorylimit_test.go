package memorylimit

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "auto": 0, "off": -1, "none": -1, "600Mi": 600 << 20, "1G": 1e9, " 2Gi ": 2 << 30} {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"lots", "-1Gi", "0", "600MB"} {
		if _, err := Parse(in); err == nil || !strings.Contains(err.Error(), "give one like 600Mi") {
			t.Errorf("Parse(%q): %v, want the one-line fix", in, err)
		}
	}
}

func TestSet(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	t.Setenv("GOGC", "")
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	for _, c := range []struct {
		limit int64
		want  Settings
	}{
		{512 << 20, Settings{Limit: 512 << 20, GCPercent: SmallGCPercent}},
		{SmallLimit, Settings{Limit: SmallLimit, GCPercent: SmallGCPercent}},
		{4 << 30, Settings{Limit: 4 << 30, GCPercent: 100}},
	} {
		got, err := Set(c.limit)
		if err != nil || got != c.want {
			t.Errorf("Set(%d) = %+v, %v; want %+v", c.limit, got, err, c.want)
		}
		if l := debug.SetMemoryLimit(-1); l != c.limit {
			t.Errorf("Set(%d): the runtime's limit is %d", c.limit, l)
		}
		if a := Applied(); a != got {
			t.Errorf("after Set(%d), Applied() = %+v, want %+v", c.limit, a, got)
		}
	}
}
