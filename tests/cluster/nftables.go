package cluster

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// TableMentions lists a node's proxy table in this network namespace over
// netlink, as a user would with `nft list table ip NAME`, and tells whether
// any rule or map element names ip, or any element keyed by protocol and
// port names port.
func TableMentions(name string, ip net.IP, port uint16) (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, err
	}
	table := &nftables.Table{Name: name, Family: nftables.TableFamilyIPv4}
	ip4 := ip.To4()
	var portKey [2]byte
	binary.BigEndian.PutUint16(portKey[:], port)

	sets, err := c.GetSets(table)
	if err != nil {
		return false, err
	}
	for _, s := range sets {
		elems, err := c.GetSetElements(s)
		if err != nil {
			return false, err
		}
		for _, e := range elems {
			if bytes.Contains(e.Key, ip4) {
				return true, nil
			}
			// inet_proto . inet_service: each padded to 4 bytes.
			if len(e.Key) == 8 && bytes.Equal(e.Key[4:6], portKey[:]) {
				return true, nil
			}
		}
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, err
	}
	for _, ch := range chains {
		if ch.Table.Name != name {
			continue
		}
		rules, err := c.GetRules(table, ch)
		if err != nil {
			return false, err
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				if cmp, ok := e.(*expr.Cmp); ok && bytes.Equal(cmp.Data, ip4) {
					return true, nil
				}
			}
		}
	}
	return false, nil
}

// TableExists says whether the nftables table ip name is in this network
// namespace.
func TableExists(name string) (bool, error) {
	return tableExists(name)
}

// TableExists says whether the nftables table ip name is in the network
// namespace of a host of the LAN.
func (h *LANHost) TableExists(name string) (bool, error) {
	f, err := os.Open("/run/netns/" + h.Netns)
	if err != nil {
		return false, err
	}
	defer f.Close()
	return tableExists(name, nftables.WithNetNSFd(int(f.Fd())))
}

func tableExists(name string, opts ...nftables.ConnOption) (bool, error) {
	c, err := nftables.New(opts...)
	if err != nil {
		return false, err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, err
	}
	for _, t := range tables {
		if t.Name == name {
			return true, nil
		}
	}
	return false, nil
}
