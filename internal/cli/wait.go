package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
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
			var notReady error
			err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
				notReady = clusterReady(ctx, path)
				return notReady == nil, nil
			})
			if err != nil {
				return fmt.Errorf("the cluster is not ready after %s: %v", c.Duration("timeout"), notReady)
			}
			return nil
		},
	}
}

// clusterReady says what is not ready yet, or nil.
func clusterReady(ctx context.Context, kubeconfig string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		// The server writes the kubeconfig once it is ready.
		return fmt.Errorf("no kubeconfig yet (%v)", err)
	}
	cfg.Timeout = 5 * time.Second
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil || string(body) != "ok" {
		return fmt.Errorf("the API at %s is not ready (%v)", cfg.Host, err)
	}
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	if len(nodes.Items) == 0 {
		return errors.New("no node has registered")
	}
	for _, n := range nodes.Items {
		ready := false
		for _, c := range n.Status.Conditions {
			ready = ready || c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
		}
		if !ready {
			return fmt.Errorf("node %s is not Ready", n.Name)
		}
	}
	// Pods are refused until the controller manager has made the
	// namespace's default ServiceAccount.
	if _, err := client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{}); err != nil {
		return fmt.Errorf("the default ServiceAccount is not there yet (%v)", err)
	}
	return nil
}
