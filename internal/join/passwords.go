package join

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/component"
)

// Passwords deletes a node's password Secret when its Node is deleted, so
// that a rebuilt machine can join under the old name again once an admin
// has removed the Node.
type Passwords struct {
	Client func() (kubernetes.Interface, error)
	component.Latch
}

// Name implements component.Component.
func (p *Passwords) Name() string { return "node-passwords" }

// Run implements component.Component.
func (p *Passwords) Run(ctx context.Context) error {
	cs, err := p.Client()
	if err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactory(cs, 0)
	inf := factory.Core().V1().Nodes().Informer()
	_, err = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: func(obj any) {
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
