package controlplane

import (
	"net"
	"slices"
	"testing"

	cliflag "k8s.io/component-base/cli/flag"
	apiserveroptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"
)

// A list flag the user passes replaces skiff's value instead of adding to
// it, and keeps its commas.
func TestUserFlagReplacesGenerated(t *testing.T) {
	var fss cliflag.NamedFlagSets
	fs := fss.FlagSet("admission")
	plugins := fs.StringSlice("enable-admission-plugins", nil, "")
	port := fs.Int("secure-port", 0, "")
	err := parseFlags("kube-apiserver", fss,
		[]string{flag("enable-admission-plugins", "NodeRestriction"), flag("secure-port", 6443)},
		[]string{"enable-admission-plugins=NodeRestriction,EventRateLimit"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"NodeRestriction", "EventRateLimit"}; !slices.Equal(*plugins, want) || *port != 6443 {
		t.Errorf("plugins %v port %d, want %v and skiff's port", *plugins, *port, want)
	}
}

// The embedded etcd's address and TLS files reach the API server's own
// storage options; kine's socket needs none.
func TestAPIServerETCDOptions(t *testing.T) {
	for _, tls := range []bool{false, true} {
		a := &APIServer{APIServerConfig: APIServerConfig{Config: &Config{DataDir: "/data", Files: Files{Dir: "/data/server/tls"},
			AdvertiseIP: net.ParseIP("192.0.2.1"), BindAddress: "0.0.0.0", Port: 6443, ServiceCIDR: "10.43.0.0/16", ServiceNodePortRange: "30000-32767", ClusterDomain: "cluster.local"}}}
		a.ETCDServers = func() string { return "https://127.0.0.1:2379" }
		if tls {
			a.ETCDCAFile, a.ETCDCertFile, a.ETCDKeyFile = "/tls/etcd-ca.crt", "/tls/client.crt", "/tls/client.key"
		}
		s := apiserveroptions.NewServerRunOptions()
		if err := parseFlags("kube-apiserver", s.Flags(), a.args(), nil); err != nil {
			t.Fatal(err)
		}
		tr := s.Etcd.StorageConfig.Transport
		if !slices.Equal(tr.ServerList, []string{"https://127.0.0.1:2379"}) {
			t.Errorf("servers %v", tr.ServerList)
		}
		got, want := []string{tr.TrustedCAFile, tr.CertFile, tr.KeyFile}, []string{a.ETCDCAFile, a.ETCDCertFile, a.ETCDKeyFile}
		if !slices.Equal(got, want) {
			t.Errorf("TLS %v: CA, cert and key %q, want %q", tls, got, want)
		}
	}
}
