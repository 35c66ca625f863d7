// Package nft encodes nftables tables, chains, sets and rules as netlink
// batches. It is the leaf every rule engine of the node shares (the Service
// proxy, hostPorts): the address family, the expressions rules are made of,
// the objects of a table (chains, rules, sets, verdict map elements) and the
// batches that carry them to the kernel, each one transaction. It knows
// nothing of Services or pods.
package nft

import (
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
)

// Chain is a chain of the table, with its rules.
type Chain struct {
	Name    string
	Comment string // for listings
	Type    nftables.ChainType
	Hook    *nftables.ChainHook // nil: a regular chain
	Prio    *nftables.ChainPriority
	Rules   []Rule
	Sig     string // equal Sig, equal rules: see ChainSig
}

// Rule is a rule: its expressions, in order.
type Rule struct {
	Exprs []expr.Any
}

// Set is a named set, or verdict map, of the table.
type Set struct {
	Name    string
	Key     nftables.SetDatatype
	IsMap   bool          // verdict map
	Timeout time.Duration // > 0: elements are added by the packet path and expire
	// Interval: the set holds ranges of keys (see Member), as nft's
	// "flags interval".
	Interval bool
}

// Element is an element of a verdict map: Key goes to Chain, with goto,
// or with jump if Jump is set (then the chain's end returns to the rule
// after the lookup).
type Element struct {
	Set   string
	Key   string
	Chain string
	Jump  bool
}

// NewChain returns a regular chain with its rules and their signature.
func NewChain(name, comment string, rules ...Rule) *Chain {
	c := &Chain{Name: name, Comment: comment, Rules: rules}
	c.Sig = ChainSig(c)
	return c
}

// BaseChain returns a chain of type typ on hook, at priority prio.
func BaseChain(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio int32, rules ...Rule) *Chain {
	c := NewChain(name, "", rules...)
	c.Type, c.Hook, c.Prio = typ, hook, nftables.ChainPriorityRef(nftables.ChainPriority(prio))
	return c
}

// NewRule returns the rule made of parts, one after the other.
func NewRule(parts ...[]expr.Any) Rule {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return Rule{Exprs: out}
}

// Exprs lists expressions, as a part of NewRule.
func Exprs(e ...expr.Any) []expr.Any { return e }

// AddTable adds the batch's table, which is not an error if it exists.
func (b *Batch) AddTable() { b.conn.AddTable(b.table) }

// DeleteTable deletes the batch's table, with all it holds.
func (b *Batch) DeleteTable() { b.conn.DelTable(b.table) }

// RemoveTable deletes table, if it exists, in the network namespace netns
// (0: the caller's), in a transaction of its own: what Cleanup of every
// rule engine does.
func RemoveTable(fam *Family, table string, netns int) error {
	b := NewBatch(fam, table)
	b.AddTable() // so that deleting never fails for its absence
	b.DeleteTable()
	return b.Send(netns)
}

// TableExists tells whether table of family fam is in the kernel, in the
// network namespace netns (0: the caller's).
func TableExists(fam *Family, table string, netns int) (bool, error) {
	var opts []nftables.ConnOption
	if netns != 0 {
		opts = append(opts, nftables.WithNetNSFd(netns))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		return false, err
	}
	defer conn.CloseLasting()
	tables, err := conn.ListTablesOfFamily(fam.Table)
	if err != nil {
		return false, err
	}
	for _, t := range tables {
		if t.Name == table {
			return true, nil
		}
	}
	return false, nil
}

// AddChain adds chain c, without its rules (see AddRules).
func (b *Batch) AddChain(c *Chain) {
	nc := b.chain(c.Name)
	if c.Hook != nil {
		nc.Type, nc.Hooknum, nc.Priority = c.Type, c.Hook, c.Prio
	}
	b.conn.AddChain(nc)
}

// FlushChain deletes the rules of chain name.
func (b *Batch) FlushChain(name string) { b.conn.FlushChain(b.chain(name)) }

// DeleteChain deletes chain name, which must be empty and unreferenced.
func (b *Batch) DeleteChain(name string) { b.conn.DelChain(b.chain(name)) }

func (b *Batch) nftSet(s *Set) *nftables.Set {
	ns := &nftables.Set{Table: b.table, Name: s.Name, KeyType: s.Key}
	if s.IsMap {
		ns.IsMap, ns.DataType = true, nftables.TypeVerdict
	}
	if len(nftables.ConcatSetTypeElements(s.Key)) > 1 {
		ns.Concatenation = true
	}
	if s.Timeout > 0 {
		ns.HasTimeout, ns.Timeout, ns.Dynamic = true, s.Timeout, true
	}
	if s.Key.Name == nftables.TypeInteger.Name {
		ns.KeyByteOrder = binaryutil.NativeEndian // for nft's listings
	}
	if s.Interval {
		ns.Interval = true
	}
	return ns
}

// AddSet adds set s, empty.
func (b *Batch) AddSet(s *Set) {
	ns := b.nftSet(s)
	ns.ID = b.nextSetID()
	b.fail(b.conn.AddSet(ns, nil))
}

// DeleteSet deletes set name, with its elements.
func (b *Batch) DeleteSet(name string) { b.conn.DelSet(&nftables.Set{Table: b.table, Name: name}) }

// elementsPerMessage keeps a message's element list under the 64 KiB a
// netlink attribute can hold.
const elementsPerMessage = 256

// AddElements adds elements to their verdict maps, map by map in the order
// the maps first appear.
func (b *Batch) AddElements(elems []Element) { b.writeElements(elems, true) }

// DeleteElements deletes elements (their keys) from their verdict maps, map
// by map in the order the maps first appear.
func (b *Batch) DeleteElements(elems []Element) { b.writeElements(elems, false) }

// writeElements adds (or deletes) elements, set by set in the order the
// sets first appear.
func (b *Batch) writeElements(elems []Element, add bool) {
	var order []string
	bySet := map[string][]Element{}
	for _, e := range elems {
		if _, ok := bySet[e.Set]; !ok {
			order = append(order, e.Set)
		}
		bySet[e.Set] = append(bySet[e.Set], e)
	}
	for _, set := range order {
		b.elements(set, bySet[set], add)
	}
}

func (b *Batch) elements(set string, elems []Element, add bool) {
	s := &nftables.Set{Table: b.table, Name: set, IsMap: true}
	if len(elems) == 0 {
		return
	}
	for len(elems) > 0 {
		n := min(len(elems), elementsPerMessage)
		vals := make([]nftables.SetElement, n)
		for i, e := range elems[:n] {
			vals[i].Key = []byte(e.Key)
			if add {
				kind := expr.VerdictGoto
				if e.Jump {
					kind = expr.VerdictJump
				}
				vals[i].VerdictData = &expr.Verdict{Kind: kind, Chain: e.Chain}
			}
		}
		var err error
		if add {
			err = b.conn.SetAddElements(s, vals)
		} else {
			err = b.conn.SetDeleteElements(s, vals)
		}
		b.fail(err)
		elems = elems[n:]
	}
}

// AddRules appends c's rules to it.
func (b *Batch) AddRules(c *Chain) {
	nc := b.chain(c.Name)
	for _, r := range c.Rules {
		b.conn.AddRule(&nftables.Rule{Table: b.table, Chain: nc, Exprs: r.Exprs})
	}
}
