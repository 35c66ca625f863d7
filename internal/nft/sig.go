package nft

import (
	"fmt"
	"strconv"

	"github.com/google/nftables/expr"
)

// ChainSig is a compact, exact encoding of a chain's rules: partial syncs
// rewrite a chain only when its signature changed. It is built with
// appends, not fmt, because a sync computes it for every chain of the table.
func ChainSig(c *Chain) string {
	b := make([]byte, 0, 64*len(c.Rules))
	if c.Hook != nil {
		b = strconv.AppendUint(b, uint64(*c.Hook), 10)
		b = strconv.AppendInt(b, int64(*c.Prio), 10)
		b = bs(b, c.Type)
	}
	for _, r := range c.Rules {
		b = append(b, '|')
		for _, e := range r.Exprs {
			b = appendExpr(b, e)
			b = append(b, ';')
		}
	}
	return string(b)
}

func u(b []byte, v uint64) []byte { return append(strconv.AppendUint(b, v, 10), ' ') }

// bs appends data with its length, so that no two encodings collide.
func bs[T ~string | ~[]byte](b []byte, data T) []byte {
	return append(u(b, uint64(len(data))), data...)
}

func boolean(b []byte, v bool) []byte {
	if v {
		return append(b, '1')
	}
	return append(b, '0')
}

func appendExpr(b []byte, e expr.Any) []byte {
	switch e := e.(type) {
	case *expr.Payload:
		b = append(b, 'p')
		b = u(b, uint64(e.OperationType))
		b = u(b, uint64(e.DestRegister))
		b = u(b, uint64(e.SourceRegister))
		b = u(b, uint64(e.Base))
		b = u(b, uint64(e.Offset))
		b = u(b, uint64(e.Len))
	case *expr.Meta:
		b = append(b, 'm')
		b = u(b, uint64(e.Key))
		b = boolean(b, e.SourceRegister)
		b = u(b, uint64(e.Register))
	case *expr.Cmp:
		b = append(b, 'c')
		b = u(b, uint64(e.Op))
		b = u(b, uint64(e.Register))
		b = bs(b, e.Data)
	case *expr.Bitwise:
		b = append(b, 'b')
		b = u(b, uint64(e.SourceRegister))
		b = u(b, uint64(e.DestRegister))
		b = u(b, uint64(e.Len))
		b = bs(b, e.Mask)
		b = bs(b, e.Xor)
	case *expr.Immediate:
		b = append(b, 'i')
		b = u(b, uint64(e.Register))
		b = bs(b, e.Data)
	case *expr.Verdict:
		b = append(b, 'v')
		b = strconv.AppendInt(b, int64(e.Kind), 10)
		b = bs(b, e.Chain)
	case *expr.Lookup:
		b = append(b, 'l')
		b = u(b, uint64(e.SourceRegister))
		b = u(b, uint64(e.DestRegister))
		b = boolean(b, e.IsDestRegSet)
		b = boolean(b, e.Invert)
		b = bs(b, e.SetName)
	case *expr.Dynset:
		b = append(b, 'd')
		b = u(b, uint64(e.SrcRegKey))
		b = u(b, uint64(e.SrcRegData))
		b = u(b, uint64(e.Operation))
		b = u(b, uint64(e.Timeout))
		b = bs(b, e.SetName)
	case *expr.Numgen:
		b = append(b, 'n')
		b = u(b, uint64(e.Register))
		b = u(b, uint64(e.Modulus))
		b = u(b, uint64(e.Type))
		b = u(b, uint64(e.Offset))
	case *expr.NAT:
		b = append(b, 'N')
		b = u(b, uint64(e.Type))
		b = u(b, uint64(e.Family))
		b = u(b, uint64(e.RegAddrMin))
		b = u(b, uint64(e.RegAddrMax))
		b = u(b, uint64(e.RegProtoMin))
		b = u(b, uint64(e.RegProtoMax))
		b = boolean(b, e.Random)
		b = boolean(b, e.FullyRandom)
		b = boolean(b, e.Persistent)
		b = boolean(b, e.Prefix)
		b = boolean(b, e.Specified)
	case *expr.Masq:
		b = append(b, 'M')
		b = boolean(b, e.Random)
		b = boolean(b, e.FullyRandom)
		b = boolean(b, e.Persistent)
		b = boolean(b, e.ToPorts)
		b = u(b, uint64(e.RegProtoMin))
		b = u(b, uint64(e.RegProtoMax))
	case *expr.Ct:
		b = append(b, 'C')
		b = u(b, uint64(e.Register))
		b = boolean(b, e.SourceRegister)
		b = u(b, uint64(e.Key))
		b = u(b, uint64(e.Direction))
	case *expr.Fib:
		b = append(b, 'f')
		b = u(b, uint64(e.Register))
		for _, v := range []bool{e.ResultOIF, e.ResultOIFNAME, e.ResultADDRTYPE, e.FlagSADDR, e.FlagDADDR,
			e.FlagMARK, e.FlagIIF, e.FlagOIF, e.FlagPRESENT} {
			b = boolean(b, v)
		}
	case *expr.Reject:
		b = append(b, 'r')
		b = u(b, uint64(e.Type))
		b = u(b, uint64(e.Code))
	case *expr.Counter:
		b = append(b, "counter"...)
	default:
		b = fmt.Appendf(b, "%T%+v", e, e)
	}
	return b
}
