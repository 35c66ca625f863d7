package controlplane

import (
	"context"
	"reflect"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// NodeNetworkPolicyRole is the ClusterRole that lets every node read what
// its network policy component enforces: the cluster's pods (a policy's
// peers may be anywhere; the Node authorizer lets a node list its own pods
// only), namespaces and network policies. It is bound to the group
// system:nodes.
const NodeNetworkPolicyRole = "skiff:node-network-policy"

// nodeRoles are skiff's additions to the bootstrap policy.
func nodeRoles() (*rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding) {
	read := []string{"get", "list", "watch"}
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: NodeNetworkPolicyRole},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods", "namespaces"}, Verbs: read},
			{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: read},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: NodeNetworkPolicyRole},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: NodeNetworkPolicyRole},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "system:nodes"}},
	}
	return role, binding
}

// ensureNodeRoles creates or updates skiff's node roles, retrying until the
// API server takes them.
func ensureNodeRoles(hc genericapiserver.PostStartHookContext) error {
	client, err := kubernetes.NewForConfig(hc.LoopbackClientConfig)
	if err != nil {
		return err
	}
	role, binding := nodeRoles()
	return wait.PollUntilContextCancel(hc.Context, time.Second, true, func(ctx context.Context) (bool, error) {
		if err := applyRole(ctx, client, role, binding); err != nil {
			klog.V(2).InfoS("node roles not in place yet", "err", err)
			return false, nil
		}
		return true, nil
	})
}

func applyRole(ctx context.Context, client kubernetes.Interface, role *rbacv1.ClusterRole, binding *rbacv1.ClusterRoleBinding) error {
	roles, bindings := client.RbacV1().ClusterRoles(), client.RbacV1().ClusterRoleBindings()
	old, err := roles.Get(ctx, role.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = roles.Create(ctx, role, metav1.CreateOptions{})
	case err == nil && !reflect.DeepEqual(old.Rules, role.Rules):
		old.Rules = role.Rules
		_, err = roles.Update(ctx, old, metav1.UpdateOptions{})
	}
	if err != nil {
		return err
	}
	oldb, err := bindings.Get(ctx, binding.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = bindings.Create(ctx, binding, metav1.CreateOptions{})
	case err == nil && (!reflect.DeepEqual(oldb.Subjects, binding.Subjects) || oldb.RoleRef != binding.RoleRef):
		// The role a binding refers to cannot change: recreate it.
		if err = bindings.Delete(ctx, binding.Name, metav1.DeleteOptions{}); err == nil {
			_, err = bindings.Create(ctx, binding, metav1.CreateOptions{})
		}
	}
	return err
}
