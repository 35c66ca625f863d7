package netpol

import (
	"bytes"
	"fmt"
	"net"
	"slices"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"

	"github.com/skiff-dev/skiff/internal/nft"
)

// This file runs a packet through a ruleset as the kernel would, for the
// expressions the model emits (payload, meta, ct, bitwise, cmp, lookup in
// sets, interval sets and verdict maps, verdicts, reject), so that tests
// judge the compiled rules, not the model's intent. Every packet is the
// first of its connection (ct state new).

// packet is what the rules look at.
type packet struct {
	saddr, daddr net.IP
	proto        uint8
	dport        uint16
	mark         uint32
}

// machine is a ruleset loaded for evaluation.
type machine struct {
	fam    *nft.Family
	chains map[string]*nft.Chain
	sets   map[string]*nft.Set
	keys   map[string]map[string]nft.Element // plain sets and maps: key -> element
	ranges map[string][]nft.Member           // interval sets
	base   string
}

func load(rs *nft.Ruleset) *machine {
	m := &machine{fam: rs.Family, chains: map[string]*nft.Chain{}, sets: nft.SetKeys(rs),
		keys: map[string]map[string]nft.Element{}, ranges: map[string][]nft.Member{}}
	chains := slices.Clone(rs.Chains)
	for _, u := range rs.Units {
		chains = append(chains, u.Chains...)
	}
	{
		for _, c := range chains {
			if _, dup := m.chains[c.Name]; dup {
				panic("two chains named " + c.Name)
			}
			m.chains[c.Name] = c
			if c.Hook != nil {
				m.base = c.Name
			}
		}
	}
	for _, u := range rs.Units {
		for _, e := range u.Elements {
			if m.keys[e.Set] == nil {
				m.keys[e.Set] = map[string]nft.Element{}
			}
			if _, dup := m.keys[e.Set][e.Key]; dup {
				panic("duplicate element in " + e.Set)
			}
			if _, ok := m.chains[e.Chain]; !ok {
				panic("element of " + e.Set + " goes to missing chain " + e.Chain)
			}
			m.keys[e.Set][e.Key] = e
		}
		for _, mm := range u.Members {
			s := m.sets[mm.Set]
			if s == nil {
				panic("member of missing set " + mm.Set)
			}
			if uint32(len(mm.Key)) != s.Key.Bytes {
				panic(fmt.Sprintf("member of %s has %d bytes, its type %d", mm.Set, len(mm.Key), s.Key.Bytes))
			}
			if s.Interval {
				for _, o := range m.ranges[mm.Set] {
					if inMember(o, []byte(mm.Key)) || inMember(mm, []byte(o.Key)) {
						panic("overlapping ranges in " + mm.Set)
					}
				}
				m.ranges[mm.Set] = append(m.ranges[mm.Set], mm)
				continue
			}
			if m.keys[mm.Set] == nil {
				m.keys[mm.Set] = map[string]nft.Element{}
			}
			if _, dup := m.keys[mm.Set][mm.Key]; dup {
				panic("duplicate member in " + mm.Set)
			}
			m.keys[mm.Set][mm.Key] = nft.Element{}
		}
	}
	return m
}

func inMember(m nft.Member, k []byte) bool {
	return bytes.Compare(k, []byte(m.Key)) >= 0 && (m.End == "" || bytes.Compare(k, []byte(m.End)) < 0)
}

// allowed runs p through the base chain: true unless it is dropped or
// rejected.
func (m *machine) allowed(p packet) bool {
	v, _ := m.run(m.base, &p, 0)
	return v != expr.VerdictDrop
}

// run runs chain, returning the final verdict (accept, drop) or return
// (its end).
func (m *machine) run(name string, p *packet, depth int) (expr.VerdictKind, bool) {
	if depth > 16 {
		panic("chains nest too deep at " + name)
	}
	c, ok := m.chains[name]
	if !ok {
		panic("jump to missing chain " + name)
	}
	for _, r := range c.Rules {
		var regs [4 * 20]byte
		verdict, target, matched := m.rule(r, p, &regs)
		if !matched || verdict == nil {
			continue
		}
		switch *verdict {
		case expr.VerdictAccept, expr.VerdictDrop:
			return *verdict, true
		case expr.VerdictReturn:
			return expr.VerdictReturn, false
		case expr.VerdictJump:
			if v, final := m.run(target, p, depth+1); final {
				return v, true
			}
		case expr.VerdictGoto:
			return m.run(target, p, depth+1)
		}
	}
	return expr.VerdictReturn, false
}

// reg is the byte offset of a register in the register file.
// (NFT_REG_1..4 are 16 bytes wide, NFT_REG32_00 (8) and up 4 bytes.)
func reg(r uint32) int {
	if r >= 8 {
		return int(r-8) * 4
	}
	return int(r-1) * 16
}

// rule evaluates one rule; it returns its verdict (nil: none) if all its
// matches match.
func (m *machine) rule(r nft.Rule, p *packet, regs *[80]byte) (*expr.VerdictKind, string, bool) {
	store := func(r uint32, data []byte) {
		at := reg(r)
		for i := at; i < at+(len(data)+3)/4*4; i++ {
			regs[i] = 0 // the kernel zeroes the last register word a load touches
		}
		copy(regs[at:], data)
	}
	kind := func(k expr.VerdictKind) *expr.VerdictKind { return &k }
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Payload:
			switch {
			case e.Base == expr.PayloadBaseNetworkHeader && e.Offset == m.fam.SaddrOff:
				store(e.DestRegister, p.saddr)
			case e.Base == expr.PayloadBaseNetworkHeader && e.Offset == m.fam.DaddrOff:
				store(e.DestRegister, p.daddr)
			case e.Base == expr.PayloadBaseTransportHeader && e.Offset == 2 && e.Len == 2:
				store(e.DestRegister, nft.Port16(p.dport))
			default:
				panic(fmt.Sprintf("payload %+v", e))
			}
		case *expr.Meta:
			switch {
			case e.Key == expr.MetaKeyL4PROTO:
				store(e.Register, []byte{p.proto})
			case e.Key == expr.MetaKeyMARK && e.SourceRegister:
				p.mark = binaryutil.NativeEndian.Uint32(regs[reg(e.Register):])
			case e.Key == expr.MetaKeyMARK:
				store(e.Register, nft.Native32(p.mark))
			default:
				panic(fmt.Sprintf("meta %+v", e))
			}
		case *expr.Ct:
			switch e.Key {
			case expr.CtKeySTATE:
				store(e.Register, nft.Native32(expr.CtStateBitNEW))
			case expr.CtKeySTATUS: // addressed to the pod itself: no DNAT
				store(e.Register, nft.Native32(0))
			default:
				panic(fmt.Sprintf("ct %+v", e))
			}
		case *expr.Bitwise:
			src, dst := reg(e.SourceRegister), reg(e.DestRegister)
			out := make([]byte, e.Len)
			for i := range out {
				out[i] = regs[src+i]&e.Mask[i] ^ e.Xor[i]
			}
			copy(regs[dst:], out)
		case *expr.Cmp:
			c := bytes.Compare(regs[reg(e.Register):reg(e.Register)+len(e.Data)], e.Data)
			ok := map[expr.CmpOp]bool{expr.CmpOpEq: c == 0, expr.CmpOpNeq: c != 0, expr.CmpOpLt: c < 0,
				expr.CmpOpLte: c <= 0, expr.CmpOpGt: c > 0, expr.CmpOpGte: c >= 0}[e.Op]
			if !ok {
				return nil, "", false
			}
		case *expr.Lookup:
			s := m.sets[e.SetName]
			if s == nil {
				panic("lookup in missing set " + e.SetName)
			}
			k := regs[reg(e.SourceRegister) : reg(e.SourceRegister)+int(s.Key.Bytes)]
			found, el := false, nft.Element{}
			if s.Interval {
				for _, mm := range m.ranges[e.SetName] {
					if inMember(mm, k) {
						found = true
					}
				}
			} else {
				el, found = m.keys[e.SetName][string(k)]
			}
			if e.IsDestRegSet {
				if !s.IsMap {
					panic("vmap lookup in a set")
				}
				if !found {
					return nil, "", false
				}
				if el.Jump {
					return kind(expr.VerdictJump), el.Chain, true
				}
				return kind(expr.VerdictGoto), el.Chain, true
			}
			if found == e.Invert {
				return nil, "", false
			}
		case *expr.Verdict:
			return kind(e.Kind), e.Chain, true
		case *expr.Reject:
			return kind(expr.VerdictDrop), "", true
		case *expr.Immediate:
			store(e.Register, e.Data)
		default:
			panic(fmt.Sprintf("expression %T is not one the model may emit", e))
		}
	}
	return nil, "", true
}
