package proxy

import (
	"net"
	"strings"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/nft"
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
	b := nft.NewBatch(s.st.fam, s.st.table)
	if s.applied == nil || !writePartial(b, s.applied, rs, &s.last) {
		writeFull(b, rs)
		s.last = syncStats{full: true, services: len(rs.services)}
	}
	s.applied = nil // unknown until the kernel says yes
	if err := b.Send(s.netns); err != nil {
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
	b := nft.NewBatch(st.fam, st.table)
	writeFull(b, rs)
	b.DeleteTable()
	return b.Send(s.netns)
}

// cleanup deletes table, if it exists, in the network namespace netns.
func cleanup(fam *nft.Family, table string, netns int) error {
	b := nft.NewBatch(fam, table)
	b.AddTable() // so that deleting never fails for its absence
	b.DeleteTable()
	return b.Send(netns)
}

// writeFull replaces the table with rs: delete and create in one
// transaction, so packets never see it missing, and established
// connections keep their NAT state in conntrack.
func writeFull(b *nft.Batch, rs *ruleset) {
	b.AddTable()
	b.DeleteTable()
	b.AddTable()
	for _, c := range rs.chains {
		b.AddChain(c)
	}
	for _, sv := range rs.services {
		for _, c := range sv.chains {
			b.AddChain(c)
		}
	}
	for _, st := range rs.sets {
		b.AddSet(st)
	}
	var elems []nft.Element
	for _, sv := range rs.services {
		for _, st := range sv.sets {
			b.AddSet(st)
		}
		elems = append(elems, sv.elements...)
	}
	b.AddElements(elems)
	for _, sv := range rs.services {
		for _, c := range sv.chains {
			b.AddRules(c)
		}
	}
	for _, c := range rs.chains {
		b.AddRules(c)
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
func writePartial(b *nft.Batch, old, cur *ruleset, stats *syncStats) bool {
	if len(old.chains) != len(cur.chains) {
		return false
	}
	for i := range old.chains {
		if old.chains[i].Name != cur.chains[i].Name || old.chains[i].Sig != cur.chains[i].Sig {
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
	// Sets before chains: a Service's map refers to its endpoint chains,
	// its affinity sets are only referred to by its (now empty) chains.
	for _, st := range d.delSets {
		b.DeleteSet(st)
	}
	for _, c := range d.delChains {
		b.DeleteChain(c)
	}
	return true
}

// diff collects the changes between two versions of the Services' rules.
type diff struct {
	services           int
	newChains, rewrite []*nft.Chain
	flush, delChains   []string
	newSets            []*nft.Set
	delSets            []string
	addElems, delElems []nft.Element
}

func (d *diff) service(old, cur *svcRules) {
	if old != nil && cur != nil && sameService(old, cur) {
		return
	}
	d.services++
	oldChains := map[string]*nft.Chain{}
	oldSets := map[string]bool{}
	oldElems := map[[2]string]string{}
	if old != nil {
		for _, c := range old.chains {
			oldChains[c.Name] = c
		}
		for _, s := range old.sets {
			oldSets[s.Name] = true
		}
		for _, e := range old.elements {
			oldElems[[2]string{e.Set, e.Key}] = e.Chain
		}
	}
	if cur != nil {
		for _, c := range cur.chains {
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
		for _, s := range cur.sets {
			if !oldSets[s.Name] {
				d.newSets = append(d.newSets, s)
			}
			delete(oldSets, s.Name)
		}
		for _, e := range cur.elements {
			k := [2]string{e.Set, e.Key}
			o, ok := oldElems[k]
			if ok && o == e.Chain {
				delete(oldElems, k)
				continue
			}
			if ok {
				d.delElems = append(d.delElems, nft.Element{Set: e.Set, Key: e.Key, Chain: o})
				delete(oldElems, k)
			}
			d.addElems = append(d.addElems, e)
		}
	}
	if old != nil {
		// What is left is gone; keep the old order for determinism.
		for _, c := range old.chains {
			if oldChains[c.Name] != nil {
				d.flush = append(d.flush, c.Name)
				d.delChains = append(d.delChains, c.Name)
			}
		}
		for _, s := range old.sets {
			if oldSets[s.Name] {
				d.delSets = append(d.delSets, s.Name)
			}
		}
		// Elements of deleted sets go with them.
		for _, e := range old.elements {
			if _, ok := oldElems[[2]string{e.Set, e.Key}]; ok && !oldSets[e.Set] {
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
		if a.chains[i].Name != b.chains[i].Name || a.chains[i].Sig != b.chains[i].Sig {
			return false
		}
	}
	for i := range a.sets {
		if a.sets[i].Name != b.sets[i].Name {
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
