package controlplane

import (
	"context"
	"errors"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/component-helpers/auth/rbac/reconciliation"
	schedulingapiv1 "k8s.io/kubernetes/pkg/apis/scheduling/v1"
	"k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac/bootstrappolicy"
)

// firstPolicyWorkers is how many objects of the bootstrap policy are
// written at once on a new datastore.
const firstPolicyWorkers = 16

// writeFirstPolicy writes the bootstrap policy (upstream's default roles
// and bindings, reconciled as upstream's hook does, and the system
// PriorityClasses) and skiff's node roles into a datastore that has none
// yet, at once and without waiting: upstream's hooks wait a second before
// their first try and write one object after another, which a new cluster
// waits for in full before /readyz passes. Upstream's hooks still run
// afterwards (see ensurePolicy) and find it all in place.
func writeFirstPolicy(ctx context.Context, loopback *rest.Config) error {
	cfg := rest.CopyConfig(loopback)
	cfg.QPS, cfg.Burst = -1, 0 // the loopback client's rate limit would serialize the writes
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	rbac, namespaces := client.RbacV1(), client.CoreV1().Namespaces()
	var jobs []func() error
	reconcileRole := func(opts reconciliation.ReconcileRoleOptions) {
		jobs = append(jobs, func() error { _, err := opts.Run(); return err })
	}
	reconcileBinding := func(opts reconciliation.ReconcileRoleBindingOptions) {
		jobs = append(jobs, func() error { _, err := opts.Run(); return err })
	}
	for _, r := range append(bootstrappolicy.ClusterRoles(), bootstrappolicy.ControllerRoles()...) {
		reconcileRole(reconciliation.ReconcileRoleOptions{Confirm: true,
			Role: reconciliation.ClusterRoleRuleOwner{ClusterRole: &r}, Client: reconciliation.ClusterRoleModifier{Client: rbac.ClusterRoles()}})
	}
	for _, b := range append(bootstrappolicy.ClusterRoleBindings(), bootstrappolicy.ControllerRoleBindings()...) {
		reconcileBinding(reconciliation.ReconcileRoleBindingOptions{Confirm: true,
			RoleBinding: reconciliation.ClusterRoleBindingAdapter{ClusterRoleBinding: &b},
			Client:      reconciliation.ClusterRoleBindingClientAdapter{Client: rbac.ClusterRoleBindings()}})
	}
	for _, roles := range bootstrappolicy.NamespaceRoles() {
		for _, r := range roles {
			reconcileRole(reconciliation.ReconcileRoleOptions{Confirm: true,
				Role: reconciliation.RoleRuleOwner{Role: &r}, Client: reconciliation.RoleModifier{Client: rbac, NamespaceClient: namespaces}})
		}
	}
	for _, bindings := range bootstrappolicy.NamespaceRoleBindings() {
		for _, b := range bindings {
			reconcileBinding(reconciliation.ReconcileRoleBindingOptions{Confirm: true,
				RoleBinding: reconciliation.RoleBindingAdapter{RoleBinding: &b},
				Client:      reconciliation.RoleBindingClientAdapter{Client: rbac, NamespaceClient: namespaces}})
		}
	}
	for _, pc := range schedulingapiv1.SystemPriorityClasses() {
		jobs = append(jobs, func() error {
			_, err := client.SchedulingV1().PriorityClasses().Create(ctx, pc, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return nil
			}
			return err
		})
	}
	role, binding := nodeRoles()
	jobs = append(jobs, func() error { return applyRole(ctx, client, role, binding) })

	work := make(chan func() error)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for range firstPolicyWorkers {
		wg.Go(func() {
			for job := range work {
				// As upstream's hook: the API may still be installing its
				// storage versions, and namespaces race.
				err := retry.OnError(retry.DefaultBackoff, func(err error) bool {
					return apierrors.IsConflict(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsAlreadyExists(err)
				}, job)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for _, job := range jobs {
		if ctx.Err() != nil {
			break
		}
		work <- job
	}
	close(work)
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.Join(errs...)
}
