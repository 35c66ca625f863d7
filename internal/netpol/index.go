package netpol

import (
	"fmt"
	"net"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/skiff-dev/skiff/internal/nft"
)

// pod is a pod as policies see it: one that has an address of the family,
// on the pod network (hostNetwork pods have the node's address: they are
// never a policy's target nor a selector's peer, though an ipBlock may
// match their address).
type pod struct {
	key    string // namespace/name
	ns     string
	labels labels.Set
	ip     net.IP
	local  bool
	ports  []v1.ContainerPort

	sigCache string
}

// sig is what policies see of q, for the model cache.
func (q *pod) sig() string {
	if q.sigCache != "" {
		return q.sigCache
	}
	var b strings.Builder
	b.WriteString(q.key)
	b.WriteByte(0)
	b.Write(q.ip)
	if q.local {
		b.WriteString("\x00local")
	}
	b.WriteByte(0)
	b.WriteString(q.labels.String())
	for _, p := range q.ports {
		fmt.Fprintf(&b, "\x00%s/%s/%d", p.Name, p.Protocol, p.ContainerPort)
	}
	q.sigCache = b.String()
	return q.sigCache
}

// index holds the pods and namespaces of one build.
type index struct {
	pods     []*pod // in key order
	byNS     map[string][]*pod
	nsLabels map[string]labels.Set
	// For the model cache, computed when asked for.
	nsStamps map[string]string
	allStamp string
}

func newIndex(st *Settings, pods []*v1.Pod, namespaces []*v1.Namespace) *index {
	idx := &index{byNS: map[string][]*pod{}, nsLabels: map[string]labels.Set{}, nsStamps: map[string]string{}}
	for _, ns := range namespaces {
		idx.nsLabels[ns.Name] = labels.Set(ns.Labels)
	}
	owners := map[string]int{}
	var all []*pod
	for _, p := range pods {
		if p.Spec.HostNetwork || p.Status.Phase == v1.PodSucceeded || p.Status.Phase == v1.PodFailed {
			continue // terminal pods have given their address back
		}
		ip := podIP(st.Family, p)
		if ip == nil {
			continue
		}
		var ports []v1.ContainerPort
		for _, c := range p.Spec.Containers {
			ports = append(ports, c.Ports...)
		}
		all = append(all, &pod{key: p.Namespace + "/" + p.Name, ns: p.Namespace, labels: labels.Set(p.Labels),
			ip: ip, local: p.Spec.NodeName == st.Node, ports: ports})
		owners[string(ip)]++
	}
	for _, p := range all {
		// An address two pods claim belongs to neither: which one sends
		// is unknown, so it gets what an unknown address gets.
		if owners[string(p.ip)] > 1 {
			continue
		}
		idx.pods = append(idx.pods, p)
	}
	sort.Slice(idx.pods, func(i, j int) bool { return idx.pods[i].key < idx.pods[j].key })
	for _, p := range idx.pods {
		idx.byNS[p.ns] = append(idx.byNS[p.ns], p)
	}
	return idx
}

// podIP is p's address of the family, or nil.
func podIP(f *nft.Family, p *v1.Pod) net.IP {
	for _, a := range p.Status.PodIPs {
		if ip := f.Addr(net.ParseIP(a.IP)); ip != nil {
			return ip
		}
	}
	if ip := net.ParseIP(p.Status.PodIP); ip != nil {
		return f.Addr(ip)
	}
	return nil
}

// namespaceLabels are the labels of namespace ns. One not (yet) known has
// the label the API server gives every namespace.
func (idx *index) namespaceLabels(ns string) labels.Set {
	if l, ok := idx.nsLabels[ns]; ok {
		return l
	}
	return labels.Set{v1.LabelMetadataName: ns}
}

// selector parses a label selector. An invalid one (the API refuses them)
// selects nothing.
func selector(s *metav1.LabelSelector) labels.Selector {
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		return labels.Nothing()
	}
	return sel
}

// peerPods are the pods a peer with a pod or namespace selector matches,
// for a policy of namespace ns, in key order.
func (idx *index) peerPods(ns string, peer networkingv1.NetworkPolicyPeer) []*pod {
	podSel := labels.Everything()
	if peer.PodSelector != nil {
		podSel = selector(peer.PodSelector)
	}
	if peer.NamespaceSelector == nil {
		var out []*pod
		for _, p := range idx.byNS[ns] {
			if podSel.Matches(p.labels) {
				out = append(out, p)
			}
		}
		return out
	}
	nsSel := selector(peer.NamespaceSelector)
	var out []*pod
	for _, p := range idx.pods {
		if nsSel.Matches(idx.namespaceLabels(p.ns)) && podSel.Matches(p.labels) {
			out = append(out, p)
		}
	}
	return out
}
