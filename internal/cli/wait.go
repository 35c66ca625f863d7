package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiff-dev/skiff/internal/kubectl"
)

// waitCommand returns once the cluster can take work: what a CI script runs
// after starting `skiff server &`.
func waitCommand() *cli.Command {
	return &cli.Command{
		Name:         "wait",
		Usage:        "wait until the API is ready, every node is Ready and pods can be created",
		OnUsageError: usageError,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "kubeconfig", Value: kubectl.DefaultKubeconfig, EnvVars: []string{"KUBECONFIG"}, Usage: "admin kubeconfig of the cluster"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Minute, Usage: "give up after this long"},
		},
		Action: func(c *cli.Context) error {
			ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
			defer cancel()
			path := c.String("kubeconfig")
			// Until the API answers, look for it every 50 ms (the server
			// writes the kubeconfig once it is ready); then watch the
			// nodes and the default ServiceAccount, and look again at each
			// change.
			var notReady error
			var client kubernetes.Interface
			err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
				client, notReady = apiReady(ctx, path)
				return notReady == nil, nil
			})
			if err == nil {
				notReady = watchReady(ctx, client)
			}
			if notReady != nil {
				return fmt.Errorf("the cluster is not ready after %s: %v", c.Duration("timeout"), notReady)
			}
			return nil
		},
	}
}

// apiReady returns a client of the cluster once its API is ready, else
// what is not.
func apiReady(ctx context.Context, kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		// The server writes the kubeconfig once it is ready.
		return nil, fmt.Errorf("no kubeconfig yet (%v)", err)
	}
	cfg.Timeout = 5 * time.Second
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	if body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil || string(body) != "ok" {
		return nil, fmt.Errorf("the API at %s is not ready (%v)", cfg.Host, err)
	}
	return client, nil
}

// watchReady watches the nodes and the default ServiceAccount until
// clusterReady holds, and returns nil then, else what was last not ready
// when ctx ended.
func watchReady(ctx context.Context, client kubernetes.Interface) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changed := make(chan struct{}, 1)
	kick := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	handler := toolscache.ResourceEventHandlerFuncs{AddFunc: func(any) { kick() }, UpdateFunc: func(any, any) { kick() }, DeleteFunc: func(any) { kick() }}
	nodes := informers.NewSharedInformerFactory(client, 0)
	accounts := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(metav1.NamespaceDefault))
	nodeInf, saInf := nodes.Core().V1().Nodes(), accounts.Core().V1().ServiceAccounts()
	nodeInf.Informer().AddEventHandler(handler)
	saInf.Informer().AddEventHandler(handler)
	nodes.Start(ctx.Done())
	accounts.Start(ctx.Done())
	defer nodes.Shutdown()
	defer accounts.Shutdown()
	defer cancel() // before the factories' Shutdown, which waits for them
	notReady := errors.New("the nodes and ServiceAccounts are not listed yet")
	if !toolscache.WaitFor(ctx, "", nodeInf.Informer().HasSyncedChecker(), saInf.Informer().HasSyncedChecker()) {
		return notReady
	}
	for {
		list, err := nodeInf.Lister().List(labels.Everything())
		if err != nil {
			return err
		}
		_, saErr := saInf.Lister().ServiceAccounts(metav1.NamespaceDefault).Get("default")
		if notReady = clusterReady(list, saErr); notReady == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return notReady
		case <-changed:
		}
	}
}

// clusterReady says what is not ready yet, or nil: a node has registered
// and every node is Ready, and the default ServiceAccount (saErr is the
// error of getting it) is there: pods are refused until the controller
// manager has made it.
func clusterReady(nodes []*corev1.Node, saErr error) error {
	if len(nodes) == 0 {
		return errors.New("no node has registered")
	}
	for _, n := range nodes {
		ready := false
		for _, c := range n.Status.Conditions {
			ready = ready || c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
		}
		if !ready {
			return fmt.Errorf("node %s is not Ready", n.Name)
		}
	}
	if saErr != nil {
		return fmt.Errorf("the default ServiceAccount is not there yet (%v)", saErr)
	}
	return nil
}
