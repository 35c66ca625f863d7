package join

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/component"
)

// Passwords keeps node names bound to machines on the server: it binds the
// server's own node to its password before that node registers (so that no
// join token can take the name), labels that node as the control plane,
// and deletes a node's password Secret when its Node is deleted, so that a
// rebuilt machine can join under the old name again once an admin has
// removed the Node.
type Passwords struct {
	Client func() (kubernetes.Interface, error)
	// ServerNode and ServerPassword are the server's own node, if it runs
	// one.
	ServerNode, ServerPassword string
	component.Latch
}

// ControlPlaneLabel marks a server's node, as k3s and kubeadm do.
const ControlPlaneLabel = "node-role.kubernetes.io/control-plane"

// Name implements component.Component.
func (p *Passwords) Name() string { return "node-passwords" }

// Run implements component.Component.
func (p *Passwords) Run(ctx context.Context) error {
	cs, err := p.Client()
	if err != nil {
		return err
	}
	if p.ServerNode != "" {
		// The server's node is the admin's own: its binding replaces any.
		// The API server may still be making kube-system: retry a while.
		var last error
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			last = bindPassword(ctx, cs, p.ServerNode, p.ServerPassword, true)
			return last == nil, nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("binding the server's node name %s: %w", p.ServerNode, last)
		}
	}
	label := func(obj any) {
		node, ok := obj.(*corev1.Node)
		if !ok || node.Name != p.ServerNode || node.Labels[ControlPlaneLabel] == "true" {
			return
		}
		patch := fmt.Sprintf(`{"metadata":{"labels":{%q:"true"}}}`, ControlPlaneLabel)
		if _, err := cs.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "cannot label the server's node as the control plane", "node", node.Name)
		}
	}
	factory := informers.NewSharedInformerFactory(cs, 0)
	inf := factory.Core().V1().Nodes().Informer()
	_, err = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: label, UpdateFunc: func(_, obj any) { label(obj) }, DeleteFunc: func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		node, ok := obj.(*corev1.Node)
		if !ok {
			return
		}
		err := cs.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, PasswordSecret(node.Name), metav1.DeleteOptions{})
		switch {
		case err == nil:
			klog.InfoS("deleted the password of a deleted node: its name is free to join again", "node", node.Name)
		case !apierrors.IsNotFound(err) && ctx.Err() == nil:
			klog.ErrorS(err, "cannot delete the password of a deleted node", "node", node.Name, "secret", PasswordSecret(node.Name))
		}
	}})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	p.SetReady()
	<-ctx.Done()
	factory.Shutdown()
	return nil
}
