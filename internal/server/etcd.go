package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/skiff-dev/skiff/internal/controlplane"
	"github.com/skiff-dev/skiff/internal/etcd"
	"github.com/skiff-dev/skiff/internal/host"
	"github.com/skiff-dev/skiff/internal/pki"
)

// dbDir holds the server's datastore: SQLite's state.db, or etcd's dir.
func dbDir(dataDir string) string { return filepath.Join(dataDir, "server", "db") }

// ETCDDir is the embedded etcd's data dir. Its presence decides the
// datastore: a data dir that holds it keeps using etcd.
func ETCDDir(dataDir string) string { return filepath.Join(dbDir(dataDir), "etcd") }

// checkDatastore says whether the server runs on the embedded etcd, and
// refuses the flags that do not go with the data dir; it writes nothing.
func checkDatastore(o Options, dataDir string) (bool, error) {
	dir := ETCDDir(dataDir)
	onETCD := etcd.Exists(dir)
	switch {
	case o.ClusterInit && o.DatastoreEndpoint != "":
		return false, errors.New("--cluster-init starts the embedded etcd and --datastore-endpoint names an external datastore: give one or the other")
	case onETCD && o.DatastoreEndpoint != "":
		return false, fmt.Errorf("%s holds this server's embedded etcd, which --datastore-endpoint would leave behind: leave --datastore-endpoint out, or give it another --data-dir", dir)
	case o.ClusterInit && !onETCD && onSQLite(dataDir):
		return false, fmt.Errorf("%s already holds this cluster on SQLite, and moving it into etcd is not supported yet: start without --cluster-init to keep SQLite, or give --cluster-init a new --data-dir", filepath.Join(dbDir(dataDir), "state.db"))
	}
	return o.DatastoreEndpoint == "" && (o.ClusterInit || onETCD), nil
}

// onSQLite says whether the data dir holds a SQLite database with data.
func onSQLite(dataDir string) bool {
	fi, err := os.Stat(filepath.Join(dbDir(dataDir), "state.db"))
	return err == nil && fi.Size() > 0
}

// newETCD is the embedded etcd's component: a member named after the node,
// on etcd's ports (free ones beside another server on this host).
func (p *plan) newETCD() (*etcd.ETCD, error) {
	ports := []int{etcd.DefaultClientPort, etcd.DefaultPeerPort}
	if !host.For(p.cfg.DataDir).WellKnownPorts {
		var err error
		if ports, err = host.FreePorts(2); err != nil {
			return nil, err
		}
	}
	suffix := make([]byte, 4)
	rand.Read(suffix)
	f := p.cfg.Files
	return etcd.New(etcd.Config{
		Dir:  ETCDDir(p.cfg.DataDir),
		Name: p.ncfg.NodeName + "-" + hex.EncodeToString(suffix),
		// Peers reach the member at the node's address.
		NodeIP: p.ips[0], ClientPort: ports[0], PeerPort: ports[1],
		CAFile: f.ETCDCA(), ServerCert: f.ETCDServerCert(), ServerKey: f.ETCDServerKey(),
		PeerCert: f.ETCDPeerCert(), PeerKey: f.ETCDPeerKey(),
		HeartbeatInterval: p.o.ETCDHeartbeatInterval, ElectionTimeout: p.o.ETCDElectionTimeout,
	})
}

// etcdNames are what the member's serving and peer certificates name: the
// addresses it listens on, and this host.
func (p *plan) etcdNames() pki.Spec {
	return pki.Spec{DNSNames: []string{"localhost", p.hostname}, IPs: append([]net.IP{net.ParseIP("127.0.0.1")}, p.ips...)}
}

// ensureETCDLeaves issues the embedded etcd's certificates that are
// missing, close to expiry or whose names changed, and says whether it
// issued any: the member's serving one, its peer one (which it also shows
// to its peers as a client), and the API server's client certificate. etcd
// and the API server read the files again by themselves.
func ensureETCDLeaves(c *controlplane.Config, ca *pki.CA, names pki.Spec) (bool, error) {
	f := c.Files
	issued := false
	for _, l := range []struct {
		cert, key string
		spec      pki.Spec
	}{
		{f.ETCDServerCert(), f.ETCDServerKey(), pki.Spec{CommonName: "etcd-server", Usage: pki.ServerAndClient, DNSNames: names.DNSNames, IPs: names.IPs}},
		{f.ETCDPeerCert(), f.ETCDPeerKey(), pki.Spec{CommonName: "etcd-peer", Usage: pki.ServerAndClient, DNSNames: names.DNSNames, IPs: names.IPs}},
		{f.ETCDClientCert(), f.ETCDClientKey(), pki.Spec{CommonName: "kube-apiserver-etcd-client", Usage: pki.Client}},
	} {
		wrote, err := ca.EnsureCert(l.cert, l.key, l.spec)
		issued = issued || wrote
		if err != nil {
			return issued, err
		}
	}
	return issued, nil
}
