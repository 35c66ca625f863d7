// Package kubeconfig writes the kubeconfig files skiff hands to its
// components and to the admin, and makes clients from them.
package kubeconfig

import (
	"os"

	"github.com/skiff-dev/skiff/internal/atomicfile"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Files is a kubeconfig that refers to certificate files on disk, so that a
// renewed certificate is picked up without rewriting the kubeconfig.
type Files struct {
	Server string
	// ServerName, if set, is the name the server's certificate is verified
	// by instead of Server's host.
	ServerName string
	CAFile     string
	CertFile   string
	KeyFile    string
}

// Embedded is a kubeconfig with its certificates inlined, for handing out.
type Embedded struct {
	Server string
	CA     []byte
	Cert   []byte
	Key    []byte
}

// Write writes a file-referencing kubeconfig to path (mode 0600).
func (f Files) Write(path string) error {
	return write(path, 0o600, &clientcmdapi.Cluster{Server: f.Server, TLSServerName: f.ServerName, CertificateAuthority: f.CAFile},
		&clientcmdapi.AuthInfo{ClientCertificate: f.CertFile, ClientKey: f.KeyFile})
}

// Write writes a self-contained kubeconfig to path with the given mode.
func (e Embedded) Write(path string, mode os.FileMode) error {
	return write(path, mode, &clientcmdapi.Cluster{Server: e.Server, CertificateAuthorityData: e.CA},
		&clientcmdapi.AuthInfo{ClientCertificateData: e.Cert, ClientKeyData: e.Key})
}

func write(path string, mode os.FileMode, cluster *clientcmdapi.Cluster, user *clientcmdapi.AuthInfo) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["default"] = cluster
	cfg.AuthInfos["default"] = user
	cfg.Contexts["default"] = &clientcmdapi.Context{Cluster: "default", AuthInfo: "default"}
	cfg.CurrentContext = "default"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, mode)
}

// Client returns a clientset for the kubeconfig at path, at RESTConfig's
// request rate.
func Client(path string) (*kubernetes.Clientset, error) {
	cfg, err := RESTConfig(path)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// The request rate of skiff's own components: the kubelet's defaults.
const (
	qps   = 50
	burst = 100
)

// RESTConfig reads the kubeconfig at path for one of skiff's components,
// at the kubelet's request rate instead of client-go's default of 5 a
// second: once its first 10 are spent, that spaces a component's requests
// 200 ms apart, and the add-ons' 20 objects took 2 s of every start. The
// API server's priority and fairness still has the last word.
func RESTConfig(path string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = qps, burst
	return cfg, nil
}
