package netpol

import (
	"github.com/skiff-dev/skiff/internal/nft"
)

// WriteFull replaces the table with rs, in b: delete and create in one
// transaction, so packets never see the table missing, and established
// connections (accepted by conntrack state) never notice.
func WriteFull(b *nft.Batch, rs *Ruleset) {
	b.AddTable()
	b.DeleteTable()
	b.AddTable()
	diffRulesets(nil, rs).write(b, setsOf(rs))
}

// WritePartial turns the table from old (what the kernel holds) into cur,
// in b, touching only the units that changed, and within them only the
// chains, sets and elements that changed. It returns how many units
// changed: 0 means b has nothing to send.
func WritePartial(b *nft.Batch, old, cur *Ruleset) int {
	d := diffRulesets(old, cur)
	d.write(b, setsOf(old, cur))
	return d.units
}

// diffRulesets computes the changes from old (nil: an empty table) to cur,
// unit by unit: both list their units in key order.
func diffRulesets(old, cur *Ruleset) *diff {
	var d diff
	var olds []*Unit
	if old != nil {
		olds = old.Units
	}
	i, j := 0, 0
	for i < len(olds) || j < len(cur.Units) {
		switch {
		case j == len(cur.Units) || (i < len(olds) && olds[i].Key < cur.Units[j].Key):
			d.unit(olds[i], nil)
			i++
		case i == len(olds) || cur.Units[j].Key < olds[i].Key:
			d.unit(nil, cur.Units[j])
			j++
		default:
			d.unit(olds[i], cur.Units[j])
			i++
			j++
		}
	}
	return &d
}

// setsOf maps the names of the sets of the rulesets to the sets: members
// are written according to their set's kind.
func setsOf(rss ...*Ruleset) map[string]*nft.Set {
	out := map[string]*nft.Set{}
	for _, rs := range rss {
		if rs == nil {
			continue
		}
		for _, u := range rs.Units {
			for _, s := range u.Sets {
				out[s.Name] = s
			}
		}
	}
	return out
}

// diff collects the changes between two versions of the units.
type diff struct {
	units              int
	newChains, rewrite []*nft.Chain
	flush, delChains   []string
	newSets            []*nft.Set
	delSets            []string
	addElems, delElems []nft.Element
	addMems, delMems   []nft.Member
}

// write puts the changes in b. The order matters: chains and sets exist
// before rules and elements refer to them, and what refers to a chain or
// a set (rules, map elements) is gone before it is deleted. Elements are
// deleted before any is added: an element that moves from one unit to
// another (an address from a deleted pod to a new one) is deleted, then
// added.
func (d *diff) write(b *nft.Batch, sets map[string]*nft.Set) {
	for _, c := range d.newChains {
		b.AddChain(c)
	}
	for _, s := range d.newSets {
		b.AddSet(s)
	}
	for _, c := range d.flush {
		b.FlushChain(c)
	}
	b.DeleteElements(d.delElems)
	b.DeleteMembers(sets, d.delMems)
	b.AddElements(d.addElems)
	b.AddMembers(sets, d.addMems)
	// Rules last but for deletions: a rule's lookup needs its set, a
	// jump its chain, and chains are referred to by rules and elements.
	for _, c := range d.rewrite {
		b.AddRules(c)
	}
	for _, s := range d.delSets {
		b.DeleteSet(s)
	}
	for _, c := range d.delChains {
		b.DeleteChain(c)
	}
}

// unit adds the changes from old to cur (either may be nil).
func (d *diff) unit(old, cur *Unit) {
	if old != nil && cur != nil && sameUnit(old, cur) {
		return
	}
	d.units++
	oldChains := map[string]*nft.Chain{}
	oldSets := map[string]bool{}
	oldElems := map[[2]string]nft.Element{}
	oldMems := map[[2]string]nft.Member{}
	if old != nil {
		for _, c := range old.Chains {
			oldChains[c.Name] = c
		}
		for _, s := range old.Sets {
			oldSets[s.Name] = true
		}
		for _, e := range old.Elements {
			oldElems[[2]string{e.Set, e.Key}] = e
		}
		for _, m := range old.Members {
			oldMems[[2]string{m.Set, m.Key}] = m
		}
	}
	if cur != nil {
		for _, c := range cur.Chains {
			o, ok := oldChains[c.Name]
			switch {
			case !ok:
				d.newChains = append(d.newChains, c)
				d.rewrite = append(d.rewrite, c)
			case o.Sig != c.Sig:
				d.flush = append(d.flush, c.Name)
				d.rewrite = append(d.rewrite, c)
			}
			delete(oldChains, c.Name)
		}
		for _, s := range cur.Sets {
			if !oldSets[s.Name] {
				d.newSets = append(d.newSets, s)
			}
			delete(oldSets, s.Name)
		}
		for _, e := range cur.Elements {
			k := [2]string{e.Set, e.Key}
			o, ok := oldElems[k]
			delete(oldElems, k)
			if ok && o == e {
				continue
			}
			if ok {
				d.delElems = append(d.delElems, o)
			}
			d.addElems = append(d.addElems, e)
		}
		for _, m := range cur.Members {
			k := [2]string{m.Set, m.Key}
			o, ok := oldMems[k]
			delete(oldMems, k)
			if ok && o == m {
				continue
			}
			if ok {
				d.delMems = append(d.delMems, o)
			}
			d.addMems = append(d.addMems, m)
		}
	}
	if old == nil {
		return
	}
	// What is left is gone; in the old order, for determinism.
	for _, c := range old.Chains {
		if oldChains[c.Name] != nil {
			d.flush = append(d.flush, c.Name)
			d.delChains = append(d.delChains, c.Name)
		}
	}
	for _, s := range old.Sets {
		if oldSets[s.Name] {
			d.delSets = append(d.delSets, s.Name)
		}
	}
	// Elements and members of deleted sets go with them.
	for _, e := range old.Elements {
		if _, ok := oldElems[[2]string{e.Set, e.Key}]; ok && !oldSets[e.Set] {
			d.delElems = append(d.delElems, e)
		}
	}
	for _, m := range old.Members {
		if _, ok := oldMems[[2]string{m.Set, m.Key}]; ok && !oldSets[m.Set] {
			d.delMems = append(d.delMems, m)
		}
	}
}

func sameUnit(a, b *Unit) bool {
	if a == b {
		return true
	}
	if len(a.Chains) != len(b.Chains) || len(a.Sets) != len(b.Sets) ||
		len(a.Elements) != len(b.Elements) || len(a.Members) != len(b.Members) {
		return false
	}
	for i := range a.Chains {
		if a.Chains[i].Name != b.Chains[i].Name || a.Chains[i].Sig != b.Chains[i].Sig {
			return false
		}
	}
	for i := range a.Sets {
		if *a.Sets[i] != *b.Sets[i] {
			return false
		}
	}
	for i := range a.Elements {
		if a.Elements[i] != b.Elements[i] {
			return false
		}
	}
	for i := range a.Members {
		if a.Members[i] != b.Members[i] {
			return false
		}
	}
	return true
}
