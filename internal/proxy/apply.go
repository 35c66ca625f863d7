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
	changed, ok := 0, false
	if s.applied != nil {
		changed, ok = nft.WritePartial(b, &s.applied.Ruleset, &rs.Ruleset)
	}
	s.last = syncStats{services: changed}
	if !ok {
		nft.WriteFull(b, &rs.Ruleset)
		s.last = syncStats{full: true, services: len(rs.Units)}
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
	nft.WriteFull(b, &rs.Ruleset)
	b.DeleteTable()
	return b.Send(s.netns)
}

// cleanup deletes table, if it exists, in the network namespace netns.
func cleanup(fam *nft.Family, table string, netns int) error {
	return nft.RemoveTable(fam, table, netns)
}
