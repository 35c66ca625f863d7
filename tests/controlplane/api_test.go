package controlplane

import (
	"context"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/skiff-dev/skiff/tests/cluster"
)

func TestReadyzAndNamespaces(t *testing.T) {
	ctx := cluster.Context(t)
	body, err := srv.ClientT(t).Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil || string(body) != "ok" {
		t.Fatalf("/readyz: %q, %v", body, err)
	}
	out, err := srv.Kubectl(ctx, "", "get", "ns", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
		if !strings.Contains(out, "namespace/"+ns+"\n") {
			t.Errorf("kubectl get ns: %q lacks %s", out, ns)
		}
	}
}

func TestVersionReportsKubernetesRelease(t *testing.T) {
	v, err := srv.ClientT(t).Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v.GitVersion, "v1.37.") {
		t.Fatalf("server version %q, want v1.37.x", v.GitVersion)
	}
}

func TestDeploymentMakesPendingPods(t *testing.T) {
	ctx := cluster.Context(t)
	ns := srv.Namespace(t)
	_, err := srv.Kubectl(ctx, `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: `+ns+`}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: busybox}]
`, "apply", "-f", "-")
	if err != nil {
		t.Fatal(err)
	}
	cs := srv.ClientT(t)
	err = wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		rs, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil || len(rs.Items) != 1 {
			return false, err
		}
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: labels.Set{"app": "web"}.String()})
		if err != nil || len(pods.Items) != 3 {
			return false, err
		}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodPending || p.Spec.NodeName != "" {
				t.Fatalf("pod %s: phase %s on %q; with no node it must stay Pending", p.Name, p.Status.Phase, p.Spec.NodeName)
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("want 1 ReplicaSet and 3 Pods: %v", err)
	}
}

func TestCustomResource(t *testing.T) {
	ctx := cluster.Context(t)
	ns := srv.Namespace(t)
	_, err := srv.Kubectl(ctx, `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: boats.skiff.test}
spec:
  group: skiff.test
  scope: Namespaced
  names: {plural: boats, singular: boat, kind: Boat}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties: {length: {type: integer}}
`, "apply", "-f", "-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Kubectl(context.Background(), "", "delete", "crd", "boats.skiff.test") })
	if _, err := srv.Kubectl(ctx, "", "wait", "--for=condition=Established", "crd/boats.skiff.test", "--timeout=60s"); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Kubectl(ctx, "apiVersion: skiff.test/v1\nkind: Boat\nmetadata: {name: dinghy}\nspec: {length: 3}\n", "apply", "-n", ns, "-f", "-"); err != nil {
		t.Fatal(err)
	}
	out, err := srv.Kubectl(ctx, "", "get", "boat", "dinghy", "-n", ns, "-o", "jsonpath={.spec.length}")
	if err != nil || out != "3" {
		t.Fatalf("get boat: %q, %v", out, err)
	}
}

func TestJobAndCronJobAccepted(t *testing.T) {
	ctx := cluster.Context(t)
	ns := srv.Namespace(t)
	_, err := srv.Kubectl(ctx, `
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox, command: ["true"]}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: often}
spec:
  schedule: "*/5 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: c, image: busybox, command: ["true"]}]
`, "apply", "-n", ns, "-f", "-")
	if err != nil {
		t.Fatal(err)
	}
	cs := srv.ClientT(t)
	if _, err := cs.BatchV1().CronJobs(ns).Get(ctx, "often", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	// The job controller acts on the Job: it creates its pod.
	err = wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "job-name=once"})
		return err == nil && len(pods.Items) == 1, nil
	})
	if err != nil {
		t.Fatalf("job pod: %v", err)
	}
}

func TestServiceAccountRBAC(t *testing.T) {
	ctx := cluster.Context(t)
	ns := srv.Namespace(t)
	cs := srv.ClientT(t)
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "reader"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "reader", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := srv.Config()
	if err != nil {
		t.Fatal(err)
	}
	saCfg := rest.AnonymousClientConfig(cfg)
	saCfg.BearerToken = tok.Status.Token
	sa := kubernetes.NewForConfigOrDie(saCfg)

	if _, err := sa.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("listing secrets without a RoleBinding: got %v, want 403 Forbidden", err)
	}
	if _, err := cs.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "secret-reader"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"list"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "secret-reader"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "reader", Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// RBAC changes reach the authorizer through its informer: wait for it.
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := sa.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("listing secrets with a RoleBinding never succeeded")
	}
}

func TestAnonymousOnlyHealth(t *testing.T) {
	cfg, err := srv.Config()
	if err != nil {
		t.Fatal(err)
	}
	anon := kubernetes.NewForConfigOrDie(rest.AnonymousClientConfig(cfg))
	ctx := cluster.Context(t)
	if body, err := anon.Discovery().RESTClient().Get().AbsPath("/livez").DoRaw(ctx); err != nil || string(body) != "ok" {
		t.Fatalf("anonymous /livez: %q, %v", body, err)
	}
	if _, err := anon.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Fatalf("anonymous list namespaces: got %v, want 401", err)
	}
}
