package nft

import (
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Member is an element of a plain set (not a verdict map): a key, or in an
// interval set the range of keys from Key up to, not including, End. An
// empty End in an interval set means "up to the last key" (an address
// range that ends at 255.255.255.255 has no key past it).
type Member struct {
	Set string
	Key string
	End string // interval sets only
}

// AddMembers adds members to their sets, set by set in the order the sets
// first appear. The sets must say whether they are interval sets: members
// of an interval set are sent as the kernel keeps them, a start key and an
// end key flagged as such.
func (b *Batch) AddMembers(sets map[string]*Set, ms []Member) { b.writeMembers(sets, ms, true) }

// DeleteMembers deletes members (their keys, and ranges' end keys) from
// their sets.
func (b *Batch) DeleteMembers(sets map[string]*Set, ms []Member) { b.writeMembers(sets, ms, false) }

func (b *Batch) writeMembers(sets map[string]*Set, ms []Member, add bool) {
	var order []string
	bySet := map[string][]Member{}
	for _, m := range ms {
		if _, ok := bySet[m.Set]; !ok {
			order = append(order, m.Set)
		}
		bySet[m.Set] = append(bySet[m.Set], m)
	}
	for _, name := range order {
		s := sets[name]
		interval := s != nil && s.Interval
		ns := &nftables.Set{Table: b.table, Name: name, Interval: interval}
		var vals []nftables.SetElement
		for _, m := range bySet[name] {
			vals = append(vals, nftables.SetElement{Key: []byte(m.Key)})
			if interval && m.End != "" {
				vals = append(vals, nftables.SetElement{Key: []byte(m.End), IntervalEnd: true})
			}
		}
		for len(vals) > 0 {
			n := min(len(vals), elementsPerMessage)
			if interval && n < len(vals) && vals[n].IntervalEnd {
				n++ // a range's two keys go in one message
			}
			var err error
			if add {
				err = b.conn.SetAddElements(ns, vals[:n])
			} else {
				err = b.conn.SetDeleteElements(ns, vals[:n])
			}
			b.fail(err)
			vals = vals[n:]
		}
	}
}

// LookupDaddrProtoPort matches if "ip daddr . meta l4proto . th dport" is
// in the plain set named set.
func (f *Family) LookupDaddrProtoPort(set string) []expr.Any {
	proto := reg32a + f.AddrLen/4 // the fields follow the address, 4 bytes each
	return []expr.Any{
		f.LoadDaddr(Reg1),
		LoadL4proto(proto),
		LoadDport(proto + 1),
		&expr.Lookup{SourceRegister: Reg1, SetName: set},
	}
}

// reg32a is NFT_REG32_00, where NFT_REG_1 starts.
const reg32a = 8

// Lookup matches if what reg holds is in the plain set named set (or, with
// invert, is not).
func Lookup(reg uint32, set string, invert bool) *expr.Lookup {
	return &expr.Lookup{SourceRegister: reg, SetName: set, Invert: invert}
}

// CmpGte matches if reg holds data or more (bytes compared in order: ports
// and addresses in network byte order compare as numbers).
func CmpGte(reg uint32, data []byte) *expr.Cmp {
	return &expr.Cmp{Op: expr.CmpOpGte, Register: reg, Data: data}
}

// CmpLte matches if reg holds data or less.
func CmpLte(reg uint32, data []byte) *expr.Cmp {
	return &expr.Cmp{Op: expr.CmpOpLte, Register: reg, Data: data}
}

// MarkBit matches packets whose mark has bit set (or, with !set, clear).
func MarkBit(bit uint32, set bool) []expr.Any {
	out := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: Reg1},
		&expr.Bitwise{SourceRegister: Reg1, DestRegister: Reg1, Len: 4, Mask: Native32(bit), Xor: Native32(0)},
	}
	if set {
		return append(out, CmpNeq(Reg1, Native32(0)))
	}
	return append(out, CmpEq(Reg1, Native32(0)))
}

// CtStateIn matches packets whose conntrack state is one of the states
// (bits expr.CtStateBit*): "ct state established,related".
func CtStateIn(states uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: Reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: Reg1, DestRegister: Reg1, Len: 4, Mask: Native32(states), Xor: Native32(0)},
		CmpNeq(Reg1, Native32(0)),
	}
}
