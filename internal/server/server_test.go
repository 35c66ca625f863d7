package server

import "testing"

func TestClusterDNSFollowsServiceCIDR(t *testing.T) {
	for _, c := range []struct{ service, dns, want string }{
		{"10.43.0.0/16", "", "10.43.0.10"},
		{"10.143.0.0/16", "", "10.143.0.10"},
		{"10.143.0.0/16", "10.143.5.5", "10.143.5.5"}, // given: kept
	} {
		o := Options{ClusterCIDR: "10.42.0.0/16", ServiceCIDR: c.service, ServiceNodePortRange: "30000-32767"}
		o.ClusterDNS = c.dns
		if _, err := checkNetworks(&o); err != nil || o.ClusterDNS != c.want {
			t.Errorf("service CIDR %s, --cluster-dns %q: cluster DNS %q (%v), want %s", c.service, c.dns, o.ClusterDNS, err, c.want)
		}
	}
}
