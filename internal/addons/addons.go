// Package addons applies the manifests embedded in skiff (package manifests)
// with server-side apply at every server start, so that a newer skiff
// updates them and a user's deletion of a disabled one sticks.
package addons

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/template"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/component"
	"github.com/skiff-dev/skiff/internal/kubeconfig"
	"github.com/skiff-dev/skiff/manifests"
)

// FieldManager owns the fields skiff applies.
const FieldManager = "skiff"

// Disableable lists what --disable accepts: the optional manifests, the
// built-in load balancer controller, the HelmChart controller, the
// resource metrics API and the nodes' Ingress and Gateway API proxy.
var Disableable = []string{"dns", "helm-controller", "ingress", "local-storage", "metrics-server", "servicelb"}

// CheckDisable validates --disable's names.
func CheckDisable(names []string) error {
	for _, n := range names {
		if !slices.Contains(Disableable, n) {
			return fmt.Errorf("--disable %q is not something skiff can disable: pick from %s", n, strings.Join(Disableable, ", "))
		}
	}
	return nil
}

// Render returns the objects of every manifest not disabled, in file order.
func Render(v manifests.Values, disabled []string) ([]*unstructured.Unstructured, error) {
	files, err := fs.Glob(manifests.FS, "*.yaml")
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []*unstructured.Unstructured
	for _, f := range files {
		if slices.Contains(disabled, addon(f)) {
			continue
		}
		objs, err := renderFile(f, v)
		if err != nil {
			return nil, fmt.Errorf("manifest %s: %w", f, err)
		}
		out = append(out, objs...)
	}
	return out, nil
}

// addon is the add-on a manifest file belongs to: its name without
// .yaml, up to a "-crds" suffix (ingress-crds.yaml is ingress's).
func addon(file string) string {
	return strings.TrimSuffix(strings.TrimSuffix(path.Base(file), ".yaml"), "-crds")
}

func renderFile(name string, v manifests.Values) ([]*unstructured.Unstructured, error) {
	raw, err := manifests.FS.ReadFile(name)
	if err != nil {
		return nil, err
	}
	tmpl, err := template.New(name).Option("missingkey=error").Parse(string(raw))
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, v); err != nil {
		return nil, err
	}
	dec := yaml.NewYAMLOrJSONDecoder(&b, 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, err
		}
		if m == nil {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("an object without kind or name")
		}
		out = append(out, u)
	}
}

// Addons is the component that applies the manifests once the API server
// answers. It is ready when all are applied.
type Addons struct {
	kubeconfig string
	objects    []*unstructured.Unstructured
	component.Latch
}

// Config is the add-ons' settings.
type Config struct {
	// Kubeconfig is an admin's.
	Kubeconfig string
	// Values fill the manifests' templates.
	Values manifests.Values
	// Disabled names the manifests left out (--disable).
	Disabled []string
}

// New renders the manifests; an error here is a broken manifest.
func New(cfg Config) (*Addons, error) {
	objs, err := Render(cfg.Values, cfg.Disabled)
	if err != nil {
		return nil, err
	}
	return &Addons{kubeconfig: cfg.Kubeconfig, objects: objs}, nil
}

// Name implements component.Component.
func (a *Addons) Name() string { return "add-ons" }

// Run implements component.Component.
func (a *Addons) Run(ctx context.Context) error {
	cfg, err := kubeconfig.RESTConfig(a.kubeconfig)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	apply := func(u *unstructured.Unstructured) error {
		gvk := u.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			mapper.Reset()
			return err
		}
		_, err = dyn.Resource(m.Resource).Namespace(u.GetNamespace()).Apply(ctx, u.GetName(), u,
			metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
		return err
	}
	// The objects go in at once, those of a kind that one of the add-ons'
	// CRDs defines once the others are in: the API serves such a kind only
	// after its CRD.
	for _, batch := range splitByCRD(a.objects) {
		if err := applyAll(ctx, batch, apply); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	klog.V(1).InfoS("add-ons applied", "objects", len(a.objects))
	a.SetReady()
	<-ctx.Done()
	return nil
}

// applyWorkers is how many objects are applied at once.
const applyWorkers = 8

// applyAll applies objs at once, each retried for a while (the API server
// may still be installing its own defaults, or a CRD be not yet
// established) before start-up gives up on it.
func applyAll(ctx context.Context, objs []*unstructured.Unstructured, apply func(*unstructured.Unstructured) error) error {
	errs := make([]error, len(objs))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(applyWorkers, len(objs)) {
		wg.Go(func() {
			for i := range next {
				u := objs[i]
				var last error
				err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
					last = apply(u)
					return last == nil, nil
				})
				if err != nil {
					errs[i] = fmt.Errorf("applying %s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), last)
				}
			}
		})
	}
	for i := range objs {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// splitByCRD splits objs, keeping their order, into those of the kinds the
// API serves by itself (the CRDs among them) and those of a kind that one
// of the CRDs in objs defines.
func splitByCRD(objs []*unstructured.Unstructured) [][]*unstructured.Unstructured {
	defined := map[string]bool{}
	for _, u := range objs {
		if u.GetKind() != "CustomResourceDefinition" {
			continue
		}
		group, _, _ := unstructured.NestedString(u.Object, "spec", "group")
		kind, _, _ := unstructured.NestedString(u.Object, "spec", "names", "kind")
		defined[group+"/"+kind] = true
	}
	var builtin, custom []*unstructured.Unstructured
	for _, u := range objs {
		if gvk := u.GroupVersionKind(); defined[gvk.Group+"/"+gvk.Kind] {
			custom = append(custom, u)
		} else {
			builtin = append(builtin, u)
		}
	}
	return [][]*unstructured.Unstructured{builtin, custom}
}
