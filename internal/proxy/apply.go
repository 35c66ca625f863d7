package proxy

import (
	"net"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/klog/v2"
)

// Syncer programs the proxy's table from lists of Services and
// EndpointSlices, without an API server: the Proxy component drives one
// from its informers, benchmarks drive one directly. The first sync, and
// the first after a failure, rewrites the whole table; the others change
// only what differs from the previous sync. Each sync is one transaction.
// A Syncer is not safe for concurrent use.
type Syncer struct {
	st    *settings
	netns int
	// dns is the node's DNS address, for the DNS Service (see
	// Config.DNSService); nil while unknown.
	dns net.IP
	// applied is what the table holds, or nil if unknown.
	applied *ruleset
	cache   modelCache
	// conflicts were logged last.
	conflicts string
	// last describes the last sync, for logs.
	last syncStats
}

type syncStats struct {
	full     bool
	services int // Service ports rewritten (all of them for a full sync)
}

// NewSyncer returns a Syncer for the table of cfg in the network namespace
// netnsFd refers to; 0 means the caller's. Kubeconfig is not used, and
// DNSAddress is not called: with DNSService and DNSAddress set, the DNS
// Service has no endpoints until SetDNSAddress.
func NewSyncer(cfg Config, netnsFd int) (*Syncer, error) {
	st, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	return &Syncer{st: st, netns: netnsFd}, nil
}

// SetDNSAddress sets the node's DNS address, the endpoint of the DNS
// Service from the next sync on (nil: none).
func (s *Syncer) SetDNSAddress(ip net.IP) { s.dns = ip }

// Sync makes the table match services and slices. Like the objects of an
// informer's cache, an object passed to Sync must not be modified
// afterwards: a changed object is a new one (the rules of unchanged
// objects are reused from the previous sync).
func (s *Syncer) Sync(services []*v1.Service, slices []*discoveryv1.EndpointSlice) error {
	rs := buildRuleset(s.st, services, slices, s.dns, &s.cache)
	if c := strings.Join(rs.conflicts, "; "); c != s.conflicts {
		s.conflicts = c
		if c != "" {
			klog.InfoS("service proxy: Services claim an address and port another one has; they do not get it", "conflicts", c)
		}
	}
	b := newBatch(s.st.fam, s.st.table)
	if s.applied == nil || !writePartial(b, s.applied, rs, &s.last) {
		writeFull(b, rs)
		s.last = syncStats{full: true, services: len(rs.services)}
	}
	s.applied = nil // unknown until the kernel says yes
	if err := b.send(s.netns); err != nil {
		return err
	}
	s.applied = rs
	return nil
}

// probe checks that the kernel takes the table: it creates a scratch copy
// of the fixed chains and deletes it in the same transaction, leaving the
// real table, which may be serving, alone.
func (s *Syncer) probe() error {
	st := *s.st
	st.table += "-probe"
	rs := buildRuleset(&st, nil, nil, nil, nil)
	b := newBatch(st.fam, st.table)
	writeFull(b, rs)
	b.conn.DelTable(b.table)
	return b.send(s.netns)
}

// cleanup deletes table, if it exists, in the network namespace netns.
func cleanup(fam *family, table string, netns int) error {
	b := newBatch(fam, table)
	b.conn.AddTable(b.table) // so that deleting never fails for its absence
	b.conn.DelTable(b.table)
	return b.send(netns)
}

// writeFull replaces the table with rs: delete and create in one
// transaction, so packets never see it missing, and established
// connections keep their NAT state in conntrack.
func writeFull(b *batch, rs *ruleset) {
	b.conn.AddTable(b.table)
	b.conn.DelTable(b.table)
	b.conn.AddTable(b.table)
	for _, c := range rs.chains {
		b.addChain(c)
	}
	for _, sv := range rs.services {
		for _, c := range sv.chains {
			b.addChain(c)
		}
	}
	for _, st := range rs.sets {
		b.addSet(rs.fam, st)
	}
	var elems []element
	for _, sv := range rs.services {
		for _, st := range sv.sets {
			b.addSet(rs.fam, st)
		}
		elems = append(elems, sv.elements...)
	}
	b.writeElements(elems, true)
	for _, sv := range rs.services {
		for _, c := range sv.chains {
			b.addRules(c)
		}
	}
	for _, c := range rs.chains {
		b.addRules(c)
	}
}

// writePartial turns the table from old into cur, touching only the
// Service ports that changed. It returns false if that is not possible
// (the fixed chains differ): the caller then writes the whole table.
//
// The order within the transaction matters: chains and sets must exist
// before rules and elements refer to them, and references to a chain or a
// set must be gone (its referrers flushed, its elements deleted) before it
// is deleted.
func writePartial(b *batch, old, cur *ruleset, stats *syncStats) bool {
	if len(old.chains) != len(cur.chains) {
		return false
	}
	for i := range old.chains {
		if old.chains[i].name != cur.chains[i].name || old.chains[i].sig != cur.chains[i].sig {
			return false
		}
	}
	var d diff
	i, j := 0, 0
	for i < len(old.services) || j < len(cur.services) {
		switch {
		case j == len(cur.services) || (i < len(old.services) && old.services[i].key < cur.services[j].key):
			d.service(old.services[i], nil)
			i++
		case i == len(old.services) || cur.services[j].key < old.services[i].key:
			d.service(nil, cur.services[j])
			j++
		default:
			d.service(old.services[i], cur.services[j])
			i++
			j++
		}
	}
	*stats = syncStats{services: d.services}
	for _, c := range d.newChains {
		b.addChain(c)
	}
	for _, st := range d.newSets {
		b.addSet(cur.fam, st)
	}
	for _, c := range d.flush {
		b.conn.FlushChain(b.chain(c))
	}
	b.writeElements(d.delElems, false)
	for _, c := range d.rewrite {
		b.addRules(c)
	}
	b.writeElements(d.addElems, true)
	// Sets before chains: a Service's map refers to its endpoint chains,
	// its affinity sets are only referred to by its (now empty) chains.
	for _, st := range d.delSets {
		b.conn.DelSet(&nftables.Set{Table: b.table, Name: st})
	}
	for _, c := range d.delChains {
		b.conn.DelChain(b.chain(c))
	}
	return true
}

// diff collects the changes between two versions of the Services' rules.
type diff struct {
	services           int
	newChains, rewrite []*chain
	flush, delChains   []string
	newSets            []*set
	delSets            []string
	addElems, delElems []element
}

func (d *diff) service(old, cur *svcRules) {
	if old != nil && cur != nil && sameService(old, cur) {
		return
	}
	d.services++
	oldChains := map[string]*chain{}
	oldSets := map[string]bool{}
	oldElems := map[[2]string]string{}
	if old != nil {
		for _, c := range old.chains {
			oldChains[c.name] = c
		}
		for _, s := range old.sets {
			oldSets[s.name] = true
		}
		for _, e := range old.elements {
			oldElems[[2]string{e.set, e.key}] = e.chain
		}
	}
	if cur != nil {
		for _, c := range cur.chains {
			o, ok := oldChains[c.name]
			switch {
			case !ok:
				d.newChains = append(d.newChains, c)
				d.rewrite = append(d.rewrite, c)
			case o.sig != c.sig:
				d.flush = append(d.flush, c.name)
				d.rewrite = append(d.rewrite, c)
			}
			delete(oldChains, c.name)
		}
		for _, s := range cur.sets {
			if !oldSets[s.name] {
				d.newSets = append(d.newSets, s)
			}
			delete(oldSets, s.name)
		}
		for _, e := range cur.elements {
			k := [2]string{e.set, e.key}
			o, ok := oldElems[k]
			if ok && o == e.chain {
				delete(oldElems, k)
				continue
			}
			if ok {
				d.delElems = append(d.delElems, element{set: e.set, key: e.key, chain: o})
				delete(oldElems, k)
			}
			d.addElems = append(d.addElems, e)
		}
	}
	if old != nil {
		// What is left is gone; keep the old order for determinism.
		for _, c := range old.chains {
			if oldChains[c.name] != nil {
				d.flush = append(d.flush, c.name)
				d.delChains = append(d.delChains, c.name)
			}
		}
		for _, s := range old.sets {
			if oldSets[s.name] {
				d.delSets = append(d.delSets, s.name)
			}
		}
		// Elements of deleted sets go with them.
		for _, e := range old.elements {
			if _, ok := oldElems[[2]string{e.set, e.key}]; ok && !oldSets[e.set] {
				d.delElems = append(d.delElems, e)
			}
		}
	}
}

func sameService(a, b *svcRules) bool {
	if a == b {
		return true // from the model cache
	}
	if len(a.chains) != len(b.chains) || len(a.sets) != len(b.sets) || len(a.elements) != len(b.elements) {
		return false
	}
	for i := range a.chains {
		if a.chains[i].name != b.chains[i].name || a.chains[i].sig != b.chains[i].sig {
			return false
		}
	}
	for i := range a.sets {
		if a.sets[i].name != b.sets[i].name {
			return false
		}
	}
	for i := range a.elements {
		if a.elements[i] != b.elements[i] {
			return false
		}
	}
	return true
}

func (b *batch) addChain(c *chain) {
	nc := b.chain(c.name)
	if c.hook != nil {
		nc.Type, nc.Hooknum, nc.Priority = c.typ, c.hook, c.prio
	}
	b.conn.AddChain(nc)
}

func (b *batch) nftSet(fam *family, s *set) *nftables.Set {
	ns := &nftables.Set{Table: b.table, Name: s.name, KeyType: s.key}
	if s.isMap {
		ns.IsMap, ns.DataType = true, nftables.TypeVerdict
	}
	if len(nftables.ConcatSetTypeElements(s.key)) > 1 {
		ns.Concatenation = true
	}
	if s.timeout > 0 {
		ns.HasTimeout, ns.Timeout, ns.Dynamic = true, s.timeout, true
	}
	if s.key.Name == nftables.TypeInteger.Name {
		ns.KeyByteOrder = binaryutil.NativeEndian // for nft's listings
	}
	return ns
}

func (b *batch) addSet(fam *family, s *set) {
	ns := b.nftSet(fam, s)
	ns.ID = b.nextSetID()
	b.fail(b.conn.AddSet(ns, nil))
}

// elementsPerMessage keeps a message's element list under the 64 KiB a
// netlink attribute can hold.
const elementsPerMessage = 256

// writeElements adds (or deletes) elements, set by set in the order the
// sets first appear.
func (b *batch) writeElements(elems []element, add bool) {
	var order []string
	bySet := map[string][]element{}
	for _, e := range elems {
		if _, ok := bySet[e.set]; !ok {
			order = append(order, e.set)
		}
		bySet[e.set] = append(bySet[e.set], e)
	}
	for _, set := range order {
		b.elements(set, bySet[set], add)
	}
}

func (b *batch) elements(set string, elems []element, add bool) {
	s := &nftables.Set{Table: b.table, Name: set, IsMap: true}
	if len(elems) == 0 {
		return
	}
	for len(elems) > 0 {
		n := min(len(elems), elementsPerMessage)
		vals := make([]nftables.SetElement, n)
		for i, e := range elems[:n] {
			vals[i].Key = []byte(e.key)
			if add {
				vals[i].VerdictData = &expr.Verdict{Kind: expr.VerdictGoto, Chain: e.chain}
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

// addRules appends c's rules to it.
func (b *batch) addRules(c *chain) {
	nc := b.chain(c.name)
	for _, r := range c.rules {
		b.conn.AddRule(&nftables.Rule{Table: b.table, Chain: nc, Exprs: r.exprs})
	}
}
