package nft

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
)

// Family is what the rules need to know about an address family. Only IPv4
// is programmed today; IPv6 would be a second value (with its own table).
type Family struct {
	Name        string // nft keyword, for listings: "ip"
	Table       nftables.TableFamily
	NFProto     uint32 // NFPROTO_*, for nat expressions
	AddrLen     uint32
	SaddrOff    uint32 // offsets of the addresses in the network header
	DaddrOff    uint32
	AddrType    nftables.SetDatatype
	Loopback    *net.IPNet
	PortUnreach uint8 // ICMP code of "port unreachable"
	// AdminProhibited is the ICMP code of "administratively prohibited",
	// the answer to what a filter refuses.
	AdminProhibited uint8
}

// IPv4 is the family ip.
var IPv4 = &Family{
	Name:        "ip",
	Table:       nftables.TableFamilyIPv4,
	NFProto:     unix.NFPROTO_IPV4,
	AddrLen:     4,
	SaddrOff:    12,
	DaddrOff:    16,
	AddrType:    nftables.TypeIPAddr,
	Loopback:    &net.IPNet{IP: net.IPv4(127, 0, 0, 0).To4(), Mask: net.CIDRMask(8, 32)},
	PortUnreach: 3, // ICMP_PORT_UNREACH
	// ICMP_PKT_FILTERED
	AdminProhibited: 13,
}

// Addr returns ip in the family's length, or nil if it is of another family.
func (f *Family) Addr(ip net.IP) net.IP {
	if f.AddrLen == 4 {
		return ip.To4()
	}
	if ip.To4() != nil {
		return nil
	}
	return ip.To16()
}

// CIDR returns n if it is of the family, in the family's length.
func (f *Family) CIDR(n *net.IPNet) *net.IPNet {
	ip := f.Addr(n.IP)
	if ip == nil || uint32(len(n.Mask)) != f.AddrLen {
		return nil
	}
	return &net.IPNet{IP: ip.Mask(n.Mask), Mask: n.Mask}
}

// Registers. NFT_REG_1 is 16 bytes wide and starts with the 32-bit register
// NFT_REG32_00; concatenated keys continue in NFT_REG32_01 and _02.
const (
	RegVerdict = 0
	Reg1       = 1  // NFT_REG_1
	Reg2       = 2  // NFT_REG_2
	reg32b     = 9  // NFT_REG32_01
	reg32c     = 10 // NFT_REG32_02
)

// Protocol numbers, the inet_proto of map keys.
const (
	ProtoTCP  = unix.IPPROTO_TCP
	ProtoUDP  = unix.IPPROTO_UDP
	ProtoSCTP = unix.IPPROTO_SCTP
)

var (
	// TypeIPProtoPort is the key ip . l4proto . port.
	TypeIPProtoPort = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	// TypeProtoPort is the key l4proto . port.
	TypeProtoPort = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
)

// Native32 is v in the host's byte order, as the kernel keeps marks,
// conntrack states, numbers and integer keys.
func Native32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

// Port16 is port p in network byte order.
func Port16(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }

// IPProtoPortKey is a key of TypeIPProtoPort: each field padded to 4 bytes.
func IPProtoPortKey(ip net.IP, proto uint8, port uint16) string {
	k := make([]byte, 0, len(ip)+8)
	k = append(k, ip...)
	k = append(k, proto, 0, 0, 0)
	k = binary.BigEndian.AppendUint16(k, port)
	return string(append(k, 0, 0))
}

// ProtoPortKey is a key of TypeProtoPort.
func ProtoPortKey(proto uint8, port uint16) string {
	k := []byte{proto, 0, 0, 0}
	k = binary.BigEndian.AppendUint16(k, port)
	return string(append(k, 0, 0))
}

// FormatKey prints a set key of type typ field by field.
func FormatKey(typ nftables.SetDatatype, k []byte) string {
	var parts []string
	for _, t := range nftables.ConcatSetTypeElements(typ) {
		n := int(t.Bytes)
		if n > len(k) {
			return fmt.Sprintf("0x%x", k)
		}
		v := k[:n]
		switch t.Name {
		case nftables.TypeIPAddr.Name, nftables.TypeIP6Addr.Name:
			parts = append(parts, net.IP(v).String())
		case nftables.TypeInetProto.Name:
			parts = append(parts, ProtoName(v[0]))
		case nftables.TypeInetService.Name:
			parts = append(parts, strconv.Itoa(int(binary.BigEndian.Uint16(v))))
		case nftables.TypeInteger.Name:
			parts = append(parts, strconv.Itoa(int(binaryutil.NativeEndian.Uint32(v))))
		default:
			parts = append(parts, fmt.Sprintf("0x%x", v))
		}
		k = k[(n+3)/4*4:]
	}
	return strings.Join(parts, " . ")
}

// ProtocolNumber is the number of a Kubernetes protocol name (TCP, UDP,
// SCTP; empty is TCP).
func ProtocolNumber(name string) (uint8, bool) {
	switch name {
	case "TCP", "":
		return ProtoTCP, true
	case "UDP":
		return ProtoUDP, true
	case "SCTP":
		return ProtoSCTP, true
	}
	return 0, false
}

// ProtoName names protocol number p as nft does (tcp, udp, sctp), or
// gives the number.
func ProtoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoSCTP:
		return "sctp"
	}
	return strconv.Itoa(int(p))
}

// LoadSaddr loads the source address into reg.
func (f *Family) LoadSaddr(reg uint32) *expr.Payload {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: f.SaddrOff, Len: f.AddrLen}
}

// LoadDaddr loads the destination address into reg.
func (f *Family) LoadDaddr(reg uint32) *expr.Payload {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: f.DaddrOff, Len: f.AddrLen}
}

// LoadL4proto loads the transport protocol number into reg ("meta l4proto").
func LoadL4proto(reg uint32) *expr.Meta { return &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg} }

// LoadDport loads the destination port of TCP, UDP and SCTP ("th dport").
func LoadDport(reg uint32) *expr.Payload {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
}

// CmpEq matches if reg holds data.
func CmpEq(reg uint32, data []byte) *expr.Cmp {
	return &expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: data}
}

// CmpNeq matches if reg does not hold data.
func CmpNeq(reg uint32, data []byte) *expr.Cmp {
	return &expr.Cmp{Op: expr.CmpOpNeq, Register: reg, Data: data}
}

// MatchNet compares the address just loaded into Reg1 with n.
func (f *Family) MatchNet(n *net.IPNet, neq bool) []expr.Any {
	var out []expr.Any
	if ones, bits := n.Mask.Size(); ones != bits {
		out = append(out, &expr.Bitwise{SourceRegister: Reg1, DestRegister: Reg1, Len: f.AddrLen,
			Mask: []byte(n.Mask), Xor: make([]byte, f.AddrLen)})
	}
	if neq {
		return append(out, CmpNeq(Reg1, []byte(n.IP)))
	}
	return append(out, CmpEq(Reg1, []byte(n.IP)))
}

// SaddrIn matches the source address against n ("ip saddr n" or "!= n").
func (f *Family) SaddrIn(n *net.IPNet, neq bool) []expr.Any {
	return append([]expr.Any{f.LoadSaddr(Reg1)}, f.MatchNet(n, neq)...)
}

// DaddrIn matches the destination address against n.
func (f *Family) DaddrIn(n *net.IPNet, neq bool) []expr.Any {
	return append([]expr.Any{f.LoadDaddr(Reg1)}, f.MatchNet(n, neq)...)
}

// CtStateNew matches the first packet of a connection.
func CtStateNew() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: Reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: Reg1, DestRegister: Reg1, Len: 4,
			Mask: Native32(expr.CtStateBitNEW), Xor: Native32(0)},
		CmpNeq(Reg1, Native32(0)),
	}
}

// ipsDstNAT is the conntrack status bit of a connection whose destination
// was rewritten (IPS_DST_NAT).
const ipsDstNAT = 1 << 5

// CtDNAT matches packets of connections whose destination was rewritten
// ("ct status dnat"), or with not, those whose destination was not.
func CtDNAT(not bool) []expr.Any {
	cmp := CmpNeq(Reg1, Native32(0))
	if not {
		cmp = CmpEq(Reg1, Native32(0))
	}
	return []expr.Any{
		&expr.Ct{Register: Reg1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: Reg1, DestRegister: Reg1, Len: 4, Mask: Native32(ipsDstNAT), Xor: Native32(0)},
		cmp,
	}
}

// FibLocal matches packets whose destination (or source) is an address of
// this host ("fib daddr type local").
func FibLocal(daddr bool) []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: Reg1, FlagDADDR: daddr, FlagSADDR: !daddr, ResultADDRTYPE: true},
		CmpEq(Reg1, Native32(unix.RTN_LOCAL)),
	}
}

// LookupProtoPort maps "meta l4proto . th dport" through the verdict map set.
func LookupProtoPort(set string) []expr.Any {
	return []expr.Any{
		LoadL4proto(Reg1),
		LoadDport(reg32b),
		&expr.Lookup{SourceRegister: Reg1, IsDestRegSet: true, DestRegister: RegVerdict, SetName: set},
	}
}

// LookupIPProtoPort maps "ip daddr . meta l4proto . th dport" through the
// verdict map set.
func (f *Family) LookupIPProtoPort(set string) []expr.Any {
	return []expr.Any{
		f.LoadDaddr(Reg1),
		LoadL4proto(reg32b),
		LoadDport(reg32c),
		&expr.Lookup{SourceRegister: Reg1, IsDestRegSet: true, DestRegister: RegVerdict, SetName: set},
	}
}

// Jump is the verdict "jump chain".
func Jump(chain string) *expr.Verdict { return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain} }

// Goto is the verdict "goto chain".
func Goto(chain string) *expr.Verdict { return &expr.Verdict{Kind: expr.VerdictGoto, Chain: chain} }

// Verdict is a verdict without a chain: accept, drop, return...
func Verdict(k expr.VerdictKind) *expr.Verdict { return &expr.Verdict{Kind: k} }

// SetMark sets (or clears) bit of the packet mark, leaving its other bits
// alone.
func SetMark(bit uint32, on bool) []expr.Any {
	mask, xor := ^bit, bit
	if !on {
		xor = 0
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: Reg1},
		&expr.Bitwise{SourceRegister: Reg1, DestRegister: Reg1, Len: 4, Mask: Native32(mask), Xor: Native32(xor)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: Reg1},
	}
}

// MasqueradeMarked are the rules of a nat postrouting chain that
// masquerades the packets carrying mark bit, clearing it: the bit is how
// a rule earlier in the path asks for masquerading.
func MasqueradeMarked(bit uint32) []Rule {
	return []Rule{
		NewRule(Exprs(&expr.Meta{Key: expr.MetaKeyMARK, Register: Reg1},
			&expr.Bitwise{SourceRegister: Reg1, DestRegister: Reg1, Len: 4, Mask: Native32(bit), Xor: Native32(0)},
			CmpEq(Reg1, Native32(0)), Verdict(expr.VerdictReturn))),
		NewRule(SetMark(bit, false)),
		NewRule(Exprs(&expr.Masq{FullyRandom: true})),
	}
}

// IfName is an interface name as the kernel compares it: IFNAMSIZ bytes.
func IfName(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}
