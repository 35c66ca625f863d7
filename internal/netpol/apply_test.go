package netpol

import (
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables/expr"
	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/skiff-dev/skiff/internal/golden"
	"github.com/skiff-dev/skiff/internal/nft"
)

// table is what the kernel would hold, for checking diffs: it applies the
// changes in the order write sends them and refuses what the kernel
// refuses (a second chain, set or element of a name, a reference to
// something missing, deleting something still referred to).
type table struct {
	chains map[string][]nft.Rule
	sets   map[string]bool
	elems  map[[2]string]nft.Element
	mems   map[[2]string]nft.Member
	err    error
}

func newTable() *table {
	return &table{chains: map[string][]nft.Rule{}, sets: map[string]bool{},
		elems: map[[2]string]nft.Element{}, mems: map[[2]string]nft.Member{}}
}

// table implements nft.Writer: it applies each change as it comes, and
// keeps the first error.

func (t *table) failf(format string, args ...any) {
	if t.err == nil {
		t.err = fmt.Errorf(format, args...)
	}
}

func (t *table) AddTable() {}

func (t *table) DeleteTable() {
	*t = table{chains: map[string][]nft.Rule{}, sets: map[string]bool{},
		elems: map[[2]string]nft.Element{}, mems: map[[2]string]nft.Member{}, err: t.err}
}

func (t *table) AddChain(c *nft.Chain) {
	if _, ok := t.chains[c.Name]; ok {
		t.failf("add chain %s: exists", c.Name)
	}
	t.chains[c.Name] = nil
}

func (t *table) AddSet(s *nft.Set) {
	if t.sets[s.Name] {
		t.failf("add set %s: exists", s.Name)
	}
	t.sets[s.Name] = true
}

func (t *table) FlushChain(c string) {
	if _, ok := t.chains[c]; !ok {
		t.failf("flush chain %s: missing", c)
	}
	t.chains[c] = nil
}

func (t *table) DeleteElements(elems []nft.Element) {
	for _, e := range elems {
		if _, ok := t.elems[[2]string{e.Set, e.Key}]; !ok {
			t.failf("delete element of %s: missing", e.Set)
		}
		delete(t.elems, [2]string{e.Set, e.Key})
	}
}

func (t *table) DeleteMembers(sets map[string]*nft.Set, ms []nft.Member) {
	for _, m := range ms {
		if sets[m.Set] == nil {
			t.failf("delete member of %s: the set is not described", m.Set)
		}
		if _, ok := t.mems[[2]string{m.Set, m.Key}]; !ok {
			t.failf("delete member of %s: missing", m.Set)
		}
		delete(t.mems, [2]string{m.Set, m.Key})
	}
}

func (t *table) AddElements(elems []nft.Element) {
	for _, e := range elems {
		k := [2]string{e.Set, e.Key}
		if _, ok := t.elems[k]; ok || !t.sets[e.Set] {
			t.failf("add element to %s: exists or no set", e.Set)
		}
		if _, ok := t.chains[e.Chain]; !ok {
			t.failf("add element to %s: chain %s missing", e.Set, e.Chain)
		}
		t.elems[k] = e
	}
}

func (t *table) AddMembers(sets map[string]*nft.Set, ms []nft.Member) {
	for _, m := range ms {
		k := [2]string{m.Set, m.Key}
		if sets[m.Set] == nil {
			t.failf("add member to %s: the set is not described", m.Set)
		}
		if _, ok := t.mems[k]; ok || !t.sets[m.Set] {
			t.failf("add member to %s: exists or no set", m.Set)
		}
		t.mems[k] = m
	}
}

func (t *table) AddRules(c *nft.Chain) {
	if len(t.chains[c.Name]) > 0 {
		t.failf("add rules to %s: not flushed", c.Name)
	}
	for _, r := range c.Rules {
		for _, ref := range refs(r) {
			_, chain := t.chains[ref]
			if !chain && !t.sets[ref] {
				t.failf("rule of %s refers to missing %s", c.Name, ref)
			}
		}
	}
	t.chains[c.Name] = c.Rules
}

func (t *table) DeleteSet(s string) {
	if t.referred(s) {
		t.failf("delete set %s: referred to", s)
	}
	delete(t.sets, s)
	for k := range t.elems {
		if k[0] == s {
			delete(t.elems, k)
		}
	}
	for k := range t.mems {
		if k[0] == s {
			delete(t.mems, k)
		}
	}
}

func (t *table) DeleteChain(c string) {
	if len(t.chains[c]) > 0 || t.referred(c) {
		t.failf("delete chain %s: not empty or referred to", c)
	}
	delete(t.chains, c)
}

func refs(r nft.Rule) []string {
	var out []string
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Verdict:
			if e.Chain != "" {
				out = append(out, e.Chain)
			}
		case *expr.Lookup:
			out = append(out, e.SetName)
		}
	}
	return out
}

func (t *table) referred(name string) bool {
	for _, rules := range t.chains {
		for _, r := range rules {
			if slices.Contains(refs(r), name) {
				return true
			}
		}
	}
	for _, e := range t.elems {
		if e.Chain == name {
			return true
		}
	}
	return false
}

func (t *table) String() string {
	var lines []string
	for name, rules := range t.chains {
		lines = append(lines, "chain "+name+" "+nft.NewChain(name, "", rules...).Sig)
	}
	for s := range t.sets {
		lines = append(lines, "set "+s)
	}
	for _, e := range t.elems {
		lines = append(lines, fmt.Sprintf("element %+v", e))
	}
	for _, m := range t.mems {
		lines = append(lines, fmt.Sprintf("member %+v", m))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// TestPartialReachesFull changes random clusters at random and checks that
// the partial diff from the old table reaches what a full write of the new
// one makes, in an order the kernel takes.
func TestPartialReachesFull(t *testing.T) {
	st := testSettings(t)
	for seed := range 500 {
		g := gen{r: rand.New(rand.NewSource(int64(seed))), notIn: seed%2 == 1}
		pods, nss, pols := g.cluster()
		old := Build(st, pods, nss, pols)
		live := newTable()
		if nft.WriteFull(live, old); live.err != nil {
			t.Fatalf("seed %d: full write: %v", seed, live.err)
		}
		pods2, nss2, pols2 := mutate(g, pods, nss, pols)
		cur := Build(st, pods2, nss2, pols2)
		if _, ok := nft.WritePartial(live, old, cur); !ok || live.err != nil {
			t.Fatalf("seed %d: partial write (possible: %v): %v", seed, ok, live.err)
		}
		want := newTable()
		if nft.WriteFull(want, cur); want.err != nil {
			t.Fatal(want.err)
		}
		if live.String() != want.String() {
			t.Fatalf("seed %d: the partial write gives\n%s\nthe full one\n%s", seed, live, want)
		}
	}
}

// mutate changes a cluster a little: labels, a pod gone, a pod moved to
// another address, a policy gone or added.
func mutate(g gen, pods []*v1.Pod, nss []*v1.Namespace, pols []*networkingv1.NetworkPolicy) ([]*v1.Pod, []*v1.Namespace, []*networkingv1.NetworkPolicy) {
	pods, nss, pols = slices.Clone(pods), slices.Clone(nss), slices.Clone(pols)
	for n := range 1 + g.r.Intn(3) {
		switch g.r.Intn(6) {
		case 0:
			i := g.r.Intn(len(pods))
			p := pods[i].DeepCopy()
			p.Labels = g.labels(2)
			pods[i] = p
		case 1:
			i := g.r.Intn(len(pods))
			pods = slices.Delete(pods, i, i+1)
			if len(pods) == 0 {
				pods = append(pods, newPod("x", "late", testNode, "10.42.0.99"))
			}
		case 2:
			i := g.r.Intn(len(pods))
			p := pods[i].DeepCopy()
			p.Status.PodIP, p.Status.PodIPs = "10.42.0.200", []v1.PodIP{{IP: "10.42.0.200"}}
			pods[i] = p
		case 3:
			i := g.r.Intn(len(nss))
			n := nss[i].DeepCopy()
			n.Labels = g.labels(2)
			n.Labels[v1.LabelMetadataName] = n.Name
			nss[i] = n
		case 4:
			if len(pols) > 0 {
				i := g.r.Intn(len(pols))
				pols = slices.Delete(pols, i, i+1)
			}
		default:
			_, _, more := g.cluster()
			if len(more) > 0 {
				p := more[0].DeepCopy()
				p.Name = fmt.Sprintf("added-%d", n)
				pols = append(pols, p)
			}
		}
	}
	return pods, nss, pols
}

// TestPartialBatch shows the messages of a small change: a pod's new
// label changes set elements and nothing else.
func TestPartialBatch(t *testing.T) {
	st := testSettings(t)
	pods, nss := scenario()
	pols := []*networkingv1.NetworkPolicy{
		policy("default", "web-in", sel("app=web"), nil, []networkingv1.NetworkPolicyIngressRule{
			{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app=db")}}},
		}, nil),
	}
	old := Build(st, pods, nss, pols)
	pods2 := slices.Clone(pods)
	db := pods[1].DeepCopy()
	db.Labels = map[string]string{"app": "cache"}
	pods2[1] = db

	b := nft.NewBatch(st.Family, st.Table)
	if n, ok := nft.WritePartial(b, old, Build(st, pods2, nss, pols)); !ok || n != 1 {
		t.Errorf("%d units changed, want 1", n)
	}
	got, err := b.Describe()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"delete elements from set " + hashName(prefixSetPods, "default/web-in/ingress/0")}
	if !slices.Equal(got, want) {
		t.Errorf("messages %q, want %q", got, want)
	}

	b = nft.NewBatch(st.Family, st.Table)
	if n, _ := nft.WritePartial(b, old, old); n != 0 {
		t.Errorf("%d units changed between equal rulesets", n)
	}
	if got, _ := b.Describe(); got != nil {
		t.Errorf("nothing changed, yet %q", got)
	}

	// The whole table: one transaction that replaces it.
	b = nft.NewBatch(st.Family, st.Table)
	nft.WriteFull(b, old)
	got, err = b.Describe()
	if err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "full-batch", strings.Join(got, "\n")+"\n")
}

// TestCache changes random clusters at random and checks that a build
// reusing the previous one's units gives what a build from scratch gives.
func TestCache(t *testing.T) {
	st := testSettings(t)
	reused := 0
	for seed := range 500 {
		g := gen{r: rand.New(rand.NewSource(int64(seed))), notIn: seed%2 == 1}
		pods, nss, pols := g.cluster()
		var cache modelCache
		build(st, pods, nss, pols, &cache)
		before := cache
		for range 3 {
			pods, nss, pols = mutate(g, pods, nss, pols)
			got := nft.Render(build(st, pods, nss, pols, &cache))
			if want := nft.Render(Build(st, pods, nss, pols)); got != want {
				t.Fatalf("seed %d: with the cache\n%s\nwithout\n%s", seed, got, want)
			}
		}
		for k, e := range cache.policies {
			if o := before.policies[k]; o != nil && o.out == e.out {
				reused++
			}
		}
	}
	if reused == 0 {
		t.Error("the cache never served a policy")
	}
}
