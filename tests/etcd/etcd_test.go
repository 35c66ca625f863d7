// Package etcd tests a server on the embedded etcd (--cluster-init): a
// node that runs pods, keeps every answered write through a restart and
// kill -9, and refuses the flags that do not go with its data dir.
package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// TestETCD runs its steps in order on the package's server: the later ones
// restart and kill it.
func TestETCD(t *testing.T) {
	var ns string
	cluster.Steps(t,
		cluster.Step{Name: "APIServerStoresInETCD", Run: storesInETCD},
		cluster.Step{Name: "PodRuns", Run: func(t *testing.T) {
			ns = namespace(t)
			srv.EchoDeployment(t, ns, "echo", 1, "  ports: [{port: 80, targetPort: 8080}]\n")
		}},
		cluster.Step{Name: "RestartedWithoutClusterInitKeepsETCD", Run: func(t *testing.T) { restart(t, ns) }},
		cluster.Step{Name: "KilledUnderWritersLosesNothing", Run: crashes},
	)
}

// namespace is a namespace that outlives the step that made it (a later
// step checks its pods).
func namespace(t *testing.T) string {
	cs := srv.ClientT(t)
	name := "etcd-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 10)
	if _, err := cs.CoreV1().Namespaces().Create(cluster.Context(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cluster.WaitFor(t, "the namespace's default ServiceAccount", func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	return name
}

// etcdClient is a client of the server's etcd with the API server's own
// certificate, or with none when cert is false.
func etcdClient(t *testing.T, cert bool) *clientv3.Client {
	t.Helper()
	var member struct {
		ClientPort int `json:"clientPort"`
	}
	data, err := os.ReadFile(filepath.Join(srv.DataDir, "server", "db", "etcd", "skiff-member.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &member); err != nil {
		t.Fatal(err)
	}
	tlsDir := filepath.Join(srv.DataDir, "server", "tls")
	info := transport.TLSInfo{TrustedCAFile: filepath.Join(tlsDir, "etcd-ca.crt")}
	if cert {
		info.CertFile, info.KeyFile = filepath.Join(tlsDir, "client-kube-apiserver-etcd.crt"), filepath.Join(tlsDir, "client-kube-apiserver-etcd.key")
	}
	tc, err := info.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{fmt.Sprintf("https://127.0.0.1:%d", member.ClientPort)},
		TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// storesInETCD: the API server's objects are in etcd, which asks clients
// for a certificate of its CA; there is no SQLite database and no kine.
func storesInETCD(t *testing.T) {
	ctx := cluster.Context(t)
	resp, err := etcdClient(t, true).Get(ctx, "/registry/namespaces/kube-system")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("etcd holds %d kube-system namespaces, want 1", len(resp.Kvs))
	}
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := etcdClient(t, false).Get(short, "/registry/namespaces/kube-system"); err == nil {
		t.Fatal("etcd answered a client without a certificate")
	}
	db := filepath.Join(srv.DataDir, "server", "db")
	for _, f := range []string{"state.db", "kine.sock"} {
		if _, err := os.Stat(filepath.Join(db, f)); err == nil {
			t.Errorf("%s exists on etcd", f)
		}
	}
}

// restart: a server restarted without --cluster-init keeps running on
// etcd (its data dir holds etcd's), with its objects and its node's pod.
func restart(t *testing.T, ns string) {
	cs := srv.ClientT(t)
	ctx := cluster.Context(t)
	for i := range 100 {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("restart-%d", i)}, Data: map[string]string{"i": strconv.Itoa(i)}}
		if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("stopping the server: %v", err)
	}
	srv.Extra = nil // no --cluster-init
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitNodesReady(ctx); err != nil {
		t.Fatal(err)
	}
	cs = srv.ClientT(t)
	list, err := cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, cm := range list.Items {
		if strings.HasPrefix(cm.Name, "restart-") {
			n++
		}
	}
	if n != 100 {
		t.Fatalf("%d of 100 ConfigMaps after the restart", n)
	}
	if _, err := os.Stat(filepath.Join(srv.DataDir, "server", "db", "state.db")); err == nil {
		t.Fatal("the server restarted without --cluster-init made a SQLite database")
	}
	srv.WaitReadyEndpoints(t, ns, "echo", 1)
}

// crashes kills the server with SIGKILL under 50 writers, three times:
// every create it answered is there after each restart.
func crashes(t *testing.T) {
	acked := map[string]uint64{}
	for round := range 3 {
		maps.Copy(acked, srv.KillUnderCreates(t, fmt.Sprintf("crash-%d", round), 50, 300))
		if err := srv.Start(context.Background()); err != nil {
			t.Fatalf("round %d: the server does not start again after kill -9: %v", round, err)
		}
		list, err := srv.ClientT(t).CoreV1().ConfigMaps("default").List(cluster.Context(t), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cluster.CreatesKept(t, fmt.Sprintf("round %d", round), list, acked)
	}
	if err := srv.WaitNodesReady(cluster.Context(t)); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d answered creates, all kept through 3 kills", len(acked))
}

func serverArgs(dataDir string, extra ...string) []string {
	return append([]string{"server", "--disable-agent", "--data-dir", dataDir, "--https-listen-port", strconv.Itoa(cluster.FreePort()),
		"--write-kubeconfig", filepath.Join(dataDir, "..", "kubeconfig.yaml")}, extra...)
}

// TestBadInput: flags that do not go with the data dir are refused in one
// line, with nothing written. The data dirs are made up: no server starts.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	fresh := filepath.Join(dir, "fresh")
	os.MkdirAll(fresh, 0o700)
	sqlite := filepath.Join(dir, "sqlite")
	os.MkdirAll(filepath.Join(sqlite, "server", "db"), 0o700)
	header := append([]byte("SQLite format 3\x00"), make([]byte, 84)...)
	os.WriteFile(filepath.Join(sqlite, "server", "db", "state.db"), header, 0o600)
	onETCD := filepath.Join(dir, "etcd")
	os.MkdirAll(filepath.Join(onETCD, "server", "db", "etcd"), 0o700)

	t.Run("cluster-init with an external datastore", func(t *testing.T) {
		cluster.FailsClearly(t, fresh, "--cluster-init starts the embedded etcd and --datastore-endpoint names an external datastore: give one or the other", nil,
			serverArgs(fresh, "--cluster-init", "--datastore-endpoint", "postgres://skiff@127.0.0.1:1/skiff")...)
	})
	t.Run("cluster-init on a data dir on SQLite", func(t *testing.T) {
		cluster.FailsClearly(t, sqlite, "already holds this cluster on SQLite, and moving it into etcd is not supported yet: start without --cluster-init to keep SQLite, or give --cluster-init a new --data-dir", nil,
			serverArgs(sqlite, "--cluster-init")...)
	})
	t.Run("external datastore on a data dir on etcd", func(t *testing.T) {
		cluster.FailsClearly(t, onETCD, "holds this server's embedded etcd, which --datastore-endpoint would leave behind", nil,
			serverArgs(onETCD, "--datastore-endpoint", "postgres://skiff@127.0.0.1:1/skiff")...)
	})
	t.Run("election timeout below five heartbeats", func(t *testing.T) {
		cluster.FailsClearly(t, fresh, "--etcd-election-timeout 1s must be at least 5 times --etcd-heartbeat-interval 500ms", nil,
			serverArgs(fresh, "--cluster-init", "--etcd-election-timeout", "1s")...)
	})
	t.Run("cluster-reset on etcd", func(t *testing.T) {
		snap := filepath.Join(dir, "snapshot")
		os.WriteFile(snap, []byte("x"), 0o600)
		cluster.FailsClearly(t, onETCD, "--cluster-reset does not restore the embedded etcd yet", nil,
			serverArgs(onETCD, "--cluster-reset", "--cluster-reset-restore-path", snap)...)
	})
	t.Run("scheduled snapshots on etcd", func(t *testing.T) {
		cluster.FailsClearly(t, onETCD, "--snapshot-schedule-cron does not snapshot the embedded etcd yet", nil,
			serverArgs(onETCD, "--snapshot-schedule-cron", "0 * * * *")...)
	})
	t.Run("snapshot save on etcd", func(t *testing.T) {
		cluster.FailsClearly(t, onETCD, "runs on the embedded etcd, which `skiff snapshot save` does not snapshot yet", nil,
			"snapshot", "save", "--data-dir", onETCD)
	})
}
