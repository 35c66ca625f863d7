package ingress

// Writing the model's status back: conditions merged so that a condition
// whose status did not change keeps its transition time, and the parent
// entries other controllers wrote on HTTPRoutes left as they are.

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
)

// MergeConditions returns want with the transition time of have's
// condition of the same type kept when its status is the same, and now
// for the others.
func MergeConditions(have, want []metav1.Condition, now metav1.Time) []metav1.Condition {
	if want == nil {
		return nil
	}
	out := make([]metav1.Condition, 0, len(want))
	for _, c := range want {
		c.LastTransitionTime = now
		if old := apimeta.FindStatusCondition(have, c.Type); old != nil && old.Status == c.Status && !old.LastTransitionTime.IsZero() {
			c.LastTransitionTime = old.LastTransitionTime
		}
		out = append(out, c)
	}
	return out
}

// GatewayClassStatus is the status to write on a GatewayClass.
func GatewayClassStatus(have *gatewayv1.GatewayClassStatus, want *gatewayv1.GatewayClassStatus, now metav1.Time) *gatewayv1.GatewayClassStatus {
	out := want.DeepCopy()
	out.Conditions = MergeConditions(have.Conditions, want.Conditions, now)
	return out
}

// GatewayStatus is the status to write on a Gateway.
func GatewayStatus(have *gatewayv1.GatewayStatus, want *gatewayv1.GatewayStatus, now metav1.Time) *gatewayv1.GatewayStatus {
	out := want.DeepCopy()
	out.Conditions = MergeConditions(have.Conditions, want.Conditions, now)
	for i := range out.Listeners {
		l := &out.Listeners[i]
		for _, o := range have.Listeners {
			if o.Name == l.Name {
				l.Conditions = MergeConditions(o.Conditions, l.Conditions, now)
				break
			}
		}
		if l.Conditions == nil {
			l.Conditions = []metav1.Condition{}
		}
		for j := range l.Conditions {
			if l.Conditions[j].LastTransitionTime.IsZero() {
				l.Conditions[j].LastTransitionTime = now
			}
		}
	}
	return out
}

// RouteParents are the parent entries to write on an HTTPRoute: those of
// other controllers as they are, then ours (want) with their transition
// times kept.
func RouteParents(have []gatewayv1.RouteParentStatus, want []gatewayv1.RouteParentStatus, controller string, now metav1.Time) []gatewayv1.RouteParentStatus {
	out := []gatewayv1.RouteParentStatus{}
	var ours []gatewayv1.RouteParentStatus
	for _, p := range have {
		if string(p.ControllerName) == controller {
			ours = append(ours, p)
		} else {
			out = append(out, p)
		}
	}
	for _, w := range want {
		w = *w.DeepCopy()
		var old []metav1.Condition
		for _, o := range ours {
			if apiequality.Semantic.DeepEqual(o.ParentRef, w.ParentRef) {
				old = o.Conditions
				break
			}
		}
		w.Conditions = MergeConditions(old, w.Conditions, now)
		out = append(out, w)
	}
	return out
}

// statusWriter writes a Result's status and events.
type statusWriter struct {
	client     kubernetes.Interface
	gateways   gatewayclient.Interface
	controller string
	events     func(ev Event, ref *corev1.ObjectReference)
	reported   map[Event]bool
}

// write makes every object's status what res says; in holds the objects
// as the informers last saw them.
func (w *statusWriter) write(ctx context.Context, in *Input, res *Result) error {
	now := metav1.Now()
	var errs []error
	gw := w.gateways.GatewayV1()
	for _, c := range in.GatewayClasses {
		want := res.GatewayClasses[c.Name]
		if want == nil {
			continue
		}
		st := GatewayClassStatus(&c.Status, want, now)
		if !sameStatus(&c.Status, st) {
			cp := c.DeepCopy()
			cp.Status = *st
			_, err := gw.GatewayClasses().UpdateStatus(ctx, cp, metav1.UpdateOptions{})
			errs = append(errs, err)
		}
	}
	for _, g := range in.Gateways {
		want := res.Gateways[nsName(g)]
		if want == nil {
			continue
		}
		st := GatewayStatus(&g.Status, want, now)
		if !sameStatus(&g.Status, st) {
			cp := g.DeepCopy()
			cp.Status = *st
			_, err := gw.Gateways(g.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{})
			errs = append(errs, err)
		}
	}
	for _, r := range in.HTTPRoutes {
		parents := RouteParents(r.Status.Parents, res.HTTPRoutes[nsName(r)], w.controller, now)
		if !sameParents(r.Status.Parents, parents) {
			cp := r.DeepCopy()
			cp.Status.Parents = parents
			_, err := gw.HTTPRoutes(r.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{})
			errs = append(errs, err)
		}
	}
	for _, ing := range in.Ingresses {
		want := res.Ingresses[nsName(ing)]
		if want == nil || apiequality.Semantic.DeepEqual(ing.Status.LoadBalancer.Ingress, want.LoadBalancer.Ingress) {
			continue
		}
		cp := ing.DeepCopy()
		cp.Status = *want
		_, err := w.client.NetworkingV1().Ingresses(ing.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{})
		errs = append(errs, err)
	}
	w.recordEvents(in, res.Events)
	return errors.Join(errs...)
}

// recordEvents records each event once while it lasts.
func (w *statusWriter) recordEvents(in *Input, events []Event) {
	now := map[Event]bool{}
	for _, ev := range events {
		now[ev] = true
		if w.reported[ev] || w.events == nil {
			continue
		}
		if ref := objectRef(in, ev); ref != nil {
			w.events(ev, ref)
		}
	}
	w.reported = now
}

// objectRef finds the object an event is about.
func objectRef(in *Input, ev Event) *corev1.ObjectReference {
	find := func(objs []metav1.Object, apiVersion string) *corev1.ObjectReference {
		for _, o := range objs {
			if o.GetNamespace() == ev.Namespace && o.GetName() == ev.Name {
				return &corev1.ObjectReference{Kind: ev.Kind, APIVersion: apiVersion, Namespace: ev.Namespace, Name: ev.Name, UID: o.GetUID()}
			}
		}
		return nil
	}
	switch ev.Kind {
	case "GatewayClass":
		return find(objects(in.GatewayClasses), gatewayv1.GroupVersion.String())
	case kindGateway:
		return find(objects(in.Gateways), gatewayv1.GroupVersion.String())
	case kindHTTP:
		return find(objects(in.HTTPRoutes), gatewayv1.GroupVersion.String())
	case kindIngress:
		return find(objects(in.Ingresses), networkingv1.SchemeGroupVersion.String())
	}
	return nil
}

func objects[T metav1.Object](in []T) []metav1.Object {
	out := make([]metav1.Object, len(in))
	for i, o := range in {
		out[i] = o
	}
	return out
}

// sameStatus compares statuses ignoring nothing: transition times kept by
// the merge make an unchanged status equal.
func sameStatus(a, b any) bool { return apiequality.Semantic.DeepEqual(a, b) }

func sameParents(a, b []gatewayv1.RouteParentStatus) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return apiequality.Semantic.DeepEqual(a, b)
}

func (e Event) String() string {
	return fmt.Sprintf("%s %s/%s %s: %s", e.Kind, e.Namespace, e.Name, e.Reason, e.Message)
}
