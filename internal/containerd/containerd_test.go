package containerd

import (
	"slices"
	"strings"
	"testing"
)

func TestEnvPassesTheNodesGOGC(t *testing.T) {
	c := &Containerd{BinDir: "/data/bin", GCPercent: 50}
	env := c.env([]string{"PATH=/usr/bin", "NOTIFY_SOCKET=/run/notify", "HOME=/root"})
	for _, want := range []string{"PATH=/data/bin:/usr/bin", "GOGC=50", "HOME=/root"} {
		if !slices.Contains(env, want) {
			t.Errorf("containerd's environment %q lacks %s", env, want)
		}
	}
	if slices.Contains(env, "NOTIFY_SOCKET=/run/notify") {
		t.Errorf("containerd's environment %q keeps skiff's NOTIFY_SOCKET", env)
	}
	// A GOGC the user set wins, as for skiff itself.
	env = c.env([]string{"PATH=/usr/bin", "GOGC=200"})
	if !slices.Contains(env, "GOGC=200") || slices.Contains(env, "GOGC=50") {
		t.Errorf("with GOGC=200 set, containerd's environment is %q", env)
	}
	// Without a setting, Go's default.
	env = (&Containerd{BinDir: "/data/bin"}).env([]string{"PATH=/usr/bin"})
	if slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "GOGC=") }) {
		t.Errorf("with no setting, containerd's environment is %q", env)
	}
}
