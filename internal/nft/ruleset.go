package nft

// Unit is what one object (a Service port, a pod's hostPort) adds to a
// table: the unit of partial syncs. Its chains, sets and elements are in a
// stable order, so that equal units compare equal.
type Unit struct {
	Key      string
	Chains   []*Chain
	Sets     []*Set
	Elements []Element
}

// Ruleset describes a whole table: its fixed chains (base chains first) and
// sets, whose elements come from the units, and the units, sorted by key.
type Ruleset struct {
	Family *Family
	Table  string
	Chains []*Chain
	Sets   []*Set
	Units  []*Unit
}

// WriteFull replaces the table with rs: delete and create in one
// transaction, so packets never see it missing, and established
// connections keep their NAT state in conntrack.
func WriteFull(b *Batch, rs *Ruleset) {
	b.AddTable()
	b.DeleteTable()
	b.AddTable()
	for _, c := range rs.Chains {
		b.AddChain(c)
	}
	for _, u := range rs.Units {
		for _, c := range u.Chains {
			b.AddChain(c)
		}
	}
	for _, st := range rs.Sets {
		b.AddSet(st)
	}
	var elems []Element
	for _, u := range rs.Units {
		for _, st := range u.Sets {
			b.AddSet(st)
		}
		elems = append(elems, u.Elements...)
	}
	b.AddElements(elems)
	for _, u := range rs.Units {
		for _, c := range u.Chains {
			b.AddRules(c)
		}
	}
	for _, c := range rs.Chains {
		b.AddRules(c)
	}
}

// WritePartial turns the table from old into cur, touching only the units
// that changed, and returns how many did. ok is false if that is not
// possible (the fixed chains differ): the caller then writes the whole
// table.
//
// The order within the transaction matters: chains and sets must exist
// before rules and elements refer to them, and references to a chain or a
// set must be gone (its referrers flushed, its elements deleted) before it
// is deleted.
func WritePartial(b *Batch, old, cur *Ruleset) (changed int, ok bool) {
	if len(old.Chains) != len(cur.Chains) {
		return 0, false
	}
	for i := range old.Chains {
		if old.Chains[i].Name != cur.Chains[i].Name || old.Chains[i].Sig != cur.Chains[i].Sig {
			return 0, false
		}
	}
	var d diff
	i, j := 0, 0
	for i < len(old.Units) || j < len(cur.Units) {
		switch {
		case j == len(cur.Units) || (i < len(old.Units) && old.Units[i].Key < cur.Units[j].Key):
			d.unit(old.Units[i], nil)
			i++
		case i == len(old.Units) || cur.Units[j].Key < old.Units[i].Key:
			d.unit(nil, cur.Units[j])
			j++
		default:
			d.unit(old.Units[i], cur.Units[j])
			i++
			j++
		}
	}
	for _, c := range d.newChains {
		b.AddChain(c)
	}
	for _, st := range d.newSets {
		b.AddSet(st)
	}
	for _, c := range d.flush {
		b.FlushChain(c)
	}
	b.DeleteElements(d.delElems)
	for _, c := range d.rewrite {
		b.AddRules(c)
	}
	b.AddElements(d.addElems)
	// Sets before chains: a unit's map refers to its chains, its dynamic
	// sets are only referred to by its (now empty) chains.
	for _, st := range d.delSets {
		b.DeleteSet(st)
	}
	for _, c := range d.delChains {
		b.DeleteChain(c)
	}
	return d.units, true
}

// diff collects the changes between two versions of the units.
type diff struct {
	units              int
	newChains, rewrite []*Chain
	flush, delChains   []string
	newSets            []*Set
	delSets            []string
	addElems, delElems []Element
}

func (d *diff) unit(old, cur *Unit) {
	if old != nil && cur != nil && SameUnit(old, cur) {
		return
	}
	d.units++
	oldChains := map[string]*Chain{}
	oldSets := map[string]bool{}
	oldElems := map[[2]string]string{}
	if old != nil {
		for _, c := range old.Chains {
			oldChains[c.Name] = c
		}
		for _, s := range old.Sets {
			oldSets[s.Name] = true
		}
		for _, e := range old.Elements {
			oldElems[[2]string{e.Set, e.Key}] = e.Chain
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
			if ok && o == e.Chain {
				delete(oldElems, k)
				continue
			}
			if ok {
				d.delElems = append(d.delElems, Element{Set: e.Set, Key: e.Key, Chain: o})
				delete(oldElems, k)
			}
			d.addElems = append(d.addElems, e)
		}
	}
	if old != nil {
		// What is left is gone; keep the old order for determinism.
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
		// Elements of deleted sets go with them.
		for _, e := range old.Elements {
			if _, ok := oldElems[[2]string{e.Set, e.Key}]; ok && !oldSets[e.Set] {
				d.delElems = append(d.delElems, e)
			}
		}
	}
}

// SameUnit tells whether a and b put the same things in the table.
func SameUnit(a, b *Unit) bool {
	if a == b {
		return true // from a model cache
	}
	if len(a.Chains) != len(b.Chains) || len(a.Sets) != len(b.Sets) || len(a.Elements) != len(b.Elements) {
		return false
	}
	for i := range a.Chains {
		if a.Chains[i].Name != b.Chains[i].Name || a.Chains[i].Sig != b.Chains[i].Sig {
			return false
		}
	}
	for i := range a.Sets {
		if a.Sets[i].Name != b.Sets[i].Name {
			return false
		}
	}
	for i := range a.Elements {
		if a.Elements[i] != b.Elements[i] {
			return false
		}
	}
	return true
}
