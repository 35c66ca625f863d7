package ingress

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestMergeConditionsKeepsTransitionTimes(t *testing.T) {
	then, now := metav1.NewTime(time.Unix(1000, 0)), metav1.NewTime(time.Unix(2000, 0))
	have := []metav1.Condition{
		{Type: "Accepted", Status: metav1.ConditionTrue, LastTransitionTime: then},
		{Type: "Programmed", Status: metav1.ConditionFalse, LastTransitionTime: then},
	}
	want := []metav1.Condition{
		{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted"},
		{Type: "Programmed", Status: metav1.ConditionTrue, Reason: "Programmed"},
		{Type: "ResolvedRefs", Status: metav1.ConditionTrue},
	}
	got := MergeConditions(have, want, now)
	for i, w := range []metav1.Time{then, now, now} {
		if !got[i].LastTransitionTime.Equal(&w) {
			t.Errorf("%s: transition time %v, want %v", got[i].Type, got[i].LastTransitionTime, w)
		}
	}
}

func TestRouteParentsKeepOtherControllers(t *testing.T) {
	then, now := metav1.NewTime(time.Unix(1000, 0)), metav1.NewTime(time.Unix(2000, 0))
	theirs := gatewayv1.RouteParentStatus{ParentRef: gatewayv1.ParentReference{Name: "other"}, ControllerName: "example.com/other",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, LastTransitionTime: then}}}
	oldOurs := gatewayv1.RouteParentStatus{ParentRef: gatewayv1.ParentReference{Name: "gone"}, ControllerName: DefaultGatewayController}
	kept := gatewayv1.RouteParentStatus{ParentRef: gatewayv1.ParentReference{Name: "gw"}, ControllerName: DefaultGatewayController,
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, LastTransitionTime: then}}}
	want := []gatewayv1.RouteParentStatus{{ParentRef: gatewayv1.ParentReference{Name: "gw"}, ControllerName: DefaultGatewayController,
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue}}}}
	got := RouteParents([]gatewayv1.RouteParentStatus{oldOurs, theirs, kept}, want, DefaultGatewayController, now)
	if len(got) != 2 || got[0].ControllerName != "example.com/other" || got[1].ParentRef.Name != "gw" {
		t.Fatalf("parents: %+v", got)
	}
	if !got[1].Conditions[0].LastTransitionTime.Equal(&then) {
		t.Errorf("our unchanged condition's transition time: %v", got[1].Conditions[0].LastTransitionTime)
	}
	if got := RouteParents([]gatewayv1.RouteParentStatus{theirs}, nil, DefaultGatewayController, now); len(got) != 1 {
		t.Errorf("no parent of ours: %+v", got)
	}
}
