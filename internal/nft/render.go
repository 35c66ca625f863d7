package nft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// This file lists a ruleset in an nft-like syntax, for golden tests and for
// reading. It decompiles the expressions the node's rule engines emit (and
// only those):
// each load names the register it fills, comparisons and lookups print what
// the registers hold, so a listing shows what the kernel gets, not what the
// model meant.

// Render lists the whole table.
func Render(rs *Ruleset) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {\n", rs.Family.Name, rs.Table)
	keys := SetKeys(rs)
	elems := map[string][]Element{}
	members := map[string][]Member{}
	for _, u := range rs.Units {
		for _, e := range u.Elements {
			elems[e.Set] = append(elems[e.Set], e)
		}
		for _, m := range u.Members {
			members[m.Set] = append(members[m.Set], m)
		}
	}
	for _, s := range rs.Sets {
		writeSet(&b, "\t", s, elems[s.Name], members[s.Name])
	}
	for _, c := range rs.Chains {
		writeChain(&b, "\t", rs.Family, keys, c)
	}
	for _, u := range rs.Units {
		b.WriteString("\n")
		writeUnit(&b, "\t", rs, keys, u)
	}
	b.WriteString("}\n")
	return b.String()
}

// RenderUnits lists only what the units add to the table.
func RenderUnits(rs *Ruleset) string {
	var b strings.Builder
	keys := SetKeys(rs)
	for i, u := range rs.Units {
		if i > 0 {
			b.WriteString("\n")
		}
		writeUnit(&b, "", rs, keys, u)
	}
	return b.String()
}

// SetKeys are the table's sets by name, for RenderRule.
func SetKeys(rs *Ruleset) map[string]*Set {
	keys := map[string]*Set{}
	for _, s := range rs.Sets {
		keys[s.Name] = s
	}
	for _, u := range rs.Units {
		for _, s := range u.Sets {
			keys[s.Name] = s
		}
	}
	return keys
}

func writeUnit(b *strings.Builder, in string, rs *Ruleset, keys map[string]*Set, u *Unit) {
	fmt.Fprintf(b, "%s# %s\n", in, u.Key)
	for _, st := range u.Sets {
		writeSet(b, in, st, nil, nil)
	}
	for _, e := range u.Elements {
		fmt.Fprintf(b, "%sadd element %s %s %s { %s }\n", in, rs.Family.Name, rs.Table, e.Set, elementText(keys[e.Set], e))
	}
	for _, m := range u.Members {
		fmt.Fprintf(b, "%sadd element %s %s %s { %s }\n", in, rs.Family.Name, rs.Table, m.Set, memberText(keys[m.Set], m))
	}
	for _, c := range u.Chains {
		writeChain(b, in, rs.Family, keys, c)
	}
}

func writeSet(b *strings.Builder, in string, s *Set, elems []Element, members []Member) {
	kind := "set"
	typ := s.Key.Name
	if s.IsMap {
		kind, typ = "map", typ+" : verdict"
	}
	fmt.Fprintf(b, "%s%s %s {\n%s\ttype %s\n", in, kind, s.Name, in, typ)
	if s.Timeout > 0 {
		fmt.Fprintf(b, "%s\tflags dynamic,timeout\n%s\ttimeout %s\n", in, in, seconds(s.Timeout))
	}
	if s.Interval {
		fmt.Fprintf(b, "%s\tflags interval\n", in)
	}
	if len(elems) > 0 || len(members) > 0 {
		fmt.Fprintf(b, "%s\telements = {\n", in)
		for _, e := range elems {
			fmt.Fprintf(b, "%s\t\t%s,\n", in, elementText(s, e))
		}
		for _, m := range members {
			fmt.Fprintf(b, "%s\t\t%s,\n", in, memberText(s, m))
		}
		fmt.Fprintf(b, "%s\t}\n", in)
	}
	fmt.Fprintf(b, "%s}\n", in)
}

// elementText is a verdict map element: "key : goto chain".
func elementText(s *Set, e Element) string {
	v := "goto"
	if e.Jump {
		v = "jump"
	}
	return FormatKey(s.Key, []byte(e.Key)) + " : " + v + " " + e.Chain
}

// memberText is a set member: its key, or in an interval set its range,
// "first-last" (a range of one key is that key).
func memberText(s *Set, m Member) string {
	k := FormatKey(s.Key, []byte(m.Key))
	if !s.Interval {
		return k
	}
	last := bytes.Repeat([]byte{0xff}, len(m.Key)) // no end: up to the last key
	if m.End != "" {
		last = []byte(m.End)
		for i := len(last) - 1; i >= 0; i-- { // the key before End
			last[i]--
			if last[i] != 0xff {
				break
			}
		}
	}
	if l := FormatKey(s.Key, last); l != k {
		k += "-" + l
	}
	return k
}

var hookNames = map[nftables.ChainHook]string{
	unix.NF_INET_PRE_ROUTING: "prerouting", unix.NF_INET_LOCAL_IN: "input", unix.NF_INET_FORWARD: "forward",
	unix.NF_INET_LOCAL_OUT: "output", unix.NF_INET_POST_ROUTING: "postrouting",
}

func writeChain(b *strings.Builder, in string, fam *Family, keys map[string]*Set, c *Chain) {
	fmt.Fprintf(b, "%schain %s {", in, c.Name)
	if c.Comment != "" {
		fmt.Fprintf(b, " # %s", c.Comment)
	}
	b.WriteString("\n")
	if c.Hook != nil {
		fmt.Fprintf(b, "%s\ttype %s hook %s priority %d; policy accept;\n", in, c.Type, hookNames[*c.Hook], *c.Prio)
	}
	for _, r := range c.Rules {
		fmt.Fprintf(b, "%s\t%s\n", in, RenderRule(fam, keys, r))
	}
	fmt.Fprintf(b, "%s}\n", in)
}

func seconds(d time.Duration) string { return strconv.FormatInt(int64(d/time.Second), 10) + "s" }

// kind says how to print a value compared with an operand.
type kind int

const (
	kRaw kind = iota
	kAddr
	kProto
	kPort
	kMark
	kCtState
	kAddrType
	kInt
	kIfname
)

// operand is what a register holds, symbolically.
type operand struct {
	text   string
	kind   kind
	len    uint32
	prefix int    // kAddr after a prefix mask: its length
	mask   []byte // kCtState after a mask
	masked bool   // text is an expression: comparisons print "=="
	data   []byte // immediate data
}

// regIndex is the 32-bit register index of a register number: NFT_REG_1..4
// are 16 bytes wide, NFT_REG32_00 (8) and up 4 bytes.
func regIndex(r uint32) uint32 {
	if r >= 8 {
		return r - 8
	}
	return (r - 1) * 4
}

// RenderRule lists one rule of a table whose sets are keys.
func RenderRule(fam *Family, keys map[string]*Set, rl Rule) string {
	var words []string
	regs := map[uint32]operand{}
	get := func(r uint32) operand {
		o, ok := regs[regIndex(r)]
		if !ok {
			return operand{text: fmt.Sprintf("reg%d", r)}
		}
		return o
	}
	for _, e := range rl.Exprs {
		switch e := e.(type) {
		case *expr.Payload:
			regs[regIndex(e.DestRegister)] = payloadOperand(fam, e)
		case *expr.Meta:
			if e.SourceRegister {
				words = append(words, fmt.Sprintf("meta %s set %s", metaName(e.Key), get(e.Register).text))
				continue
			}
			o := operand{text: "meta " + metaName(e.Key), len: 4}
			switch e.Key {
			case expr.MetaKeyL4PROTO:
				o.kind, o.len = kProto, 1
			case expr.MetaKeyMARK:
				o.kind = kMark
			case expr.MetaKeyOIFNAME, expr.MetaKeyIIFNAME:
				o.text, o.kind, o.len = metaName(e.Key), kIfname, unix.IFNAMSIZ
			}
			regs[regIndex(e.Register)] = o
		case *expr.Ct:
			o := operand{text: fmt.Sprintf("ct key%d", e.Key), len: 4}
			switch e.Key {
			case expr.CtKeySTATE:
				o.text, o.kind = "ct state", kCtState
			case expr.CtKeySTATUS:
				o.text = "ct status"
			}
			regs[regIndex(e.Register)] = o
		case *expr.Fib:
			dir := "daddr"
			if e.FlagSADDR {
				dir = "saddr"
			}
			o := operand{text: "fib " + dir, len: 4}
			if e.ResultADDRTYPE {
				o.text, o.kind = o.text+" type", kAddrType
			}
			regs[regIndex(e.Register)] = o
		case *expr.Numgen:
			kind := "random"
			if e.Type != unix.NFT_NG_RANDOM {
				kind = "inc"
			}
			regs[regIndex(e.Register)] = operand{text: fmt.Sprintf("numgen %s mod %d", kind, e.Modulus), kind: kInt, len: 4}
		case *expr.Bitwise:
			regs[regIndex(e.DestRegister)] = bitwiseOperand(get(e.SourceRegister), e)
		case *expr.Cmp:
			words = append(words, cmpText(fam, get(e.Register), e))
		case *expr.Lookup:
			name := "@" + e.SetName
			keyLen := uint32(4)
			if s, ok := keys[e.SetName]; ok {
				keyLen = s.Key.Bytes
			}
			var parts []string
			for at, end := regIndex(e.SourceRegister), regIndex(e.SourceRegister)+keyLen/4; at < end; {
				o, ok := regs[at]
				if !ok {
					parts = append(parts, fmt.Sprintf("reg32_%d", at))
					at++
					continue
				}
				parts = append(parts, o.text)
				at += (o.len + 3) / 4
			}
			switch {
			case e.IsDestRegSet && e.DestRegister == RegVerdict:
				words = append(words, strings.Join(parts, " . ")+" vmap "+name)
			case e.Invert:
				words = append(words, strings.Join(parts, " . ")+" != "+name)
			default:
				words = append(words, strings.Join(parts, " . ")+" "+name)
			}
		case *expr.Dynset:
			op := map[uint32]string{unix.NFT_DYNSET_OP_ADD: "add", unix.NFT_DYNSET_OP_UPDATE: "update", 2: "delete"}[e.Operation]
			t := ""
			if e.Timeout > 0 {
				t = " timeout " + seconds(e.Timeout)
			}
			words = append(words, fmt.Sprintf("%s @%s { %s%s }", op, e.SetName, get(e.SrcRegKey).text, t))
		case *expr.Immediate:
			regs[regIndex(e.Register)] = operand{text: fmt.Sprintf("0x%x", e.Data), data: e.Data, len: uint32(len(e.Data))}
		case *expr.Verdict:
			words = append(words, verdictText(e))
		case *expr.NAT:
			typ := "snat"
			if e.Type == expr.NATTypeDestNAT {
				typ = "dnat"
			}
			to := net.IP(get(e.RegAddrMin).data).String()
			if e.RegProtoMin != 0 {
				to += ":" + strconv.Itoa(int(binary.BigEndian.Uint16(get(e.RegProtoMin).data)))
			}
			words = append(words, typ+" to "+to)
		case *expr.Masq:
			w := "masquerade"
			if e.FullyRandom {
				w += " fully-random"
			}
			words = append(words, w)
		case *expr.Reject:
			switch e.Type {
			case unix.NFT_REJECT_TCP_RST:
				words = append(words, "reject with tcp reset")
			case unix.NFT_REJECT_ICMP_UNREACH:
				if e.Code == fam.PortUnreach {
					words = append(words, "reject with icmp port-unreachable")
				} else if e.Code == fam.AdminProhibited {
					words = append(words, "reject with icmp admin-prohibited")
				} else {
					words = append(words, fmt.Sprintf("reject with icmp %d", e.Code))
				}
			default:
				words = append(words, fmt.Sprintf("reject type %d code %d", e.Type, e.Code))
			}
		case *expr.Counter:
			words = append(words, "counter")
		default:
			words = append(words, fmt.Sprintf("<%T>", e))
		}
	}
	return strings.Join(words, " ")
}

func payloadOperand(fam *Family, e *expr.Payload) operand {
	switch {
	case e.Base == expr.PayloadBaseNetworkHeader && e.Offset == fam.SaddrOff && e.Len == fam.AddrLen:
		return operand{text: fam.Name + " saddr", kind: kAddr, len: e.Len, prefix: -1}
	case e.Base == expr.PayloadBaseNetworkHeader && e.Offset == fam.DaddrOff && e.Len == fam.AddrLen:
		return operand{text: fam.Name + " daddr", kind: kAddr, len: e.Len, prefix: -1}
	case e.Base == expr.PayloadBaseTransportHeader && e.Offset == 2 && e.Len == 2:
		return operand{text: "th dport", kind: kPort, len: 2}
	}
	return operand{text: fmt.Sprintf("payload base %d offset %d len %d", e.Base, e.Offset, e.Len), len: e.Len}
}

func metaName(k expr.MetaKey) string {
	switch k {
	case expr.MetaKeyL4PROTO:
		return "l4proto"
	case expr.MetaKeyMARK:
		return "mark"
	case expr.MetaKeyOIFNAME:
		return "oifname"
	case expr.MetaKeyIIFNAME:
		return "iifname"
	}
	return fmt.Sprintf("key%d", k)
}

func bitwiseOperand(src operand, e *expr.Bitwise) operand {
	zeroXor := allZero(e.Xor)
	if src.kind == kAddr && zeroXor {
		if ones, bits := net.IPMask(e.Mask).Size(); bits != 0 {
			src.prefix = ones
			return src
		}
	}
	if src.kind == kCtState && zeroXor {
		src.mask = e.Mask
		return src
	}
	if len(e.Mask) == 4 && len(e.Xor) == 4 {
		m, x := binaryutil.NativeEndian.Uint32(e.Mask), binaryutil.NativeEndian.Uint32(e.Xor)
		src.masked = true
		switch {
		case x == 0:
			src.text = fmt.Sprintf("%s & 0x%x", src.text, m)
		case m == ^x:
			src.text = fmt.Sprintf("%s | 0x%x", src.text, x)
		default:
			src.text = fmt.Sprintf("(%s & 0x%x) ^ 0x%x", src.text, m, x)
		}
		return src
	}
	src.text = fmt.Sprintf("(%s & 0x%x) ^ 0x%x", src.text, e.Mask, e.Xor)
	src.kind, src.masked = kRaw, true
	return src
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func cmpText(fam *Family, o operand, e *expr.Cmp) string {
	op := map[expr.CmpOp]string{expr.CmpOpEq: "", expr.CmpOpNeq: "!= ", expr.CmpOpLt: "< ",
		expr.CmpOpLte: "<= ", expr.CmpOpGt: "> ", expr.CmpOpGte: ">= "}[e.Op]
	if o.kind == kCtState && o.mask != nil && allZero(e.Data) && len(o.mask) == 4 {
		states := ctStates(binaryutil.NativeEndian.Uint32(o.mask))
		if e.Op == expr.CmpOpNeq {
			return o.text + " " + states
		}
		return o.text + " != " + states
	}
	if op == "" && o.masked {
		op = "== "
	}
	return o.text + " " + op + formatValue(fam, o, e.Data)
}

func ctStates(mask uint32) string {
	var s []string
	for _, st := range []struct {
		bit  uint32
		name string
	}{{expr.CtStateBitINVALID, "invalid"}, {expr.CtStateBitESTABLISHED, "established"},
		{expr.CtStateBitRELATED, "related"}, {expr.CtStateBitNEW, "new"}, {expr.CtStateBitUNTRACKED, "untracked"}} {
		if mask&st.bit != 0 {
			s = append(s, st.name)
		}
	}
	return strings.Join(s, ",")
}

func formatValue(fam *Family, o operand, d []byte) string {
	switch o.kind {
	case kAddr:
		if o.prefix >= 0 && o.prefix != len(d)*8 {
			return fmt.Sprintf("%s/%d", net.IP(d), o.prefix)
		}
		return net.IP(d).String()
	case kProto:
		if len(d) == 1 {
			return ProtoName(d[0])
		}
	case kPort:
		if len(d) == 2 {
			return strconv.Itoa(int(binary.BigEndian.Uint16(d)))
		}
	case kMark:
		if len(d) == 4 {
			return fmt.Sprintf("0x%x", binaryutil.NativeEndian.Uint32(d))
		}
	case kAddrType:
		if len(d) == 4 {
			if v := binaryutil.NativeEndian.Uint32(d); v == unix.RTN_LOCAL {
				return "local"
			} else {
				return strconv.Itoa(int(v))
			}
		}
	case kInt:
		if len(d) == 4 {
			return strconv.Itoa(int(binaryutil.NativeEndian.Uint32(d)))
		}
	case kIfname:
		return strconv.Quote(strings.TrimRight(string(d), "\x00"))
	}
	return fmt.Sprintf("0x%x", d)
}

func verdictText(v *expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictReturn:
		return "return"
	case expr.VerdictContinue:
		return "continue"
	case expr.VerdictJump:
		return "jump " + v.Chain
	case expr.VerdictGoto:
		return "goto " + v.Chain
	}
	return fmt.Sprintf("verdict %d", v.Kind)
}
