// Package controlplane runs the upstream kube-apiserver, kube-controller-manager
// and kube-scheduler in the skiff process, each configured through its own
// options and flags.
package controlplane

import "path/filepath"

// Files names the certificates, keys and kubeconfigs of the control plane,
// all under one directory (<data-dir>/server/tls).
type Files struct{ Dir string }

func (f Files) path(name string) string { return filepath.Join(f.Dir, name) }

func (f Files) ServerCA() string           { return f.path("server-ca.crt") }
func (f Files) ServerCAKey() string        { return f.path("server-ca.key") }
func (f Files) ClientCA() string           { return f.path("client-ca.crt") }
func (f Files) ClientCAKey() string        { return f.path("client-ca.key") }
func (f Files) RequestHeaderCA() string    { return f.path("request-header-ca.crt") }
func (f Files) RequestHeaderCAKey() string { return f.path("request-header-ca.key") }
func (f Files) ServiceAccountKey() string  { return f.path("service.key") }
func (f Files) ServingCert() string        { return f.path("serving-kube-apiserver.crt") }
func (f Files) ServingKey() string         { return f.path("serving-kube-apiserver.key") }
func (f Files) APIServerClientCert() string {
	return f.path("client-kube-apiserver.crt")
}
func (f Files) APIServerClientKey() string { return f.path("client-kube-apiserver.key") }
func (f Files) AuthProxyCert() string      { return f.path("client-auth-proxy.crt") }
func (f Files) AuthProxyKey() string       { return f.path("client-auth-proxy.key") }

// KubeletCA signs the kubelets' serving certificates, and nothing else: a
// node's serving key is then no identity of the API server to the other
// nodes, which trust the server CA for that.
func (f Files) KubeletCA() string    { return f.path("kubelet-ca.crt") }
func (f Files) KubeletCAKey() string { return f.path("kubelet-ca.key") }

// KubeletCABundle is what kubelets' serving certificates are verified
// with: the kubelet CA, and the server CA that signed them before the
// kubelet CA was made (nodes joined then keep theirs until they renew).
func (f Files) KubeletCABundle() string { return f.path("kubelet-ca-bundle.crt") }

// MetricsServingCert and MetricsServingKey serve the resource metrics API to
// the API server, signed by the server CA for the metrics-server Service.
func (f Files) MetricsServingCert() string { return f.path("serving-metrics-server.crt") }
func (f Files) MetricsServingKey() string  { return f.path("serving-metrics-server.key") }

// ControllerManagerServingCert and the three after it serve the controller
// manager's and the scheduler's /healthz and /metrics on loopback, signed
// by the server CA. Without them each makes a self-signed pair (two RSA
// keys) at every start, which a small board pays in seconds.
func (f Files) ControllerManagerServingCert() string {
	return f.path("serving-kube-controller-manager.crt")
}
func (f Files) ControllerManagerServingKey() string {
	return f.path("serving-kube-controller-manager.key")
}
func (f Files) SchedulerServingCert() string { return f.path("serving-kube-scheduler.crt") }
func (f Files) SchedulerServingKey() string  { return f.path("serving-kube-scheduler.key") }

// EncryptionConfig is the API server's encryption configuration for
// Secrets at rest (--secrets-encryption).
func (f Files) EncryptionConfig() string { return f.path("encryption-config.yaml") }

// Shared are the files every server of one cluster must hold alike: the CAs
// and the service-account signing key. The rest is made from them.
func (f Files) Shared() []string {
	return []string{f.ServerCA(), f.ServerCAKey(), f.ClientCA(), f.ClientCAKey(),
		f.RequestHeaderCA(), f.RequestHeaderCAKey(), f.ServiceAccountKey(), f.KubeletCA(), f.KubeletCAKey()}
}

// The embedded etcd's CA (--cluster-init), which signs its serving and
// peer certificates and the API server's client certificate towards it.
// Every server of the cluster holds the same CA (ETCDShared).
func (f Files) ETCDCA() string         { return f.path("etcd-ca.crt") }
func (f Files) ETCDCAKey() string      { return f.path("etcd-ca.key") }
func (f Files) ETCDServerCert() string { return f.path("serving-etcd.crt") }
func (f Files) ETCDServerKey() string  { return f.path("serving-etcd.key") }
func (f Files) ETCDPeerCert() string   { return f.path("peer-etcd.crt") }
func (f Files) ETCDPeerKey() string    { return f.path("peer-etcd.key") }
func (f Files) ETCDClientCert() string { return f.path("client-kube-apiserver-etcd.crt") }
func (f Files) ETCDClientKey() string  { return f.path("client-kube-apiserver-etcd.key") }

// ETCDShared are the files every server of a cluster on the embedded etcd
// holds alike besides Shared: the etcd CA.
func (f Files) ETCDShared() []string { return []string{f.ETCDCA(), f.ETCDCAKey()} }

// ClientCert and ClientKey are the certificate files of a named client
// (admin, controller, scheduler, metrics-server).
func (f Files) ClientCert(name string) string { return f.path("client-" + name + ".crt") }
func (f Files) ClientKey(name string) string  { return f.path("client-" + name + ".key") }

// Kubeconfig is the kubeconfig of a named client.
func (f Files) Kubeconfig(name string) string { return f.path(name + ".kubeconfig") }

// AuthenticationConfig is the API server's structured authentication config.
func (f Files) AuthenticationConfig() string { return f.path("authentication-config.yaml") }
