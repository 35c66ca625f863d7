package proxy

import (
	"encoding/binary"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// family is what the rules need to know about an address family. Only IPv4
// is programmed today; IPv6 would be a second value (with its own table).
type family struct {
	name        string // nft keyword, for listings: "ip"
	table       nftables.TableFamily
	nfproto     uint32 // NFPROTO_*, for nat expressions
	addrLen     uint32
	saddrOff    uint32 // offsets of the addresses in the network header
	daddrOff    uint32
	addrType    nftables.SetDatatype
	loopback    *net.IPNet // never a NodePort address unless asked for
	portUnreach uint8      // ICMP code of "port unreachable"
}

var ipv4 = &family{
	name:        "ip",
	table:       nftables.TableFamilyIPv4,
	nfproto:     unix.NFPROTO_IPV4,
	addrLen:     4,
	saddrOff:    12,
	daddrOff:    16,
	addrType:    nftables.TypeIPAddr,
	loopback:    &net.IPNet{IP: net.IPv4(127, 0, 0, 0).To4(), Mask: net.CIDRMask(8, 32)},
	portUnreach: 3, // ICMP_PORT_UNREACH
}

// addr returns ip in the family's length, or nil if it is of another family.
func (f *family) addr(ip net.IP) net.IP {
	if f.addrLen == 4 {
		return ip.To4()
	}
	if ip.To4() != nil {
		return nil
	}
	return ip.To16()
}

// cidr returns n if it is of the family, in the family's length.
func (f *family) cidr(n *net.IPNet) *net.IPNet {
	ip := f.addr(n.IP)
	if ip == nil || uint32(len(n.Mask)) != f.addrLen {
		return nil
	}
	return &net.IPNet{IP: ip.Mask(n.Mask), Mask: n.Mask}
}

// Registers. NFT_REG_1 is 16 bytes wide and starts with the 32-bit register
// NFT_REG32_00; concatenated keys continue in NFT_REG32_01 and _02.
const (
	regVerdict = 0
	reg1       = 1  // NFT_REG_1
	reg2       = 2  // NFT_REG_2
	reg32b     = 9  // NFT_REG32_01
	reg32c     = 10 // NFT_REG32_02
)

// markMasq is the packet mark bit that asks nat postrouting to masquerade.
const markMasq = 0x4000

// Protocol numbers, the inet_proto of map keys.
const (
	protoTCP  = unix.IPPROTO_TCP
	protoUDP  = unix.IPPROTO_UDP
	protoSCTP = unix.IPPROTO_SCTP
)

var (
	// typeIPProtoPort is the key of the address maps: ip . l4proto . port.
	typeIPProtoPort = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	// typeProtoPort is the key of the node port maps: l4proto . port.
	typeProtoPort = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
)

func native32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

func port16(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }

// ipProtoPortKey is a key of typeIPProtoPort: each field padded to 4 bytes.
func ipProtoPortKey(ip net.IP, proto uint8, port uint16) string {
	k := make([]byte, 0, len(ip)+8)
	k = append(k, ip...)
	k = append(k, proto, 0, 0, 0)
	k = binary.BigEndian.AppendUint16(k, port)
	return string(append(k, 0, 0))
}

// protoPortKey is a key of typeProtoPort.
func protoPortKey(proto uint8, port uint16) string {
	k := []byte{proto, 0, 0, 0}
	k = binary.BigEndian.AppendUint16(k, port)
	return string(append(k, 0, 0))
}

func (f *family) loadSaddr(reg uint32) *expr.Payload {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrOff, Len: f.addrLen}
}

func (f *family) loadDaddr(reg uint32) *expr.Payload {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrOff, Len: f.addrLen}
}

func loadL4proto(reg uint32) *expr.Meta { return &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg} }

// loadDport loads the destination port of TCP, UDP and SCTP ("th dport").
func loadDport(reg uint32) *expr.Payload {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
}

func cmpEq(reg uint32, data []byte) *expr.Cmp {
	return &expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: data}
}

func cmpNeq(reg uint32, data []byte) *expr.Cmp {
	return &expr.Cmp{Op: expr.CmpOpNeq, Register: reg, Data: data}
}

// matchNet compares the address just loaded into reg1 with n.
func (f *family) matchNet(n *net.IPNet, neq bool) []expr.Any {
	var out []expr.Any
	if ones, bits := n.Mask.Size(); ones != bits {
		out = append(out, &expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: f.addrLen,
			Mask: []byte(n.Mask), Xor: make([]byte, f.addrLen)})
	}
	if neq {
		return append(out, cmpNeq(reg1, []byte(n.IP)))
	}
	return append(out, cmpEq(reg1, []byte(n.IP)))
}

// saddrIn matches the source address against n ("ip saddr n" or "!= n").
func (f *family) saddrIn(n *net.IPNet, neq bool) []expr.Any {
	return append([]expr.Any{f.loadSaddr(reg1)}, f.matchNet(n, neq)...)
}

// daddrIn matches the destination address against n.
func (f *family) daddrIn(n *net.IPNet, neq bool) []expr.Any {
	return append([]expr.Any{f.loadDaddr(reg1)}, f.matchNet(n, neq)...)
}

// ctStateNew matches the first packet of a connection.
func ctStateNew() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: native32(expr.CtStateBitNEW), Xor: native32(0)},
		cmpNeq(reg1, native32(0)),
	}
}

// fibLocal matches packets whose destination (or source) is an address of
// this host ("fib daddr type local").
func fibLocal(daddr bool) []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: reg1, FlagDADDR: daddr, FlagSADDR: !daddr, ResultADDRTYPE: true},
		cmpEq(reg1, native32(unix.RTN_LOCAL)),
	}
}

// lookupProtoPort maps "meta l4proto . th dport" through the verdict map set.
func lookupProtoPort(set string) []expr.Any {
	return []expr.Any{
		loadL4proto(reg1),
		loadDport(reg32b),
		&expr.Lookup{SourceRegister: reg1, IsDestRegSet: true, DestRegister: regVerdict, SetName: set},
	}
}

// lookupIPProtoPort maps "ip daddr . meta l4proto . th dport" through the
// verdict map set.
func (f *family) lookupIPProtoPort(set string) []expr.Any {
	return []expr.Any{
		f.loadDaddr(reg1),
		loadL4proto(reg32b),
		loadDport(reg32c),
		&expr.Lookup{SourceRegister: reg1, IsDestRegSet: true, DestRegister: regVerdict, SetName: set},
	}
}

func jump(chain string) *expr.Verdict          { return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain} }
func goTo(chain string) *expr.Verdict          { return &expr.Verdict{Kind: expr.VerdictGoto, Chain: chain} }
func verdict(k expr.VerdictKind) *expr.Verdict { return &expr.Verdict{Kind: k} }

// setMark sets (or clears) the masquerade bit of the packet mark.
func setMark(set bool) []expr.Any {
	mask, xor := uint32(^uint32(markMasq)), uint32(markMasq)
	if !set {
		xor = 0
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: native32(mask), Xor: native32(xor)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1},
	}
}

// ifname is an interface name as the kernel compares it: IFNAMSIZ bytes.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}
