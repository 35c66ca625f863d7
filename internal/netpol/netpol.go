package netpol

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/component"
	"github.com/skiff-dev/skiff/internal/kubeconfig"
	"github.com/skiff-dev/skiff/internal/nft"
)

// NetworkPolicy is the component: it watches the cluster's pods (peers may
// be anywhere), namespaces and network policies, and this node's Node
// object for its pod range, and keeps the table in step, one transaction
// per sync. Stopping leaves the table in place, so that the node's pods
// stay as protected as they were across a restart; Cleanup removes it.
type NetworkPolicy struct {
	cfg Config
	component.Latch
	loop *component.SyncLoop
}

// New returns the component.
func New(cfg Config) (*NetworkPolicy, error) {
	if _, err := cfg.Settings(nft.IPv4); err != nil {
		return nil, err
	}
	return &NetworkPolicy{cfg: cfg, loop: component.NewSyncLoop("network policy")}, nil
}

// Name implements component.Component.
func (n *NetworkPolicy) Name() string { return "network policy" }

// Cleanup deletes the table, if it exists.
func Cleanup(table string) error { return cleanup(table, 0) }

func cleanup(table string, netns int) error { return nft.RemoveTable(nft.IPv4, table, netns) }

// Run implements component.Component.
func (n *NetworkPolicy) Run(ctx context.Context) error {
	client, err := kubeconfig.Client(n.cfg.Kubeconfig)
	if err != nil {
		return err
	}
	return n.run(ctx, client, 0)
}

// run is Run with a client, in the network namespace netns (0: ours).
func (n *NetworkPolicy) run(ctx context.Context, client kubernetes.Interface, netns int) error {
	s := NewSyncer(n.cfg, netns)
	if err := s.Probe(); err != nil {
		return err
	}
	// The kubelet starts once this component is ready, so that no pod
	// runs before policies are enforced. The table of an earlier run
	// (skiff restarted, the host not) enforces them until the first sync:
	// ready at once, even while the API is out of reach.
	if ok, err := nft.TableExists(s.fam, n.cfg.Table, netns); err == nil && ok {
		n.SetReady()
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	nodeFactory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", n.cfg.NodeName).String()
		}))
	pods := factory.Core().V1().Pods()
	nss := factory.Core().V1().Namespaces()
	pols := factory.Networking().V1().NetworkPolicies()
	nodes := nodeFactory.Core().V1().Nodes()
	for _, inf := range []cache.SharedIndexInformer{pods.Informer(), nss.Informer(), pols.Informer(), nodes.Informer()} {
		if _, err := inf.AddEventHandler(n.loop.Handler()); err != nil {
			return err
		}
	}
	factory.Start(ctx.Done())
	nodeFactory.Start(ctx.Done())
	defer factory.Shutdown()
	defer nodeFactory.Shutdown()
	if !cache.WaitFor(ctx, "", pods.Informer().HasSyncedChecker(), nss.Informer().HasSyncedChecker(), pols.Informer().HasSyncedChecker(), nodes.Informer().HasSyncedChecker()) {
		return nil // ctx ended
	}
	sync := func() error {
		podList, err := pods.Lister().List(labels.Everything())
		if err != nil {
			return err
		}
		nsList, err := nss.Lister().List(labels.Everything())
		if err != nil {
			return err
		}
		polList, err := pols.Lister().List(labels.Everything())
		if err != nil {
			return err
		}
		var cidrs []string
		if node, err := nodes.Lister().Get(n.cfg.NodeName); err == nil {
			cidrs = nodePodCIDRs(node)
		}
		return s.Sync(cidrs, podList, nsList, polList)
	}
	return n.loop.Run(ctx, &n.Latch, sync)
}

// nodePodCIDRs is the node's pod range.
func nodePodCIDRs(node *v1.Node) []string {
	if len(node.Spec.PodCIDRs) > 0 {
		return node.Spec.PodCIDRs
	}
	if node.Spec.PodCIDR != "" {
		return []string{node.Spec.PodCIDR}
	}
	return nil
}

// Syncer programs the table from lists of objects, without an API server:
// the component drives one from its informers, tests and benchmarks drive
// one directly. The first sync, and the first after a failure, rewrites
// the whole table (one transaction that deletes and recreates it, so no
// packet sees it missing); the others change only the units that differ
// from the previous sync. A Syncer is not safe for concurrent use.
type Syncer struct {
	cfg   Config
	fam   *nft.Family
	netns int
	// podCIDRs are those of the last sync's settings.
	podCIDRs []string
	st       *Settings
	// applied is what the table holds, or nil if unknown.
	applied *nft.Ruleset
	cache   modelCache
	// Last describes the last sync, for logs and tests.
	Last SyncStats
}

// SyncStats describe a sync.
type SyncStats struct {
	Full  bool
	Units int // units written (all of them for a full sync)
}

// NewSyncer returns a Syncer for the table of cfg in the network namespace
// netnsFd refers to; 0 means the caller's. cfg.PodCIDRs is replaced by
// each sync's.
func NewSyncer(cfg Config, netnsFd int) *Syncer {
	return &Syncer{cfg: cfg, fam: nft.IPv4, netns: netnsFd}
}

// Sync makes the table match the objects, podCIDRs being the node's pod
// range (empty while unknown: the whole cluster range is treated as this
// node's, see Config.PodCIDRs). Like the objects of an informer's cache,
// an object passed to Sync must not be modified afterwards: a changed
// object is a new one (the units of unchanged objects are reused).
func (s *Syncer) Sync(podCIDRs []string, pods []*v1.Pod, namespaces []*v1.Namespace, policies []*networkingv1.NetworkPolicy) error {
	if s.st == nil || !slices.Equal(podCIDRs, s.podCIDRs) {
		cfg := s.cfg
		cfg.PodCIDRs = podCIDRs
		st, err := cfg.Settings(s.fam)
		if err != nil {
			return err
		}
		s.st, s.podCIDRs = st, slices.Clone(podCIDRs)
		s.cache = modelCache{} // pod units depend on the range
	}
	rs := build(s.st, pods, namespaces, policies, &s.cache)
	b := nft.NewBatch(s.fam, s.cfg.Table)
	changed, ok := 0, false
	if s.applied != nil {
		changed, ok = nft.WritePartial(b, s.applied, rs)
	}
	s.Last = SyncStats{Units: changed}
	if !ok {
		nft.WriteFull(b, rs)
		s.Last = SyncStats{Full: true, Units: len(rs.Units)}
	}
	s.applied = nil // unknown until the kernel says yes
	if err := b.Send(s.netns); err != nil {
		return err
	}
	s.applied = rs
	klog.V(2).InfoS("network policy sync", "full", s.Last.Full, "units", s.Last.Units)
	return nil
}

// ProbeFailEnv is a test hook: with it set to 1, the probe fails as on a
// kernel without the reject expression, so that tests can see a node
// refuse to start. It is not meant for anything else.
const ProbeFailEnv = "SKIFF_TEST_NETPOL_PROBE_FAIL"

// feature is one thing of the kernel the table needs: a scratch table that
// uses it alone, so that a failed probe names what is missing.
type feature struct {
	name string // what the kernel lacks, for the error
	use  func(f *nft.Family) *nft.Ruleset
}

// features are what the table needs, one by one. Each scratch table holds
// a filter chain on the forward hook, which everything else needs.
var features = []feature{
	{"nf_tables filter chains on the forward hook (CONFIG_NF_TABLES, CONFIG_NF_TABLES_IPV4)", func(f *nft.Family) *nft.Ruleset {
		return scratch(f, nil, nft.NewRule(nft.Exprs(f.LoadDaddr(nft.Reg1), nft.CmpEq(nft.Reg1, make([]byte, f.AddrLen)))))
	}},
	{"the reject expression (CONFIG_NFT_REJECT, CONFIG_NFT_REJECT_INET)", func(f *nft.Family) *nft.Ruleset {
		return scratch(f, nil, rejectChain(f).Rules...)
	}},
	{"conntrack state matching (CONFIG_NFT_CT, CONFIG_NF_CONNTRACK)", func(f *nft.Family) *nft.Ruleset {
		return scratch(f, nil, nft.NewRule(nft.CtStateIn(1)))
	}},
	{"the packet mark (meta mark set, CONFIG_NF_TABLES)", func(f *nft.Family) *nft.Ruleset {
		return scratch(f, nil, nft.NewRule(nft.SetMark(markAllow, true)))
	}},
	{"verdict maps with jumps (CONFIG_NF_TABLES)", func(f *nft.Family) *nft.Ruleset {
		rs := scratch(f, []*nft.Set{{Name: "m", Key: f.AddrType, IsMap: true}},
			nft.NewRule(nft.Exprs(f.LoadDaddr(nft.Reg1),
				&expr.Lookup{SourceRegister: nft.Reg1, IsDestRegSet: true, DestRegister: nft.RegVerdict, SetName: "m"})))
		rs.Units = []*nft.Unit{{Key: "u", Chains: []*nft.Chain{nft.NewChain("j", "")},
			Elements: []nft.Element{{Set: "m", Key: string(make([]byte, f.AddrLen)), Chain: "j", Jump: true}}}}
		return rs
	}},
	{"interval sets (CONFIG_NF_TABLES, set type rbtree)", func(f *nft.Family) *nft.Ruleset {
		rs := scratch(f, []*nft.Set{{Name: "s", Key: f.AddrType, Interval: true}},
			nft.NewRule(nft.Exprs(f.LoadDaddr(nft.Reg1), nft.Lookup(nft.Reg1, "s", false))))
		first, end := make([]byte, f.AddrLen), make([]byte, f.AddrLen)
		end[0] = 10
		rs.Units = []*nft.Unit{{Key: "u", Members: []nft.Member{{Set: "s", Key: string(first), End: string(end)}}}}
		return rs
	}},
	{"concatenated set keys (address . protocol . port)", func(f *nft.Family) *nft.Ruleset {
		rs := scratch(f, []*nft.Set{{Name: "s", Key: ipProtoPort(f)}}, nft.NewRule(f.LookupDaddrProtoPort("s")))
		rs.Units = []*nft.Unit{{Key: "u", Members: []nft.Member{{Set: "s", Key: nft.IPProtoPortKey(make([]byte, f.AddrLen), nft.ProtoTCP, 80)}}}}
		return rs
	}},
}

// scratch is a scratch table's ruleset: a forward chain of rules, sets.
func scratch(f *nft.Family, sets []*nft.Set, rules ...nft.Rule) *nft.Ruleset {
	return &nft.Ruleset{Family: f, Chains: []*nft.Chain{
		nft.BaseChain(chainForward, nftables.ChainTypeFilter, nftables.ChainHookForward, forwardPriority, rules...)}, Sets: sets}
}

// probeCluster is a cluster whose table uses every kind of chain, set and
// expression the model emits: a local pod restricted both ways by
// policies with pod and namespace selectors, ipBlocks with excepts,
// numbered, ranged and named ports.
func probeCluster() ([]*v1.Pod, []*v1.Namespace, []*networkingv1.NetworkPolicy) {
	const node, ns = "probe", "probe"
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p", Labels: map[string]string{"a": "b"}},
		Spec: v1.PodSpec{NodeName: node, Containers: []v1.Container{{Name: "c",
			Ports: []v1.ContainerPort{{Name: "http", Protocol: v1.ProtocolTCP, ContainerPort: 80}}}}},
		Status: v1.PodStatus{PodIP: "10.42.0.2", PodIPs: []v1.PodIP{{IP: "10.42.0.2"}}}}
	namespace := &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{v1.LabelMetadataName: ns}}}
	tcp, udp := v1.ProtocolTCP, v1.ProtocolUDP
	port, named, end := intstr.FromInt32(80), intstr.FromString("http"), int32(90)
	peers := []networkingv1.NetworkPolicyPeer{
		{PodSelector: &metav1.LabelSelector{}},
		{NamespaceSelector: &metav1.LabelSelector{}, PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}}},
		{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{"10.0.0.0/8"}}},
	}
	ports := []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}, {Protocol: &udp, Port: &port, EndPort: &end},
		{Protocol: &tcp, Port: &named}}
	pol := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p"},
		Spec: networkingv1.NetworkPolicySpec{
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: peers, Ports: ports}},
			Egress:      []networkingv1.NetworkPolicyEgressRule{{To: peers, Ports: ports}},
		}}
	return []*v1.Pod{pod}, []*v1.Namespace{namespace}, []*networkingv1.NetworkPolicy{pol}
}

// Probe checks that the kernel takes the table: it creates a scratch copy
// of a table using every kind of chain, set and expression the model emits
// and deletes it in the same transaction, leaving the real table, which
// may be serving, alone. If the kernel refuses it, the error names what
// the kernel lacks, and says how to start without network policies.
func (s *Syncer) Probe() error {
	table := s.cfg.Table + "-probe"
	try := func(rs *nft.Ruleset) error {
		rs.Table = table
		b := nft.NewBatch(s.fam, table)
		nft.WriteFull(b, rs)
		b.DeleteTable()
		return b.Send(s.netns)
	}
	st, err := Config{NodeName: "probe", Table: table, ClusterCIDR: "10.42.0.0/16", PodCIDRs: []string{"10.42.0.0/24"}}.Settings(s.fam)
	if err != nil {
		return err
	}
	pods, nss, pols := probeCluster()
	full := try(Build(st, pods, nss, pols))
	simulated := os.Getenv(ProbeFailEnv) == "1"
	if full == nil && !simulated {
		return nil
	}
	// Which part is missing: each feature alone.
	for _, f := range features {
		err := try(f.use(s.fam))
		if simulated && strings.HasPrefix(f.name, "the reject expression") {
			err = fmt.Errorf("nftables: add rule to chain forward: %w (simulated: %s=1)", syscall.EOPNOTSUPP, ProbeFailEnv)
		}
		if err != nil {
			return fmt.Errorf("network policy: the kernel lacks %s, which the network policy table needs (%v): enable it, or start with --disable-network-policy", f.name, err)
		}
	}
	return fmt.Errorf("network policy: the kernel refuses the network policy table (%v): start with --disable-network-policy", full)
}
