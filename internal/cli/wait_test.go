package cli

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestClusterReady(t *testing.T) {
	node := func(name string, ready corev1.ConditionStatus) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
			Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready}}}}
	}
	missing := errors.New("not found")
	cases := []struct {
		name  string
		nodes []*corev1.Node
		saErr error
		ready bool
	}{
		{"no node", nil, nil, false},
		{"node not Ready", []*corev1.Node{node("a", corev1.ConditionFalse)}, nil, false},
		{"one of two not Ready", []*corev1.Node{node("a", corev1.ConditionTrue), node("b", corev1.ConditionUnknown)}, nil, false},
		{"no ServiceAccount", []*corev1.Node{node("a", corev1.ConditionTrue)}, missing, false},
		{"ready", []*corev1.Node{node("a", corev1.ConditionTrue), node("b", corev1.ConditionTrue)}, nil, true},
	}
	for _, c := range cases {
		if err := clusterReady(c.nodes, c.saErr); (err == nil) != c.ready {
			t.Errorf("%s: clusterReady = %v, want ready %v", c.name, err, c.ready)
		}
	}
}
