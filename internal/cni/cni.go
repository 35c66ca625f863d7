// Package cni installs the standard CNI plugins built into skiff and writes
// the node's pod network configuration once the node has its pod CIDR.
package cni

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/skiff-dev/skiff/internal/assets"
	"github.com/skiff-dev/skiff/internal/atomicfile"
	"github.com/skiff-dev/skiff/internal/component"
	"github.com/skiff-dev/skiff/internal/kubeconfig"
)

// The upstream containernetworking plugins, built by the Makefile for the
// target architecture (the Makefile's CNI_PLUGINS, named as go.mod's tool
// lines name them). Strings, not an embed.FS: reading an embed.FS copies each
// file onto the heap.
var (
	//go:embed bin/bridge
	bridge string
	//go:embed bin/host-local
	hostLocal string
)

// plugins are the programs by the names they are installed under.
var plugins = map[string]*string{"bridge": &bridge, "host-local": &hostLocal}

// Install writes the plugins into dir, leaving identical files untouched.
func Install(dir string) error {
	for name, content := range plugins {
		if err := assets.Install(filepath.Join(dir, name), *content, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// Conflist renders the pod network configuration for podCIDR on the bridge
// named bridge; mtu 0 leaves the bridge plugin's default.
func Conflist(bridge, podCIDR, ipamDir string, mtu int) ([]byte, error) {
	plugin := map[string]any{
		"type":        "bridge",
		"bridge":      bridge,
		"isGateway":   true,
		"hairpinMode": true,
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  [][]map[string]string{{{"subnet": podCIDR}}},
			"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
			"dataDir": ipamDir,
		},
	}
	if mtu > 0 {
		plugin["mtu"] = mtu
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "skiff",
		// No portmap plugin: its nftables backend runs the nft program,
		// which a node does not need; the hostport component serves
		// hostPorts in-process.
		"plugins": []any{plugin},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// Config is the pod network's settings.
type Config struct {
	NodeName   string
	Kubeconfig string
	// Bridge is the pods' bridge.
	Bridge string
	// BinDir receives the plugins; ConfDir the CNI configuration; IPAMDir
	// holds host-local's allocations.
	BinDir, ConfDir, IPAMDir string
	// MTU of the pods' interfaces (0: the plugin's default): the overlay's.
	MTU int
}

// Network is the component that writes the configuration: it waits for the
// controller manager to give the node its pod CIDR.
type Network struct {
	Config

	component.Latch
	gateway chan struct{}
	gw      net.IP
}

// New returns the pod network component.
func New(cfg Config) (*Network, error) {
	if cfg.NodeName == "" || cfg.Bridge == "" || cfg.BinDir == "" || cfg.ConfDir == "" || cfg.IPAMDir == "" {
		return nil, fmt.Errorf("pod network: a node name, a bridge and its dirs are needed")
	}
	return &Network{Config: cfg, gateway: make(chan struct{})}, nil
}

// Gateway blocks until the pod bridge is up and returns its address, the
// node's own address on the pod network.
func (n *Network) Gateway(ctx context.Context) (net.IP, error) {
	select {
	case <-n.gateway:
		return n.gw, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Name implements component.Component.
func (n *Network) Name() string { return "pod network" }

// Run implements component.Component.
func (n *Network) Run(ctx context.Context) error {
	if err := Install(n.BinDir); err != nil {
		return err
	}
	n.SetReady() // the kubelet may start: it waits for the config itself
	client, err := kubeconfig.Client(n.Kubeconfig)
	if err != nil {
		return err
	}
	sel := fields.OneTermEqualSelector("metadata.name", n.NodeName).String()
	lw := &cache.ListWatch{
		ListFunc: func(o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return client.CoreV1().Nodes().List(ctx, o)
		},
		WatchFunc: func(o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return client.CoreV1().Nodes().Watch(ctx, o)
		},
	}
	var cidr string
	_, err = watchtools.UntilWithSync(ctx, lw, &v1.Node{}, nil, func(e watch.Event) (bool, error) {
		if node, ok := e.Object.(*v1.Node); ok && node.Spec.PodCIDR != "" {
			cidr = node.Spec.PodCIDR
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("waiting for node %s's pod CIDR: %w", n.NodeName, err)
	}
	conf, err := Conflist(n.Bridge, cidr, n.IPAMDir, n.MTU)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(n.ConfDir, 0o700); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(n.ConfDir, "10-skiff.conflist"), conf, 0o644); err != nil {
		return err
	}
	if n.gw, err = ensureBridge(n.Bridge, cidr); err != nil {
		return err
	}
	close(n.gateway)
	<-ctx.Done()
	return nil
}
