// Package helmchart keeps HelmChart objects (helm.cattle.io/v1, k3s's kind)
// installed as Helm releases, with Helm's Go SDK in the server's process:
// nothing is pulled and nothing runs as a Job. A HelmChart is installed,
// upgraded when its chart, values or options change (HelmChartConfig values
// of the same name merged over its own), and uninstalled when it is deleted
// (a finalizer holds it until then). Releases are Helm's own, stored as
// Secrets in the target namespace, so the helm CLI sees and can inspect
// them. With an external datastore one server does the work, by a Lease.
package helmchart

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/go-logr/logr"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/release/common"
	"helm.sh/helm/v4/pkg/storage/driver"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/kubeconfig"
	"github.com/skiff-dev/skiff/internal/leader"
)

// Finalizer holds a deleted HelmChart until its release is uninstalled.
const Finalizer = "helm.skiff.dev/uninstall"

// Config is the controller's settings.
type Config struct {
	// Kubeconfig is an admin's: charts install whatever they hold.
	Kubeconfig string
	// StaticDir holds charts for air-gapped hosts:
	// <data-dir>/server/static/charts.
	StaticDir string
	// CacheDir holds Helm's repository and discovery caches:
	// <data-dir>/server/helm.
	CacheDir string
	// LeaderElect: several servers share the cluster; one does the work.
	LeaderElect bool
	// Identity names this server in the Lease.
	Identity string
}

// Controller is the component that keeps HelmCharts installed.
type Controller struct {
	cfg    Config
	cs     kubernetes.Interface
	dyn    dynamic.Interface
	events record.EventRecorder
	config cache.GenericLister
	queue  workqueue.TypedRateLimitingInterface[string]
	log    *slog.Logger
}

// New checks the settings; it writes nothing.
func New(cfg Config) (*Controller, error) {
	if cfg.Kubeconfig == "" || cfg.StaticDir == "" || cfg.CacheDir == "" {
		return nil, errors.New("helmchart: a kubeconfig, a static charts dir and a cache dir are needed")
	}
	return &Controller{cfg: cfg}, nil
}

// Name implements component.Component.
func (c *Controller) Name() string { return "helm-controller" }

// Run implements component.Component.
func (c *Controller) Run(ctx context.Context) error {
	for _, d := range []string{c.cfg.StaticDir, c.cfg.CacheDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	rc, err := kubeconfig.RESTConfig(c.cfg.Kubeconfig)
	if err != nil {
		return err
	}
	if c.cs, err = kubernetes.NewForConfig(rc); err != nil {
		return err
	}
	if c.dyn, err = dynamic.NewForConfig(rc); err != nil {
		return err
	}
	// Helm logs through log/slog: its lines join the process's log as
	// helm's.
	c.log = slog.New(logr.ToSlogHandler(klog.Background().WithName("helm")))
	if !c.cfg.LeaderElect {
		return c.control(ctx)
	}
	return leader.Run(ctx, c.cs, "skiff-helm-controller", c.cfg.Identity, c.control)
}

// control watches the HelmCharts and their configs and works the queue
// until ctx ends.
func (c *Controller) control(ctx context.Context) error {
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.cs.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	c.events = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "skiff-helm-controller"})

	// Failures back off from 5 s to 5 minutes.
	c.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](5*time.Second, 5*time.Minute),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "helmcharts"})
	defer c.queue.ShutDown()
	// A resync now and then puts back a release someone uninstalled by
	// hand.
	factory := dynamicinformer.NewDynamicSharedInformerFactory(c.dyn, 10*time.Minute)
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(key)
		}
	}
	charts := factory.ForResource(ChartResource)
	charts.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, cur any) { enqueue(cur) },
	})
	configs := factory.ForResource(ConfigResource)
	configs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, cur any) { enqueue(cur) },
		DeleteFunc: enqueue,
	})
	c.config = configs.Lister()
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitFor(ctx, "", charts.Informer().HasSyncedChecker(), configs.Informer().HasSyncedChecker()) {
		return nil
	}
	klog.InfoS("watching HelmCharts", "staticCharts", c.cfg.StaticDir)
	// One release at a time: Helm's operations on a release must not
	// overlap, and a small board has little to spare.
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		for c.next(ctx) {
		}
	}, time.Second)
	<-ctx.Done()
	return nil
}

func (c *Controller) next(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	retry, err := c.sync(ctx, key)
	switch {
	case err != nil:
		utilruntime.HandleErrorWithContext(ctx, err, "syncing HelmChart", "key", key)
		c.queue.AddRateLimited(key)
	case retry:
		c.queue.AddRateLimited(key)
	default:
		c.queue.Forget(key)
	}
	return true
}

// sync brings one HelmChart's release to its spec. It returns retry when
// the attempt failed in a way recorded on the HelmChart (and worth trying
// again), err when the controller itself could not do its work.
func (c *Controller) sync(ctx context.Context, key string) (retry bool, err error) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return false, nil
	}
	// Read from the API, not the cache: a status the cache has not seen
	// yet would make a release look out of date and upgrade it twice.
	u, err := c.dyn.Resource(ChartResource).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var spec Spec
	var status Status
	if err := fromMap(u.Object["spec"], &spec); err != nil {
		return false, c.fail(ctx, u, &status, "", fmt.Errorf("spec: %w", err))
	}
	fromMap(u.Object["status"], &status)

	if u.GetDeletionTimestamp() != nil {
		if !slices.Contains(u.GetFinalizers(), Finalizer) {
			return false, nil
		}
		if err := c.uninstall(u, status.ReleaseNamespace, spec); err != nil {
			c.events.Eventf(u, corev1.EventTypeWarning, "UninstallFailed", "uninstalling release %s: %v", name, err)
			return false, err
		}
		c.events.Eventf(u, corev1.EventTypeNormal, "Uninstalled", "release %s uninstalled", name)
		u.SetFinalizers(slices.DeleteFunc(u.GetFinalizers(), func(f string) bool { return f == Finalizer }))
		_, err := c.dyn.Resource(ChartResource).Namespace(ns).Update(ctx, u, metav1.UpdateOptions{})
		return false, ignoreGone(err)
	}
	if !slices.Contains(u.GetFinalizers(), Finalizer) {
		u.SetFinalizers(append(u.GetFinalizers(), Finalizer))
		if u, err = c.dyn.Resource(ChartResource).Namespace(ns).Update(ctx, u, metav1.UpdateOptions{}); err != nil {
			return false, ignoreGone(err)
		}
	}

	var config ConfigSpec
	if cobj, err := c.config.ByNamespace(ns).Get(name); err == nil {
		if err := fromMap(cobj.(*unstructured.Unstructured).Object["spec"], &config); err != nil {
			return false, c.fail(ctx, u, &status, "", fmt.Errorf("HelmChartConfig %s: spec: %w", name, err))
		}
	}
	policy := spec.FailurePolicy
	if config.FailurePolicy != "" {
		policy = config.FailurePolicy
	}
	switch policy {
	case "", PolicyReinstall, PolicyAbort:
	default:
		return false, c.fail(ctx, u, &status, "", fmt.Errorf("failurePolicy %q: use %q or %q", policy, PolicyReinstall, PolicyAbort))
	}

	want, err := c.resolve(ctx, ns, spec, config)
	if err != nil {
		return true, c.fail(ctx, u, &status, "", err)
	}
	target := releaseNamespace(ns, spec)
	cfg, err := c.actions(target)
	if err != nil {
		return false, err
	}
	history, err := action.NewHistory(cfg).Run(name)
	if err != nil && !errors.Is(err, driver.ErrReleaseNotFound) {
		return false, err
	}
	if _, last, _ := latest(history); status.Digest == want.digest && meta.IsStatusConditionTrue(status.Conditions, Installed) &&
		last != nil && common.Status(last.Status()) == common.StatusDeployed {
		return false, nil
	}
	if status.Digest == want.digest && policy == PolicyAbort && meta.IsStatusConditionTrue(status.Conditions, Failed) {
		return false, nil // left as it failed until the HelmChart changes
	}
	if status.ReleaseNamespace != "" && status.ReleaseNamespace != target {
		if err := c.uninstall(u, status.ReleaseNamespace, spec); err != nil {
			return true, c.fail(ctx, u, &status, want.digest, fmt.Errorf("uninstalling the release from %s, the old target namespace: %w", status.ReleaseNamespace, err))
		}
	}
	revision, verb, err := c.release(ctx, cfg, history, name, target, spec, want)
	if err != nil {
		c.events.Eventf(u, corev1.EventTypeWarning, "Failed", "%s", err)
		return true, c.fail(ctx, u, &status, want.digest, err)
	}
	c.events.Eventf(u, corev1.EventTypeNormal, verb, "%s %s, revision %d", want.chartName, want.chartVersion, revision)
	klog.InfoS("helm release "+verb, "helmchart", klog.KRef(ns, name), "chart", want.chartName, "version", want.chartVersion, "namespace", target, "revision", revision)
	status.Revision, status.ChartVersion, status.ReleaseNamespace, status.Digest = revision, want.chartVersion, target, want.digest
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: Installed, Status: metav1.ConditionTrue, Reason: ReasonDeployed,
		Message: fmt.Sprintf("revision %d of %s %s", revision, want.chartName, want.chartVersion), ObservedGeneration: u.GetGeneration()})
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: Failed, Status: metav1.ConditionFalse, Reason: verb, ObservedGeneration: u.GetGeneration()})
	return false, c.writeStatus(ctx, u, status)
}

// fail records err on the HelmChart: Installed false, Failed true with
// err's message. It returns an error only if the status could not be
// written.
func (c *Controller) fail(ctx context.Context, u *unstructured.Unstructured, status *Status, digest string, err error) error {
	klog.ErrorS(err, "HelmChart failed", "helmchart", klog.KObj(u))
	if digest != "" {
		status.Digest = digest
	}
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: Installed, Status: metav1.ConditionFalse, Reason: ReasonFailed,
		Message: err.Error(), ObservedGeneration: u.GetGeneration()})
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: Failed, Status: metav1.ConditionTrue, Reason: ReasonFailed,
		Message: err.Error(), ObservedGeneration: u.GetGeneration()})
	return c.writeStatus(ctx, u, *status)
}

func (c *Controller) writeStatus(ctx context.Context, u *unstructured.Unstructured, status Status) error {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&status)
	if err != nil {
		return err
	}
	u.Object["status"] = m
	_, err = c.dyn.Resource(ChartResource).Namespace(u.GetNamespace()).UpdateStatus(ctx, u, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err // a conflict too: the HelmChart changed meanwhile; sync again
}

// releaseNamespace is where a HelmChart's release goes.
func releaseNamespace(ns string, spec Spec) string {
	if spec.TargetNamespace != "" {
		return spec.TargetNamespace
	}
	return ns
}

func fromMap(v any, into any) error {
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	return runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(m, into, false)
}

// ignoreGone: the object went while the controller worked on it.
func ignoreGone(err error) error {
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

// cacheDir is a dir of Helm's under the controller's cache dir.
func (c *Controller) cacheDir(name string) string { return filepath.Join(c.cfg.CacheDir, name) }
