package nft

// Unit is what one object (a Service port, a pod's hostPort, a pod or a
// network policy) adds to a table: the unit of partial syncs. Its chains
// and sets are its own; its verdict map elements and set members may be in
// its own sets or in the table's fixed ones. All are in a stable order, so
// that equal units compare equal.
type Unit struct {
	Key      string
	Chains   []*Chain
	Sets     []*Set
	Elements []Element
	Members  []Member
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

// Writer is what WriteFull and WritePartial write to: a Batch, or in tests
// a model of the kernel's table.
type Writer interface {
	AddTable()
	DeleteTable()
	AddChain(c *Chain)
	FlushChain(name string)
	DeleteChain(name string)
	AddSet(s *Set)
	DeleteSet(name string)
	AddElements(elems []Element)
	DeleteElements(elems []Element)
	AddMembers(sets map[string]*Set, ms []Member)
	DeleteMembers(sets map[string]*Set, ms []Member)
	AddRules(c *Chain)
}

// WriteFull replaces the table with rs: delete and create in one
// transaction, so packets never see it missing, and established
// connections keep their NAT state in conntrack.
func WriteFull(b Writer, rs *Ruleset) {
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
	var members []Member
	for _, u := range rs.Units {
		for _, st := range u.Sets {
			b.AddSet(st)
		}
		elems = append(elems, u.Elements...)
		members = append(members, u.Members...)
	}
	b.AddElements(elems)
	if len(members) > 0 {
		b.AddMembers(SetKeys(rs), members)
	}
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
func WritePartial(b Writer, old, cur *Ruleset) (changed int, ok bool) {
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
	// Elements and members are deleted before any is added: one that
	// moves from a unit to another (an address from a deleted pod to a
	// new one) is deleted, then added.
	var sets map[string]*Set
	if len(d.delMems) > 0 || len(d.addMems) > 0 {
		sets = SetKeys(old)
		for name, s := range SetKeys(cur) {
			sets[name] = s
		}
	}
	b.DeleteElements(d.delElems)
	if len(d.delMems) > 0 {
		b.DeleteMembers(sets, d.delMems)
	}
	for _, c := range d.rewrite {
		b.AddRules(c)
	}
	b.AddElements(d.addElems)
	if len(d.addMems) > 0 {
		b.AddMembers(sets, d.addMems)
	}
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
	addMems, delMems   []Member
}

func (d *diff) unit(old, cur *Unit) {
	if old != nil && cur != nil && SameUnit(old, cur) {
		return
	}
	d.units++
	oldChains := map[string]*Chain{}
	oldSets := map[string]bool{}
	oldElems := map[[2]string]Element{}
	oldMems := map[[2]string]Member{}
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
}

// SameUnit tells whether a and b put the same things in the table.
func SameUnit(a, b *Unit) bool {
	if a == b {
		return true // from a model cache
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
