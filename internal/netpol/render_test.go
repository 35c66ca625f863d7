package netpol

import (
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/skiff-dev/skiff/internal/nft"
)

// This file lists a ruleset in an nft-like syntax, for golden tests. It
// decompiles the expressions the model emits (and only those), register by
// register, so a listing shows what the kernel gets.

// render lists the whole table, unit by unit.
func render(rs *Ruleset) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {\n", rs.Family.Name, rs.Table)
	sets := setsOf(rs)
	for i, u := range rs.Units {
		if i > 0 {
			b.WriteString("\n")
		}
		writeUnit(&b, rs, sets, u)
	}
	b.WriteString("}\n")
	return b.String()
}

func writeUnit(b *strings.Builder, rs *Ruleset, sets map[string]*nft.Set, u *Unit) {
	fmt.Fprintf(b, "\t# %s\n", u.Key)
	own := map[string]bool{}
	for _, s := range u.Sets {
		own[s.Name] = true
		writeSet(b, s, u)
	}
	for _, e := range u.Elements {
		if !own[e.Set] {
			fmt.Fprintf(b, "\tadd element %s : %s\n", e.Set, elemText(sets[e.Set], e))
		}
	}
	for _, m := range u.Members {
		if !own[m.Set] {
			fmt.Fprintf(b, "\tadd element %s %s\n", m.Set, memberText(sets[m.Set], m))
		}
	}
	for _, c := range u.Chains {
		writeChain(b, rs.Family, sets, c)
	}
}

func elemText(s *nft.Set, e nft.Element) string {
	v := "goto"
	if e.Jump {
		v = "jump"
	}
	return fmt.Sprintf("%s : %s %s", nft.FormatKey(s.Key, []byte(e.Key)), v, e.Chain)
}

func memberText(s *nft.Set, m nft.Member) string {
	k := nft.FormatKey(s.Key, []byte(m.Key))
	if s.Interval {
		end := "255.255.255.255"
		if m.End != "" {
			e := net.IP([]byte(m.End)).To4()
			last := binary.BigEndian.Uint32(e) - 1
			end = net.IP(binary.BigEndian.AppendUint32(nil, last)).String()
		}
		if end != k {
			k += "-" + end
		}
	}
	return k
}

func writeSet(b *strings.Builder, s *nft.Set, u *Unit) {
	kind, typ := "set", s.Key.Name
	if s.IsMap {
		kind, typ = "map", typ+" : verdict"
	}
	fmt.Fprintf(b, "\t%s %s {\n\t\ttype %s\n", kind, s.Name, typ)
	if s.Interval {
		b.WriteString("\t\tflags interval\n")
	}
	var elems []string
	for _, e := range u.Elements {
		if e.Set == s.Name {
			elems = append(elems, elemText(s, e))
		}
	}
	for _, m := range u.Members {
		if m.Set == s.Name {
			elems = append(elems, memberText(s, m))
		}
	}
	if len(elems) > 0 {
		fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(elems, ", "))
	}
	b.WriteString("\t}\n")
}

func writeChain(b *strings.Builder, fam *nft.Family, sets map[string]*nft.Set, c *nft.Chain) {
	fmt.Fprintf(b, "\tchain %s {", c.Name)
	if c.Comment != "" {
		fmt.Fprintf(b, " # %s", c.Comment)
	}
	b.WriteString("\n")
	if c.Hook != nil {
		hook := map[nftables.ChainHook]string{unix.NF_INET_FORWARD: "forward"}[*c.Hook]
		fmt.Fprintf(b, "\t\ttype %s hook %s priority %d; policy accept;\n", c.Type, hook, *c.Prio)
	}
	for _, r := range c.Rules {
		fmt.Fprintf(b, "\t\t%s\n", renderRule(fam, sets, r))
	}
	b.WriteString("\t}\n")
}

// operand is what a register holds, symbolically.
type operand struct {
	text   string
	kind   byte // 'a' address, 'p' protocol, 'n' port, 'm' mark, 's' ct state
	len    uint32
	prefix int
	mask   uint32 // 'm' and 's' after a bitwise and
}

func regIndex(r uint32) uint32 {
	if r >= 8 {
		return r - 8
	}
	return (r - 1) * 4
}

func renderRule(fam *nft.Family, sets map[string]*nft.Set, rl nft.Rule) string {
	var words []string
	regs := map[uint32]operand{}
	for _, e := range rl.Exprs {
		switch e := e.(type) {
		case *expr.Payload:
			o := operand{text: "th dport", kind: 'n', len: 2}
			if e.Base == expr.PayloadBaseNetworkHeader {
				dir := "saddr"
				if e.Offset == fam.DaddrOff {
					dir = "daddr"
				}
				o = operand{text: fam.Name + " " + dir, kind: 'a', len: e.Len, prefix: -1}
			}
			regs[regIndex(e.DestRegister)] = o
		case *expr.Meta:
			switch {
			case e.Key == expr.MetaKeyL4PROTO:
				regs[regIndex(e.Register)] = operand{text: "meta l4proto", kind: 'p', len: 1}
			case e.Key == expr.MetaKeyMARK && e.SourceRegister:
				o := regs[regIndex(e.Register)]
				words = append(words, "meta mark set "+o.text)
			case e.Key == expr.MetaKeyMARK:
				regs[regIndex(e.Register)] = operand{text: "meta mark", kind: 'm', len: 4}
			}
		case *expr.Ct:
			regs[regIndex(e.Register)] = operand{text: "ct state", kind: 's', len: 4}
		case *expr.Bitwise:
			o := regs[regIndex(e.SourceRegister)]
			switch o.kind {
			case 'a':
				o.prefix, _ = net.IPMask(e.Mask).Size()
			case 's':
				o.mask = binaryutil.NativeEndian.Uint32(e.Mask)
			case 'm':
				m, x := binaryutil.NativeEndian.Uint32(e.Mask), binaryutil.NativeEndian.Uint32(e.Xor)
				switch {
				case x != 0:
					o.text = fmt.Sprintf("mark | 0x%x", x)
				case m&(m-1) == 0:
					o.text, o.mask = fmt.Sprintf("meta mark & 0x%x", m), m
				default:
					o.text = fmt.Sprintf("mark & 0x%x", m)
				}
			}
			regs[regIndex(e.DestRegister)] = o
		case *expr.Cmp:
			o := regs[regIndex(e.Register)]
			op := map[expr.CmpOp]string{expr.CmpOpEq: "", expr.CmpOpNeq: "!= ", expr.CmpOpGte: ">= ", expr.CmpOpLte: "<= "}[e.Op]
			var v string
			switch o.kind {
			case 'a':
				v = net.IP(e.Data).String()
				if o.prefix >= 0 && o.prefix != len(e.Data)*8 {
					v += "/" + strconv.Itoa(o.prefix)
				}
			case 'p':
				v = nft.ProtoName(e.Data[0])
			case 'n':
				v = strconv.Itoa(int(binary.BigEndian.Uint16(e.Data)))
			case 's':
				states := []string{}
				for _, st := range []struct {
					bit  uint32
					name string
				}{{expr.CtStateBitESTABLISHED, "established"}, {expr.CtStateBitRELATED, "related"}, {expr.CtStateBitNEW, "new"}} {
					if o.mask&st.bit != 0 {
						states = append(states, st.name)
					}
				}
				words = append(words, "ct state "+strings.Join(states, ","))
				continue
			case 'm':
				v, op = fmt.Sprintf("%d", binaryutil.NativeEndian.Uint32(e.Data)), map[string]string{"": "== ", "!= ": "!= "}[op]
			default:
				v = fmt.Sprintf("0x%x", e.Data)
			}
			words = append(words, o.text+" "+op+v)
		case *expr.Lookup:
			keyLen := sets[e.SetName].Key.Bytes
			var parts []string
			for at, end := regIndex(e.SourceRegister), regIndex(e.SourceRegister)+keyLen/4; at < end; {
				o := regs[at]
				parts = append(parts, o.text)
				at += (o.len + 3) / 4
			}
			switch {
			case e.IsDestRegSet:
				words = append(words, strings.Join(parts, " . ")+" vmap @"+e.SetName)
			case e.Invert:
				words = append(words, strings.Join(parts, " . ")+" != @"+e.SetName)
			default:
				words = append(words, strings.Join(parts, " . ")+" @"+e.SetName)
			}
		case *expr.Verdict:
			words = append(words, map[expr.VerdictKind]string{expr.VerdictAccept: "accept", expr.VerdictDrop: "drop",
				expr.VerdictReturn: "return", expr.VerdictJump: "jump " + e.Chain, expr.VerdictGoto: "goto " + e.Chain}[e.Kind])
		case *expr.Reject:
			if e.Type == unix.NFT_REJECT_TCP_RST {
				words = append(words, "reject with tcp reset")
			} else if e.Code == fam.AdminProhibited {
				words = append(words, "reject with icmp admin-prohibited")
			} else {
				words = append(words, fmt.Sprintf("reject with icmp %d", e.Code))
			}
		default:
			words = append(words, fmt.Sprintf("<%T>", e))
		}
	}
	return strings.Join(words, " ")
}
