package controlplane

import (
	"context"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"
	metricsclient "k8s.io/metrics/pkg/client/clientset/versioned"

	"github.com/skiff-dev/skiff/tests/cluster"
)

func aggregatorFor(t *testing.T, s *cluster.Server) *aggregator.Clientset {
	t.Helper()
	cfg, err := s.Config()
	if err != nil {
		t.Fatal(err)
	}
	agg, err := aggregator.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return agg
}

// TestMetricsAPI: a server serves metrics.k8s.io as an available aggregated
// API, even with no node to measure.
func TestMetricsAPI(t *testing.T) {
	agg := aggregatorFor(t, srv)
	cluster.WaitFor(t, "the metrics APIService to be Available", func(ctx context.Context) (bool, error) {
		a, err := agg.ApiregistrationV1().APIServices().Get(ctx, "v1beta1.metrics.k8s.io", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range a.Status.Conditions {
			if c.Type == apiregistrationv1.Available {
				return c.Status == apiregistrationv1.ConditionTrue, nil
			}
		}
		return false, nil
	})
	cfg, _ := srv.Config()
	mc, err := metricsclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := mc.MetricsV1beta1().NodeMetricses().List(cluster.Context(t), metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 0 {
		t.Fatalf("NodeMetrics of a cluster without nodes: %v %+v", err, nodes)
	}
}

// TestMetricsAPIDisabled: --disable metrics-server registers no APIService.
func TestMetricsAPIDisabled(t *testing.T) {
	s := cluster.StartT(t, "--disable", "metrics-server")
	agg := aggregatorFor(t, s)
	if _, err := agg.ApiregistrationV1().APIServices().Get(cluster.Context(t), "v1beta1.metrics.k8s.io", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the metrics APIService: %v, want not found", err)
	}
	cs := s.ClientT(t)
	if _, err := cs.RbacV1().ClusterRoles().Get(cluster.Context(t), "system:skiff:metrics-server", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the metrics API's role: %v, want not found", err)
	}
}
