package server

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/skiff-dev/skiff/internal/agent"
	"github.com/skiff-dev/skiff/internal/atomicfile"
	"github.com/skiff-dev/skiff/internal/controlplane"
	"github.com/skiff-dev/skiff/internal/join"
	"github.com/skiff-dev/skiff/internal/kubeconfig"
	"github.com/skiff-dev/skiff/internal/pki"
)

// nodeConfig returns the in-process node's settings.
func nodeConfig(c *controlplane.Config, o Options, name string, nodeIP net.IP) agent.Config {
	dir := filepath.Join(c.DataDir, "agent")
	cfg := agent.Config{
		DataDir:             c.DataDir,
		NodeOptions:         o.NodeOptions,
		ClusterCIDR:         o.ClusterCIDR,
		ServiceCIDR:         o.ServiceCIDR,
		DisableDNS:          slices.Contains(o.Disable, "dns"),
		DisableLocalStorage: slices.Contains(o.Disable, "local-storage"),
		DisableIngress:      slices.Contains(o.Disable, "ingress"),
		GatewayAddressPool:  o.GatewayAddressPool,
		// Status is written by servers' nodes, one at a time.
		IngressStatusKubeconfig: c.Files.Kubeconfig("admin"),
		Kubeconfig:              filepath.Join(dir, "kubelet.kubeconfig"),
		ClientCA:                c.Files.ClientCA(),
		ServingCert:             filepath.Join(dir, "serving-kubelet.crt"),
		ServingKey:              filepath.Join(dir, "serving-kubelet.key"),
	}
	cfg.NodeName, cfg.NodeIP = name, nodeIP.String()
	return cfg
}

// ensureNodeCerts issues the in-process node's kubelet certificates from the
// cluster CAs that are missing or close to expiry, and its kubeconfig; it
// says whether it issued any.
func ensureNodeCerts(c *controlplane.Config, cfg agent.Config, nodeIP net.IP, cas *authorities) (bool, error) {
	name, dir := cfg.NodeName, filepath.Dir(cfg.Kubeconfig)
	clientCert, clientKey := filepath.Join(dir, "client-kubelet.crt"), filepath.Join(dir, "client-kubelet.key")
	client, err := cas.client.EnsureCert(clientCert, clientKey, pki.Spec{
		CommonName: "system:node:" + name, Organization: []string{"system:nodes"},
	})
	if err != nil {
		return client, err
	}
	serving, err := cas.kubelet.EnsureCert(cfg.ServingCert, cfg.ServingKey, pki.Spec{
		CommonName: name, Usage: pki.Server, DNSNames: []string{name}, IPs: []net.IP{nodeIP},
	})
	if err != nil {
		return client || serving, err
	}
	server := "https://" + net.JoinHostPort(c.LoopbackAddress(), itoa(c.Port))
	kc := kubeconfig.Files{Server: server, ServerName: pki.APIServerName, CAFile: c.Files.ServerCA(), CertFile: clientCert, KeyFile: clientKey}
	return client || serving, kc.Write(cfg.Kubeconfig)
}

// nodePassword is the server's own node's password, made at first start:
// it binds the node's name on the server as an agent's binds its own.
func nodePassword(c *controlplane.Config) (string, error) {
	path := filepath.Join(c.DataDir, "server", "node-password")
	if data, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(data))) >= 16 {
		return strings.TrimSpace(string(data)), nil
	}
	password := join.NewServerSecret()
	return password, atomicfile.Write(path, []byte(password+"\n"), 0o600)
}
