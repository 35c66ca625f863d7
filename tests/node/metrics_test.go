package node

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	metricsclient "k8s.io/metrics/pkg/client/clientset/versioned"
	"k8s.io/utils/ptr"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// waitLong polls cond for up to limit.
func waitLong(t *testing.T, limit time.Duration, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, time.Second, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// TestResourceMetrics: the metrics API served in the server answers
// `kubectl top`, a metrics client, and drives a HorizontalPodAutoscaler.
func TestResourceMetrics(t *testing.T) {
	ns := srv.Namespace(t)
	cs := srv.ClientT(t)
	cfg, err := srv.Config()
	if err != nil {
		t.Fatal(err)
	}
	mc, err := metricsclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A pod whose figures `top pods` must show.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "measured"}, Spec: corev1.PodSpec{
		TerminationGracePeriodSeconds: ptr.To[int64](0),
		Containers:                    []corev1.Container{{Name: "c", Image: cluster.BusyboxImage, Command: []string{"sleep", "3600"}}},
	}}
	if _, err := cs.CoreV1().Pods(ns).Create(cluster.Context(t), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPod(t, ns, "measured", "running", running)

	cluster.Steps(t,
		cluster.Step{Name: "kubectl top nodes", Run: func(t *testing.T) {
			var out string
			waitLong(t, 90*time.Second, "`kubectl top nodes` to print the node's figures", func(ctx context.Context) (bool, error) {
				out, err = srv.Kubectl(ctx, "", "top", "nodes", "--no-headers")
				f := strings.Fields(out)
				return err == nil && len(f) >= 5 && strings.HasSuffix(f[1], "m") && strings.HasSuffix(f[3], "Mi"), nil
			})
			t.Logf("kubectl top nodes: %s", out)
		}},
		cluster.Step{Name: "kubectl top pods", Run: func(t *testing.T) {
			waitLong(t, 90*time.Second, "`kubectl top pods -A` to show the running pod", func(ctx context.Context) (bool, error) {
				out, err := srv.Kubectl(ctx, "", "top", "pods", "-A", "--no-headers")
				for _, l := range strings.Split(out, "\n") {
					if f := strings.Fields(l); err == nil && len(f) == 4 && f[0] == ns && f[1] == "measured" && strings.HasSuffix(f[3], "Mi") {
						return true, nil
					}
				}
				return false, nil
			})
		}},
		cluster.Step{Name: "metrics client", Run: func(t *testing.T) {
			nodes, err := mc.MetricsV1beta1().NodeMetricses().List(cluster.Context(t), metav1.ListOptions{})
			if err != nil || len(nodes.Items) != 1 || nodes.Items[0].Usage.Memory().IsZero() {
				t.Fatalf("NodeMetrics: %v %+v", err, nodes)
			}
			pods, err := mc.MetricsV1beta1().PodMetricses(ns).List(cluster.Context(t), metav1.ListOptions{})
			if err != nil || len(pods.Items) != 1 || pods.Items[0].Name != "measured" || len(pods.Items[0].Containers) != 1 {
				t.Fatalf("PodMetrics: %v %+v", err, pods)
			}
		}},
		cluster.Step{Name: "autoscaling", Run: func(t *testing.T) { testHPA(t, ns) }},
	)
}

// testHPA scales a Deployment whose pods burn CPU (until /tmp/stop exists)
// from 1 to 3 replicas, then back to 1 once the load stops.
func testHPA(t *testing.T, ns string) {
	cs := srv.ClientT(t)
	labels := map[string]string{"app": "burn"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "burn"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](0),
					Containers: []corev1.Container{{
						Name: "c", Image: cluster.BusyboxImage,
						Command: []string{"sh", "-c", "while [ ! -f /tmp/stop ]; do :; done; exec sleep 3600"},
						Resources: corev1.ResourceRequirements{
							Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m")},
							Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")},
						},
					}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(cluster.Context(t), dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "burn"},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "burn"},
			MinReplicas:    ptr.To[int32](1),
			MaxReplicas:    3,
			Metrics: []autoscalingv2.MetricSpec{{Type: autoscalingv2.ResourceMetricSourceType, Resource: &autoscalingv2.ResourceMetricSource{
				Name: corev1.ResourceCPU, Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr.To[int32](50)},
			}}},
			// Down as soon as the load is gone, for this HPA only.
			Behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{
				ScaleDown: &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: ptr.To[int32](0)},
			},
		},
	}
	if _, err := cs.AutoscalingV2().HorizontalPodAutoscalers(ns).Create(cluster.Context(t), hpa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	readyReplicas := func(n int32) func(ctx context.Context) (bool, error) {
		return func(ctx context.Context) (bool, error) {
			d, err := cs.AppsV1().Deployments(ns).Get(ctx, "burn", metav1.GetOptions{})
			return err == nil && d.Status.Replicas == n && d.Status.ReadyReplicas == n, nil
		}
	}
	status := func() string {
		h, _ := cs.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(context.Background(), "burn", metav1.GetOptions{})
		if h == nil {
			return ""
		}
		var cpu int32
		for _, m := range h.Status.CurrentMetrics {
			if m.Resource != nil && m.Resource.Current.AverageUtilization != nil {
				cpu = *m.Resource.Current.AverageUtilization
			}
		}
		return fmt.Sprintf("replicas %d, desired %d, CPU %d%% of requests", h.Status.CurrentReplicas, h.Status.DesiredReplicas, cpu)
	}
	waitLong(t, 3*time.Minute, "the HPA to scale the Deployment up to 3 under load", readyReplicas(3))
	t.Logf("scaled up: %s", status())

	pods, err := cs.CoreV1().Pods(ns).List(cluster.Context(t), metav1.ListOptions{LabelSelector: "app=burn"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		srv.KubectlT(t, "", "exec", "-n", ns, p.Name, "--", "touch", "/tmp/stop")
	}
	waitLong(t, 3*time.Minute, "the HPA to scale the Deployment back to 1 once the load stopped", readyReplicas(1))
	t.Logf("scaled down: %s", status())
}
