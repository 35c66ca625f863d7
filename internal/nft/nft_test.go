package nft

import (
	"net"
	"slices"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

func TestKeys(t *testing.T) {
	for _, tc := range []struct {
		typ  nftables.SetDatatype
		key  string
		want string
	}{
		{TypeIPProtoPort, IPProtoPortKey(net.IPv4(10, 43, 0, 1).To4(), ProtoTCP, 80), "10.43.0.1 . tcp . 80"},
		{TypeProtoPort, ProtoPortKey(ProtoSCTP, 30053), "sctp . 30053"},
		{nftables.TypeInteger, string(Native32(3)), "3"},
	} {
		if uint32(len(tc.key)) != tc.typ.Bytes {
			t.Errorf("%s: key of %d bytes, its type has %d", tc.want, len(tc.key), tc.typ.Bytes)
		}
		if got := FormatKey(tc.typ, []byte(tc.key)); got != tc.want {
			t.Errorf("FormatKey = %q, want %q", got, tc.want)
		}
	}
}

func TestChainSig(t *testing.T) {
	_, pods, _ := net.ParseCIDR("10.42.0.0/16")
	_, other, _ := net.ParseCIDR("10.43.0.0/16")
	rules := func(n *net.IPNet, neq bool, v *expr.Verdict) []Rule {
		return []Rule{NewRule(IPv4.SaddrIn(n, neq), Exprs(v)), NewRule(Exprs(Verdict(expr.VerdictDrop)))}
	}
	base := rules(pods, false, Jump("x"))
	a := NewChain("a", "one", base...)
	if b := NewChain("b", "two", rules(pods, false, Jump("x"))...); b.Sig != a.Sig {
		t.Error("equal rules, different signatures")
	}
	for what, c := range map[string]*Chain{
		"another network":     NewChain("a", "one", rules(other, false, Jump("x"))...),
		"a negated match":     NewChain("a", "one", rules(pods, true, Jump("x"))...),
		"goto for jump":       NewChain("a", "one", rules(pods, false, Goto("x"))...),
		"another chain":       NewChain("a", "one", rules(pods, false, Jump("y"))...),
		"one rule less":       NewChain("a", "one", base[:1]...),
		"the rules as one":    NewChain("a", "one", NewRule(base[0].Exprs, base[1].Exprs)),
		"a chain of no rules": NewChain("a", "one"),
	} {
		if c.Sig == a.Sig {
			t.Errorf("%s: the same signature", what)
		}
	}
}

func TestDescribe(t *testing.T) {
	b := NewBatch(IPv4, "test")
	if got, err := b.Describe(); err != nil || got != nil {
		t.Errorf("an empty batch: %q, %v; want no messages", got, err)
	}
	b = NewBatch(IPv4, "test")
	c := NewChain("c", "", NewRule(Exprs(Verdict(expr.VerdictAccept))))
	b.AddChain(c)
	b.AddSet(&Set{Name: "m", Key: TypeProtoPort, IsMap: true})
	b.AddElements([]Element{{Set: "m", Key: ProtoPortKey(ProtoTCP, 80), Chain: "c"}})
	b.AddRules(c)
	b.DeleteElements([]Element{{Set: "m", Key: ProtoPortKey(ProtoTCP, 80)}})
	b.FlushChain("c")
	b.DeleteSet("m")
	b.DeleteChain("c")
	got, err := b.Describe()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"add chain c", "add set m", "add elements to set m", "add rule to chain c",
		"delete elements from set m", "flush chain c", "delete set m", "delete chain c"}
	if !slices.Equal(got, want) {
		t.Errorf("messages %q, want %q", got, want)
	}
}
