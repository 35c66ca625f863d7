package killall

import (
	"testing"

	"github.com/skiff-dev/skiff/internal/host"
)

func TestNames(t *testing.T) {
	custom := Node{DataDir: "/tmp/ci/data", Host: host.Host{RunDir: "/run/skiff-0123abcd"}}
	def := Node{DataDir: "/var/lib/skiff", Host: host.Host{RunDir: "/run/skiff"}}
	cases := []struct {
		n    Node
		args []string
		want bool
	}{
		{custom, []string{"server", "--data-dir", "/tmp/ci/data", "--https-listen-port", "16443"}, true},
		{custom, []string{"agent", "--data-dir=/tmp/ci/data"}, true},
		{custom, []string{"containerd", "--config", "/tmp/ci/data/agent/etc/containerd/config.toml"}, true},
		{custom, []string{"-namespace", "k8s.io", "-id", "x", "-address", "/run/skiff-0123abcd/containerd/containerd.sock"}, true},
		{custom, []string{"server", "--data-dir", "/tmp/ci/data2"}, false},
		{custom, []string{"server", "--data-dir", "/tmp/ci"}, false},
		{custom, []string{"server"}, false},
		{def, []string{"server"}, true},
		{def, []string{"agent", "--server", "https://10.0.0.1:6443"}, true},
		{def, []string{"server", "--data-dir", "/tmp/ci/data"}, false},
		{def, []string{"kubectl", "get", "pods"}, false},
	}
	for _, c := range cases {
		if got := c.n.names(c.args); got != c.want {
			t.Errorf("%s: names(%q) = %v, want %v", c.n.DataDir, c.args, got, c.want)
		}
	}
}

func TestUnescape(t *testing.T) {
	if got := unescape(`/tmp/a\040b/c\134d`); got != `/tmp/a b/c\d` {
		t.Errorf("unescape: %q", got)
	}
	if got := unescape("/plain"); got != "/plain" {
		t.Errorf("unescape: %q", got)
	}
}

func TestSkiffBinary(t *testing.T) {
	cases := []struct {
		exe  string
		want bool
	}{
		{"/usr/local/bin/skiff", true},
		{"/usr/local/bin/skiff (deleted)", true},
		{"/home/ci/skiff-linux-amd64", true},
		{"/work/bin/skiff-dev", true},
		{"/usr/bin/tail", false},
		{"/usr/sbin/runc", false},
		{"", false},
	}
	for _, c := range cases {
		if got := skiffBinary(c.exe, "/usr/local/bin/skiff", nil); got != c.want {
			t.Errorf("skiffBinary(%q) = %v, want %v", c.exe, got, c.want)
		}
	}
}
