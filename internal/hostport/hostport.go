// Package hostport serves the hostPorts of the node's pods: a connection to
// one of the node's addresses on a pod's hostPort goes to the pod, from
// other hosts, from the node itself, from other pods and from the pod
// itself. It watches the node's pods and programs an nftables table of its
// own through netlink, as the Service proxy does, so that the node needs no
// `nft` or `iptables` program: the CNI portmap plugin runs one.
//
// Every sync is one transaction; the first rewrites the whole table, later
// ones only the mappings that changed. Stopping leaves the table in place,
// so running pods keep their hostPorts across a restart; Cleanup removes it.
package hostport

import (
	"context"
	"errors"
	"fmt"
	"os"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/component"
	"github.com/skiff-dev/skiff/internal/kubeconfig"
	"github.com/skiff-dev/skiff/internal/nft"
)

// Config configures the hostPorts.
type Config struct {
	// NodeName is this node's name: its pods' hostPorts are served.
	NodeName string
	// Kubeconfig gives read access to the node's pods.
	Kubeconfig string
	// Table is the nftables table.
	Table string
	// Bridge is the pods' bridge, which routes loopback addresses once a
	// pod has a hostPort on one.
	Bridge string
}

// HostPorts is the component.
type HostPorts struct {
	cfg Config
	component.Latch
	loop *component.SyncLoop
}

// New returns the component.
func New(cfg Config) (*HostPorts, error) {
	if cfg.NodeName == "" || cfg.Table == "" {
		return nil, errors.New("hostports: the node name and table must be given")
	}
	return &HostPorts{cfg: cfg, loop: component.NewSyncLoop("hostports")}, nil
}

// Name implements component.Component.
func (h *HostPorts) Name() string { return "hostports" }

// Cleanup deletes the table, if it exists.
func Cleanup(table string) error { return nft.RemoveTable(nft.IPv4, table, 0) }

// Run implements component.Component.
func (h *HostPorts) Run(ctx context.Context) error {
	client, err := kubeconfig.Client(h.cfg.Kubeconfig)
	if err != nil {
		return err
	}
	s := &syncer{fam: nft.IPv4, table: h.cfg.Table, bridge: h.cfg.Bridge}
	if err := s.probe(); err != nil {
		return fmt.Errorf("nftables table %s cannot be created on this host (kernel without nf_tables, nat or fib support?): %w", s.table, err)
	}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", h.cfg.NodeName).String()
		}))
	pods := factory.Core().V1().Pods()
	if _, err := pods.Informer().AddEventHandler(h.loop.Handler()); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitFor(ctx, "", pods.Informer().HasSyncedChecker()) {
		return nil // ctx ended
	}
	events := record.NewBroadcaster(record.WithContext(ctx))
	events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	defer events.Shutdown()
	recorder := events.NewRecorder(scheme.Scheme, v1.EventSource{Component: "skiff-hostports", Host: h.cfg.NodeName})
	reported := map[string]bool{} // conflicts already told, by pod UID and port
	sync := func() error {
		list, err := pods.Lister().List(labels.Everything())
		if err != nil {
			return err
		}
		conflicts, err := s.sync(list)
		now := map[string]bool{}
		for _, c := range conflicts {
			k := string(c.Pod.UID) + "/" + c.Port
			now[k] = true
			if !reported[k] {
				recorder.Eventf(c.Pod, v1.EventTypeWarning, "HostPortConflict",
					"hostPort %s is held by pod %s: the pod does not get it; free it or pick another hostPort", c.Port, c.Holder)
				klog.InfoS("hostports: a pod asks for a hostPort another pod holds", "pod", klog.KObj(c.Pod), "port", c.Port, "holder", c.Holder)
			}
		}
		reported = now
		return err
	}
	return h.loop.Run(ctx, &h.Latch, sync)
}

// syncer programs the table.
type syncer struct {
	fam    *nft.Family
	table  string
	bridge string
	// localnet is set once the bridge routes loopback addresses.
	localnet bool
	// applied is what the table holds, or nil if unknown.
	applied *nft.Ruleset
}

// sync makes the table match pods, and returns the hostPorts pods could
// not have.
func (s *syncer) sync(pods []*v1.Pod) ([]Conflict, error) {
	rs, conflicts := ruleset(s.fam, s.table, pods)
	if !s.localnet && s.bridge != "" && loopbackMapping(s.fam, rs) {
		// Without it the kernel drops a connection from 127.0.0.1 that
		// DNAT sends out of the bridge. The table's filter-input chain
		// keeps the bridge from reaching the node's loopback otherwise.
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+s.bridge+"/route_localnet", []byte("1"), 0o644); err != nil {
			return conflicts, fmt.Errorf("letting the pod bridge %s route loopback addresses for a hostPort on 127.0.0.1: %w", s.bridge, err)
		}
		s.localnet = true
	}
	b := nft.NewBatch(s.fam, s.table)
	changed, ok := 0, false
	if s.applied != nil {
		changed, ok = nft.WritePartial(b, s.applied, rs)
	}
	if !ok {
		nft.WriteFull(b, rs)
		changed = len(rs.Units)
	}
	s.applied = nil // unknown until the kernel says yes
	if err := b.Send(0); err != nil {
		return conflicts, err
	}
	s.applied = rs
	klog.V(2).InfoS("hostports sync", "full", !ok, "mappings", changed)
	return conflicts, nil
}

// probe checks that the kernel takes the table: it creates a scratch copy
// of the fixed chains and deletes it in the same transaction, leaving the
// real table, which may be serving, alone.
func (s *syncer) probe() error {
	rs, _ := ruleset(s.fam, s.table+"-probe", nil)
	b := nft.NewBatch(s.fam, rs.Table)
	nft.WriteFull(b, rs)
	b.DeleteTable()
	return b.Send(0)
}
