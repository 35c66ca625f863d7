package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Batch is one nftables transaction under construction.
//
// google/nftables builds the messages; we send them. Its Conn.Flush asks
// the kernel to acknowledge every message (and to echo every rule back),
// then reads the answers one by one: for the proxy's table of 1,000
// Services with 10 endpoints each (some 35,000 messages) that takes about a
// second, five times what the kernel itself needs. So the Conn here only buffers: its
// dial function (a test hook of google/nftables, to which Flush hands the
// finished batch) keeps the messages, and transmit sends them in one
// datagram with an acknowledgement asked for the last message only. The
// kernel applies a batch all or nothing, reports each failed message, and
// acknowledges the last one once it is done.
type Batch struct {
	conn   *nftables.Conn
	table  *nftables.Table
	msgs   []netlink.Message
	setID  uint32
	chains map[string]*nftables.Chain
	err    error // the first error building the batch
}

// NewBatch starts a transaction on table, of family fam.
func NewBatch(fam *Family, table string) *Batch {
	b := &Batch{table: &nftables.Table{Name: table, Family: fam.Table}, chains: map[string]*nftables.Chain{}}
	// The error of New is only ever that of dialing, which the test dial
	// does not do.
	b.conn, _ = nftables.New(nftables.WithTestDial(b.capture))
	return b
}

// ack is a successful netlink acknowledgement, for Flush's reading loop.
var ack = []netlink.Message{{Header: netlink.Header{Type: netlink.Error}, Data: make([]byte, 4+16)}}

func (b *Batch) capture(req []netlink.Message) ([]netlink.Message, error) {
	if req != nil {
		b.msgs = append(b.msgs, req...)
		return nil, nil
	}
	return ack, nil
}

func (b *Batch) chain(name string) *nftables.Chain {
	c, ok := b.chains[name]
	if !ok {
		c = &nftables.Chain{Name: name, Table: b.table}
		b.chains[name] = c
	}
	return c
}

func (b *Batch) fail(err error) {
	if err != nil && b.err == nil {
		b.err = err
	}
}

func (b *Batch) nextSetID() uint32 {
	b.setID++
	return b.setID
}

// sendBufferSlack is what the socket's send buffer needs beyond the batch.
const sendBufferSlack = 64 << 10

// Send applies the batch in the network namespace netns (0: the caller's).
func (b *Batch) Send(netns int) error {
	b.fail(b.conn.Flush()) // only marshals: see capture
	if b.err != nil {
		return fmt.Errorf("building the nftables batch: %w", b.err)
	}
	msgs := b.msgs
	b.msgs = nil
	if len(msgs) <= 2 { // begin and end only
		return nil
	}
	return transmit(msgs, netns)
}

// Describe names what each message of the batch does, as errors name
// them ("add rule to chain svc-ABC"), without sending anything; Send still
// sends them. A batch with nothing to do has no messages. Nothing may be
// added to the batch after Describe.
func (b *Batch) Describe() ([]string, error) {
	b.fail(b.conn.Flush()) // only marshals: see capture
	if b.err != nil {
		return nil, fmt.Errorf("building the nftables batch: %w", b.err)
	}
	if len(b.msgs) <= 2 { // begin and end only
		return nil, nil
	}
	out := make([]string, 0, len(b.msgs)-2)
	for _, m := range b.msgs[1 : len(b.msgs)-1] {
		out = append(out, describe(m))
	}
	return out, nil
}

// transmit sends a batch (begin, messages, end) as one datagram, asking
// for the acknowledgement of the last message only, and waits for it.
func transmit(msgs []netlink.Message, netns int) error {
	last := len(msgs) - 2 // the message before the batch end
	size := 0
	for _, m := range msgs {
		size += unix.NLMSG_HDRLEN + (len(m.Data)+3)&^3
	}
	buf := make([]byte, 0, size)
	for i, m := range msgs {
		flags := m.Header.Flags &^ (netlink.Acknowledge | netlink.Echo)
		if i == last {
			flags |= netlink.Acknowledge
		}
		l := unix.NLMSG_HDRLEN + len(m.Data)
		buf = binary.NativeEndian.AppendUint32(buf, uint32(l))
		buf = binary.NativeEndian.AppendUint16(buf, uint16(m.Header.Type))
		buf = binary.NativeEndian.AppendUint16(buf, uint16(flags))
		buf = binary.NativeEndian.AppendUint32(buf, uint32(i+1)) // sequence: index + 1
		buf = binary.NativeEndian.AppendUint32(buf, 0)           // port id: the kernel's to fill
		buf = append(buf, m.Data...)
		buf = append(buf, make([]byte, (l+3)&^3-l)...)
	}

	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netns})
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer c.Close()
	// The whole batch is one datagram. As root, the buffer size is forced
	// past net.core.wmem_max.
	if err := c.SetWriteBuffer(size + sendBufferSlack); err != nil {
		return fmt.Errorf("nftables: socket buffer of %d bytes: %w", size, err)
	}
	_ = c.SetReadBuffer(1 << 20)
	_ = c.SetOption(netlink.CapAcknowledge, true) // errors without the failed message's body
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return !errors.Is(serr, unix.EAGAIN)
	})
	if err == nil {
		err = serr
	}
	if errors.Is(err, unix.EMSGSIZE) {
		return fmt.Errorf("nftables: sending %d messages (%d bytes): %w (without CAP_NET_ADMIN in the host's user namespace, raise net.core.wmem_max)",
			len(msgs), size, err)
	}
	if err != nil {
		return fmt.Errorf("nftables: sending %d messages (%d bytes): %w", len(msgs), size, err)
	}
	return receiveResult(raw, msgs, last)
}

// receiveResult reads the kernel's answers to a batch until the answer to
// message last, and returns the first error it reports.
func receiveResult(raw syscall.RawConn, msgs []netlink.Message, last int) error {
	describeSeq := func(seq uint32) string {
		if i := int(seq) - 1; i > 0 && i < len(msgs)-1 {
			return describe(msgs[i])
		}
		return "the transaction"
	}
	buf := make([]byte, 64<<10)
	var first error
	for {
		var n int
		var rerr error
		err := raw.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			if first != nil {
				return first // say ENOBUFS: more errors than the buffer holds
			}
			return fmt.Errorf("nftables: reading the result: %w", err)
		}
		for b := buf[:n]; len(b) >= unix.NLMSG_HDRLEN; {
			l := int(binary.NativeEndian.Uint32(b[0:4]))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				break
			}
			typ := binary.NativeEndian.Uint16(b[4:6])
			s := binary.NativeEndian.Uint32(b[8:12])
			body := b[unix.NLMSG_HDRLEN:l]
			b = b[min((l+3)&^3, len(b)):]
			if typ != unix.NLMSG_ERROR || len(body) < 4+unix.NLMSG_HDRLEN {
				continue
			}
			errno := -int32(binary.NativeEndian.Uint32(body[0:4]))
			if errno != 0 && first == nil {
				first = fmt.Errorf("nftables: %s: %w", describeSeq(s), syscall.Errno(errno))
			}
			if s == uint32(last+1) {
				return first
			}
			if errno != 0 && s == 1 {
				return first // the commit failed: the batch was undone
			}
		}
	}
}

var msgNames = map[uint16]string{
	unix.NFT_MSG_NEWTABLE: "add table", unix.NFT_MSG_DELTABLE: "delete table",
	unix.NFT_MSG_NEWCHAIN: "add chain", unix.NFT_MSG_DELCHAIN: "delete chain",
	unix.NFT_MSG_NEWRULE: "add rule to chain", unix.NFT_MSG_DELRULE: "flush chain",
	unix.NFT_MSG_NEWSET: "add set", unix.NFT_MSG_DELSET: "delete set",
	unix.NFT_MSG_NEWSETELEM: "add elements to set", unix.NFT_MSG_DELSETELEM: "delete elements from set",
}

// describe names what a message does to what, for errors: "add rule to
// chain svc-ABC".
func describe(m netlink.Message) string {
	typ := uint16(m.Header.Type) & 0xff
	name := msgNames[typ]
	if name == "" {
		name = fmt.Sprintf("message type %d", typ)
	}
	if len(m.Data) < 4 {
		return name
	}
	want := uint16(0)
	switch typ {
	case unix.NFT_MSG_NEWTABLE, unix.NFT_MSG_DELTABLE:
		want = unix.NFTA_TABLE_NAME
	case unix.NFT_MSG_NEWCHAIN, unix.NFT_MSG_DELCHAIN:
		want = unix.NFTA_CHAIN_NAME
	case unix.NFT_MSG_NEWRULE, unix.NFT_MSG_DELRULE:
		want = unix.NFTA_RULE_CHAIN
	case unix.NFT_MSG_NEWSET, unix.NFT_MSG_DELSET:
		want = unix.NFTA_SET_NAME
	case unix.NFT_MSG_NEWSETELEM, unix.NFT_MSG_DELSETELEM:
		want = unix.NFTA_SET_ELEM_LIST_SET
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		return name
	}
	for ad.Next() {
		if ad.Type() == want {
			return name + " " + ad.String()
		}
	}
	return name
}
