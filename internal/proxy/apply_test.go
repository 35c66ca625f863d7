package proxy

import (
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiff-dev/skiff/internal/netnstest"
	"github.com/skiff-dev/skiff/internal/nft"
)

// These tests program a real kernel, always in a throwaway network
// namespace: the host's own nftables state is never touched.

// testNetns returns a descriptor of a new, empty network namespace, or
// skips the test if it cannot make one (not root).
func testNetns(t testing.TB) int { return netnstest.New(t) }

func testSyncer(t testing.TB, fd int, table string) *Syncer {
	t.Helper()
	cfg := testConfig()
	cfg.Table = table
	s, err := NewSyncer(cfg, fd)
	if err != nil {
		t.Fatal(err)
	}
	if s.netns <= 0 {
		t.Fatal("a test syncer must not use the host's namespace")
	}
	return s
}

// scenario is a mix of every kind of Service, under distinct names.
func scenario() ([]*v1.Service, []*discoveryv1.EndpointSlice) {
	svcs := []*v1.Service{
		service("default", "web", "10.43.0.20", loadBalancer(30080, "10.0.0.1"), externalIPs("10.0.0.50"), affinity(600)),
		service("default", "local", "10.43.0.21", nodePort(30081), externalLocal),
		service("default", "itl", "10.43.0.22", internalLocal),
		service("default", "multi", "10.43.0.23", ports(
			v1.ServicePort{Name: "web", Protocol: v1.ProtocolTCP, Port: 80},
			v1.ServicePort{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53},
			v1.ServicePort{Name: "sig", Protocol: v1.ProtocolSCTP, Port: 9000},
		)),
		service("default", "empty", "10.43.0.24", nodePort(30082)),
		service("kube-system", "kube-dns", "10.43.0.10", ports(
			v1.ServicePort{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(5353)},
			v1.ServicePort{Name: "dns-tcp", Protocol: v1.ProtocolTCP, Port: 53, TargetPort: intstr.FromInt32(5353)},
		)),
	}
	eps := []*discoveryv1.EndpointSlice{
		slice("default", "web", "web-1", httpPort, readyEP("10.0.0.1", testNode), readyEP("10.42.1.7", "node-b")),
		slice("default", "local", "local-1", httpPort, readyEP("10.0.0.1", testNode), readyEP("10.42.1.8", "node-b")),
		slice("default", "itl", "itl-1", httpPort, readyEP("10.42.1.9", "node-b")),
		slice("default", "multi", "multi-1",
			[]slicePort{{"web", v1.ProtocolTCP, 8080}, {"dns", v1.ProtocolUDP, 5353}, {"sig", v1.ProtocolSCTP, 9000}},
			readyEP("10.42.0.5", testNode), readyEP("10.42.1.5", "node-b")),
	}
	return svcs, eps
}

func without(svcs []*v1.Service, name string) []*v1.Service {
	return slices.DeleteFunc(slices.Clone(svcs), func(s *v1.Service) bool { return s.Name == name })
}

// TestApply programs the scenario, changes it, and reads the table back
// from the kernel after every sync: it must list exactly like the model.
func TestApply(t *testing.T) {
	fd := testNetns(t)
	const table = "skiff-test"
	s := testSyncer(t, fd, table)
	s.SetDNSAddress(net.ParseIP("10.0.0.1"))
	svcs, eps := scenario()

	sync := func(step string, wantFull bool, svcs []*v1.Service, eps []*discoveryv1.EndpointSlice) *ruleset {
		t.Helper()
		if err := s.Sync(svcs, eps); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if s.last.full != wantFull {
			t.Errorf("%s: full sync %v, want %v", step, s.last.full, wantFull)
		}
		checkTable(t, step, fd, s.applied)
		return s.applied
	}
	sync("first", true, svcs, eps)
	if !strings.Contains(nft.Render(&s.applied.Ruleset), "update @aff-") {
		t.Fatal("the scenario has no session affinity")
	}
	webChains := map[string]bool{}
	for _, sv := range s.applied.Units {
		if strings.HasPrefix(sv.Key, "default/web/") {
			for _, c := range sv.Chains {
				webChains[c.Name] = true
			}
		}
	}

	rs := sync("web deleted", false, without(svcs, "web"), eps)
	if s.last.services != 1 {
		t.Errorf("web deleted: %d service ports rewritten, want 1", s.last.services)
	}
	// checkTable compared the whole table with the model; say it plainly.
	chains := kernelChains(t, fd, table)
	for name := range webChains {
		if chains[name] != nil {
			t.Errorf("chain %s of the deleted Service is still there", name)
		}
	}
	for _, e := range kernelElements(t, fd, table) {
		if strings.Contains(e, "10.43.0.20") || strings.Contains(e, "30080") {
			t.Errorf("element %q of the deleted Service is still there", e)
		}
	}
	_ = rs

	eps2 := slices.Clone(eps)
	eps2[1] = slice("default", "local", "local-1", httpPort, readyEP("10.0.0.1", testNode))
	sync("local loses its remote endpoint", false, without(svcs, "web"), eps2)
	sync("local loses all endpoints", false, without(svcs, "web"), slices.Delete(slices.Clone(eps2), 1, 2))
	sync("everything back", false, svcs, eps)
	// The same map keys, to other chains: deleted and added again in one
	// transaction.
	eps3 := slices.Clone(eps)
	eps3[0] = slice("default", "web", "web-1", httpPort, readyEP("10.0.0.1", testNode), readyEP("10.42.1.99", "node-b"))
	sync("web's remote endpoint replaced", false, svcs, eps3)
	svcs3 := slices.Clone(svcs)
	svcs3[1] = service("default", "local", "10.43.0.21", nodePort(30081), externalLocal, internalLocal)
	sync("local becomes internal-local", false, svcs3, eps3)
	s.SetDNSAddress(nil)
	sync("DNS address lost", false, svcs, eps)

	// A new syncer (a restart) replaces whatever the table holds.
	s = testSyncer(t, fd, table)
	sync("restart", true, without(svcs, "multi"), eps)

	if err := cleanup(nft.IPv4, table, fd); err != nil {
		t.Fatal(err)
	}
	if err := cleanup(nft.IPv4, table, fd); err != nil {
		t.Fatalf("cleanup without a table: %v", err)
	}
	conn := testConn(t, fd)
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == table {
			t.Error("the table is still there after cleanup")
		}
	}
}

func testConn(t testing.TB, fd int) *nftables.Conn {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// kernelChains lists the table's chains in the kernel.
func kernelChains(t *testing.T, fd int, table string) map[string]*nftables.Chain {
	t.Helper()
	all, err := testConn(t, fd).ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*nftables.Chain{}
	for _, c := range all {
		if c.Table.Name == table {
			out[c.Name] = c
		}
	}
	return out
}

// kernelSets reads the table's named sets and their elements.
func kernelSets(t *testing.T, fd int, table string) (named []*nftables.Set, elems map[string][]nftables.SetElement) {
	t.Helper()
	conn := testConn(t, fd)
	sets, err := conn.GetSets(&nftables.Table{Name: table, Family: nftables.TableFamilyIPv4})
	if err != nil {
		t.Fatal(err)
	}
	elems = map[string][]nftables.SetElement{}
	for _, s := range sets {
		if s.Anonymous {
			t.Errorf("unexpected anonymous set %s", s.Name)
			continue
		}
		es, err := conn.GetSetElements(s)
		if err != nil && strings.Contains(err.Error(), unix.ENOENT.Error()) {
			continue // deleted since listed, by a proxy running meanwhile
		}
		if err != nil {
			t.Fatalf("elements of %s: %v", s.Name, err)
		}
		named = append(named, s)
		elems[s.Name] = es
	}
	return named, elems
}

// verdictChain decodes the chain of a goto verdict as element data.
func verdictChain(t *testing.T, val []byte) string {
	t.Helper()
	ad, err := netlink.NewAttributeDecoder(val)
	if err != nil {
		t.Fatal(err)
	}
	ad.ByteOrder = binary.BigEndian
	var code uint32
	var chain string
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			code = ad.Uint32()
		case unix.NFTA_VERDICT_CHAIN:
			chain = ad.String()
		}
	}
	if int32(code) != unix.NFT_GOTO {
		t.Fatalf("verdict %d, want goto", int32(code))
	}
	return chain
}

// kernelElements lists the elements of the table's maps as "map: key : goto chain".
func kernelElements(t *testing.T, fd int, table string) []string {
	t.Helper()
	named, elems := kernelSets(t, fd, table)
	// google/nftables does not name concatenated key types it reads back:
	// take the maps' types from the model.
	types := nft.SetKeys(&buildRuleset(testSettings(t, testConfig()), nil, nil, nil, nil).Ruleset)
	var out []string
	for _, s := range named {
		if !s.IsMap {
			continue // affinity sets: filled by packets
		}
		typ := nftables.TypeInteger // the endpoint choice maps of the Services
		if st, ok := types[s.Name]; ok {
			typ = st.Key
		}
		for _, e := range elems[s.Name] {
			out = append(out, fmt.Sprintf("%s: %s : goto %s", s.Name, nft.FormatKey(typ, e.Key), verdictChain(t, e.Val)))
		}
	}
	sort.Strings(out)
	return out
}

// checkTable compares the kernel's table with the model rs: chains (hooks
// and rules, listed with the same renderer), sets and map elements.
func checkTable(t *testing.T, step string, fd int, rs *ruleset) {
	t.Helper()
	keys := nft.SetKeys(&rs.Ruleset)
	kchains := kernelChains(t, fd, rs.Table)
	named, _ := kernelSets(t, fd, rs.Table)
	conn := testConn(t, fd)
	tb := &nftables.Table{Name: rs.Table, Family: nftables.TableFamilyIPv4}

	want := map[string]*nft.Chain{}
	for _, c := range rs.Chains {
		want[c.Name] = c
	}
	var wantSets []string
	var wantElems []string
	for _, s := range rs.Sets {
		wantSets = append(wantSets, s.Name)
	}
	for _, sv := range rs.Units {
		for _, c := range sv.Chains {
			want[c.Name] = c
		}
		for _, s := range sv.Sets {
			wantSets = append(wantSets, s.Name)
		}
		for _, e := range sv.Elements {
			wantElems = append(wantElems, fmt.Sprintf("%s: %s : goto %s", e.Set, nft.FormatKey(keys[e.Set].Key, []byte(e.Key)), e.Chain))
		}
	}
	for name := range kchains {
		if want[name] == nil {
			t.Errorf("%s: unexpected chain %s in the kernel", step, name)
		}
	}
	for name, c := range want {
		kc := kchains[name]
		if kc == nil {
			t.Errorf("%s: chain %s missing in the kernel", step, name)
			continue
		}
		if (c.Hook == nil) != (kc.Hooknum == nil) || c.Hook != nil &&
			(*c.Hook != *kc.Hooknum || *c.Prio != *kc.Priority || c.Type != kc.Type) {
			t.Errorf("%s: chain %s: hook or type differs", step, name)
		}
		krules, err := conn.GetRules(tb, kc)
		if err != nil {
			t.Fatal(err)
		}
		var got, exp []string
		for _, kr := range krules {
			got = append(got, nft.RenderRule(rs.Family, keys, nft.Rule{Exprs: kr.Exprs}))
		}
		for _, r := range c.Rules {
			exp = append(exp, nft.RenderRule(rs.Family, keys, r))
		}
		if !slices.Equal(got, exp) {
			t.Errorf("%s: chain %s in the kernel:\n\t%s\nwant:\n\t%s", step, name,
				strings.Join(got, "\n\t"), strings.Join(exp, "\n\t"))
		}
	}
	var gotSets []string
	for _, s := range named {
		gotSets = append(gotSets, s.Name)
	}
	sort.Strings(gotSets)
	sort.Strings(wantSets)
	if !slices.Equal(gotSets, wantSets) {
		t.Errorf("%s: sets in the kernel %v, want %v", step, gotSets, wantSets)
	}
	sort.Strings(wantElems)
	t.Logf("%s: %d chains, %d sets, %d map elements compared", step, len(want), len(wantSets), len(wantElems))
	if got := kernelElements(t, fd, rs.Table); !slices.Equal(got, wantElems) {
		t.Errorf("%s: map elements in the kernel:\n\t%s\nwant:\n\t%s", step,
			strings.Join(got, "\n\t"), strings.Join(wantElems, "\n\t"))
	}
}

func TestProbe(t *testing.T) {
	fd := testNetns(t)
	s := testSyncer(t, fd, "skiff-test")
	if err := s.probe(); err != nil {
		t.Fatal(err)
	}
	tables, err := testConn(t, fd).ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) != 0 {
		t.Errorf("the probe left %d tables behind", len(tables))
	}
}

// TestSyncError checks that a failed transaction is reported, changes
// nothing, and makes the next sync a full one.
func TestSyncError(t *testing.T) {
	fd := testNetns(t)
	s := testSyncer(t, fd, "skiff-test")
	svcs, eps := scenario()
	if err := s.Sync(svcs, eps); err != nil {
		t.Fatal(err)
	}
	before := kernelElements(t, fd, "skiff-test")

	// A batch that adds a rule to a missing chain fails as a whole.
	b := nft.NewBatch(nft.IPv4, "skiff-test")
	b.AddElements([]nft.Element{{Set: mapServiceIPs, Key: nft.IPProtoPortKey(net.IPv4(10, 43, 9, 9).To4(), nft.ProtoTCP, 80), Chain: chainReject}})
	b.AddRules(&nft.Chain{Name: "no-such-chain", Rules: []nft.Rule{{Exprs: []expr.Any{nft.Verdict(expr.VerdictAccept)}}}})
	err := b.Send(fd)
	if err == nil || !strings.Contains(err.Error(), "add rule to chain no-such-chain") {
		t.Fatalf("error %v, want one naming the failed message", err)
	}
	if after := kernelElements(t, fd, "skiff-test"); !slices.Equal(before, after) {
		t.Error("a failed transaction changed the table")
	}

	s.applied.Chains[0].Sig = "forced difference"
	if err := s.Sync(svcs, eps); err != nil {
		t.Fatal(err)
	}
	if !s.last.full {
		t.Error("a sync whose fixed chains differ was not full")
	}
}
