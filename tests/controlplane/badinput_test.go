package controlplane

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiff-dev/skiff/tests/cluster"
)

func serverArgs(dataDir string, port int, extra ...string) []string {
	return append([]string{"server", "--disable-agent", "--data-dir", dataDir,
		"--https-listen-port", fmt.Sprint(port), "--write-kubeconfig", filepath.Join(dataDir, "..", "kubeconfig.yaml")}, extra...)
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	os.MkdirAll(data, 0o700)

	t.Run("unknown flag", func(t *testing.T) {
		cluster.FailsClearly(t, data, "flag provided but not defined: -no-such-flag", nil, serverArgs(data, cluster.FreePort(), "--no-such-flag")...)
	})
	t.Run("unknown config key", func(t *testing.T) {
		cfg := filepath.Join(dir, "config.yaml")
		os.WriteFile(cfg, []byte("data-dir: "+data+"\nno-such-key: 1\n"), 0o600)
		cluster.FailsClearly(t, data, `unknown key "no-such-key"`, nil, "server", "--config", cfg)
	})
	t.Run("config key from environment file variable", func(t *testing.T) {
		cfg := filepath.Join(dir, "config-env.yaml")
		os.WriteFile(cfg, []byte("cluster-cidr: not-a-cidr\n"), 0o600)
		cluster.FailsClearly(t, data, `--cluster-cidr "not-a-cidr" is not a CIDR`, []string{"SKIFF_CONFIG_FILE=" + cfg}, serverArgs(data, cluster.FreePort())...)
	})
	t.Run("memory limit that is not a size", func(t *testing.T) {
		cluster.FailsClearly(t, data, `--memory-limit "lots" is not a size: give one like 600Mi`, nil, serverArgs(data, cluster.FreePort(), "--memory-limit", "lots")...)
	})
	t.Run("missing config file", func(t *testing.T) {
		cluster.FailsClearly(t, data, "no such file", nil, "server", "--config", filepath.Join(dir, "absent.yaml"))
	})
	t.Run("unwritable data dir", func(t *testing.T) {
		file := filepath.Join(dir, "a-file")
		os.WriteFile(file, []byte("x"), 0o600)
		cluster.FailsClearly(t, dir, "cannot be created", nil, serverArgs(filepath.Join(file, "data"), cluster.FreePort())...)
	})
	t.Run("port in use", func(t *testing.T) {
		ln, err := net.Listen("tcp", "0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		cluster.FailsClearly(t, data, fmt.Sprintf("port %d is already in use", port), nil, serverArgs(data, port)...)
	})
	t.Run("corrupt state.db", func(t *testing.T) {
		data := filepath.Join(dir, "corrupt")
		db := filepath.Join(data, "server", "db")
		os.MkdirAll(db, 0o700)
		os.WriteFile(filepath.Join(db, "state.db"), []byte(strings.Repeat("not a database\n", 100)), 0o600)
		cluster.FailsClearly(t, data, "state.db is not a SQLite database", nil, serverArgs(data, cluster.FreePort())...)
	})
	t.Run("bad node label", func(t *testing.T) {
		args := serverArgs(data, cluster.FreePort(), "--node-label", "no-equals-sign")
		cluster.FailsClearly(t, data, `--node-label "no-equals-sign" is not key=value`, nil, append([]string{args[0]}, args[2:]...)...)
	})
	t.Run("a refused start makes no data dir", func(t *testing.T) {
		// The whole temp dir is compared: the data dir, which was not
		// there, must still not be.
		args := serverArgs(filepath.Join(dir, "fresh", "data"), cluster.FreePort(), "--node-taint", "foo")
		cluster.FailsClearly(t, dir, "--node-taint", nil, append([]string{args[0]}, args[2:]...)...)
	})
	t.Run("bad kubelet flag", func(t *testing.T) {
		args := serverArgs(data, cluster.FreePort(), "--kubelet-arg", "no-such-flag=1")
		cluster.FailsClearly(t, data, "--kubelet-arg: unknown flag: --no-such-flag", nil, append([]string{args[0]}, args[2:]...)...)
	})
	t.Run("missing runc", func(t *testing.T) {
		args := serverArgs(data, cluster.FreePort())
		cluster.FailsClearly(t, data, "runc is not installed: install it with", []string{"PATH=" + t.TempDir()}, append([]string{args[0]}, args[2:]...)...)
	})
	t.Run("bad pass-through flag", func(t *testing.T) {
		cluster.FailsClearly(t, data, "--kube-apiserver-arg: unknown flag: --no-such-flag", nil, serverArgs(data, cluster.FreePort(), "--kube-apiserver-arg", "no-such-flag=1")...)
	})
	t.Run("unknown add-on", func(t *testing.T) {
		cluster.FailsClearly(t, data, `--disable "traefik" is not something skiff can disable: pick from dns, helm-controller, ingress, local-storage, metrics-server, servicelb`, nil, serverArgs(data, cluster.FreePort(), "--disable", "traefik")...)
	})
	t.Run("Gateway address pool too large", func(t *testing.T) {
		cluster.FailsClearly(t, data, "--gateway-address-pool: prefix 10.0.0.0/8 holds more than 65536 addresses: give a smaller one", nil, serverArgs(data, cluster.FreePort(), "--gateway-address-pool", "10.0.0.0/8")...)
	})
	t.Run("storage dir that cannot be made", func(t *testing.T) {
		file := filepath.Join(dir, "a-file")
		os.WriteFile(file, nil, 0o600)
		args := serverArgs(data, cluster.FreePort(), "--default-local-storage-path", filepath.Join(file, "storage"))
		cluster.FailsClearly(t, data, "the local storage dir "+filepath.Join(file, "storage")+" cannot be created ("+file+" is not a directory): pick another with --default-local-storage-path, or --disable local-storage", nil, append([]string{args[0]}, args[2:]...)...)
	})
	t.Run("missing resolv.conf", func(t *testing.T) {
		args := serverArgs(data, cluster.FreePort(), "--resolv-conf", filepath.Join(dir, "absent.conf"))
		cluster.FailsClearly(t, data, "--resolv-conf: stat "+filepath.Join(dir, "absent.conf")+": no such file or directory", nil, append([]string{args[0]}, args[2:]...)...)
	})
	t.Run("kernel without what network policies need", func(t *testing.T) {
		// The node's probe fails as on a kernel without the reject
		// expression (a test hook), before anything starts.
		args := serverArgs(data, cluster.FreePort())
		cluster.FailsClearly(t, data, "the kernel lacks the reject expression (CONFIG_NFT_REJECT, CONFIG_NFT_REJECT_INET), which the network policy table needs",
			[]string{"SKIFF_TEST_NETPOL_PROBE_FAIL=1"}, append([]string{args[0]}, args[2:]...)...)
		cluster.FailsClearly(t, data, "or start with --disable-network-policy",
			[]string{"SKIFF_TEST_NETPOL_PROBE_FAIL=1"}, append([]string{args[0]}, args[2:]...)...)
	})
}
