// Package deploy keeps the files of the server's manifests dir applied, as
// k3s users know it: every *.yaml, *.yml and *.json under
// <data-dir>/server/manifests is applied with server-side apply at start and
// whenever it changes (the dir is watched), a NAME.yaml.skip beside a file
// keeps it out, and each file is tracked by an Addon object (skiff.dev/v1, in
// kube-system) with its checksum and what it created: an edit prunes what
// the file no longer holds, and removing the file deletes what it created.
package deploy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/skiff-dev/skiff/internal/kubeconfig"
)

const (
	// FieldManager owns the fields the manifests dir applies.
	FieldManager = "skiff-deploy"
	// Namespace holds the Addon objects.
	Namespace = "kube-system"
	// managedLabel marks the Addons of the manifests dir.
	managedLabel = "skiff.dev/manifests-dir"
	// retryEvery: a file that could not be applied for a passing reason
	// (the API not ready, a CRD not yet established) is tried again.
	retryEvery = 5 * time.Second
)

var addonGVR = schema.GroupVersionResource{Group: "skiff.dev", Version: "v1", Resource: "addons"}

// Config is the manifests dir's settings.
type Config struct {
	// Dir is the manifests dir, <data-dir>/server/manifests.
	Dir string
	// Kubeconfig is an admin's.
	Kubeconfig string
}

// Deploy is the component that keeps the manifests dir applied.
type Deploy struct {
	cfg    Config
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
	events record.EventRecorder
	// failed is each failing file's last reason, logged once.
	failed map[string]string
}

// New checks the settings; it writes nothing.
func New(cfg Config) (*Deploy, error) {
	if cfg.Dir == "" || cfg.Kubeconfig == "" {
		return nil, errors.New("deploy: a manifests dir and a kubeconfig are needed")
	}
	return &Deploy{cfg: cfg, failed: map[string]string{}}, nil
}

// Name implements component.Component.
func (d *Deploy) Name() string { return "deploy" }

// Run implements component.Component.
func (d *Deploy) Run(ctx context.Context) error {
	if err := os.MkdirAll(d.cfg.Dir, 0o700); err != nil {
		return err
	}
	rc, err := kubeconfig.RESTConfig(d.cfg.Kubeconfig)
	if err != nil {
		return err
	}
	if d.dyn, err = dynamic.NewForConfig(rc); err != nil {
		return err
	}
	disc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		return err
	}
	d.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	d.events = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "skiff-deploy"})

	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	// Changes come in bursts (an editor's write and rename): one sync
	// after the burst.
	var settle <-chan time.Time
	var retry <-chan time.Time
	sync := func() {
		d.watchDirs(w)
		if d.sync(ctx) {
			retry = time.After(retryEvery)
		}
	}
	sync()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.Events:
			settle = time.After(200 * time.Millisecond)
		case err := <-w.Errors:
			klog.ErrorS(err, "watching the manifests dir", "dir", d.cfg.Dir)
		case <-settle:
			settle = nil
			sync()
		case <-retry:
			retry = nil
			sync()
		}
	}
}

// watchDirs watches the dir and every dir below it.
func (d *Deploy) watchDirs(w *fsnotify.Watcher) {
	filepath.WalkDir(d.cfg.Dir, func(path string, e fs.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			w.Add(path)
		}
		return nil
	})
}

// file is one manifest file found in the dir.
type file struct {
	rel, path string
}

// files lists the manifest files, without those a .skip file keeps out.
func (d *Deploy) files() (files []file, skipped map[string]bool) {
	skipped = map[string]bool{}
	filepath.WalkDir(d.cfg.Dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(d.cfg.Dir, path)
		switch strings.ToLower(filepath.Ext(path)) {
		case ".yaml", ".yml", ".json":
			if _, err := os.Stat(path + ".skip"); err == nil {
				skipped[addonName(rel)] = true
				return nil
			}
			files = append(files, file{rel: rel, path: path})
		}
		return nil
	})
	sort.Slice(files, func(i, j int) bool { return files[i].rel < files[j].rel })
	return files, skipped
}

var notName = regexp.MustCompile(`[^a-z0-9-]+`)

// addonName is the Addon of a file: its path without extension, as a name
// (traefik.yaml is the Addon traefik, as in k3s).
func addonName(rel string) string {
	n := strings.TrimSuffix(rel, filepath.Ext(rel))
	n = strings.Trim(notName.ReplaceAllString(strings.ToLower(n), "-"), "-")
	if n == "" {
		n = "manifest"
	}
	if len(n) > 63 {
		sum := sha256.Sum256([]byte(rel))
		n = strings.Trim(n[:50], "-") + "-" + hex.EncodeToString(sum[:])[:8]
	}
	return n
}

// sync applies changed files and deletes what removed files made. It says
// whether something should be tried again later.
func (d *Deploy) sync(ctx context.Context) (again bool) {
	addons, err := d.dyn.Resource(addonGVR).Namespace(Namespace).List(ctx, metav1.ListOptions{LabelSelector: managedLabel + "=true"})
	if err != nil {
		klog.V(1).InfoS("the Addon objects are not listed yet; trying again", "err", err)
		return true
	}
	existing := map[string]*unstructured.Unstructured{}
	for i := range addons.Items {
		existing[addons.Items[i].GetName()] = &addons.Items[i]
	}
	files, skipped := d.files()
	seen := map[string]bool{}
	for _, f := range files {
		name := addonName(f.rel)
		seen[name] = true
		data, err := os.ReadFile(f.path)
		if err != nil {
			klog.ErrorS(err, "cannot read a manifest", "file", f.path)
			continue
		}
		sum := sha256.Sum256(data)
		checksum := hex.EncodeToString(sum[:])
		old := existing[name]
		if old != nil {
			if c, _, _ := unstructured.NestedString(old.Object, "spec", "checksum"); c == checksum {
				continue
			}
		}
		retry, err := d.apply(ctx, f, name, data, checksum, old)
		if err == nil {
			delete(d.failed, name)
			continue
		}
		again = again || retry
		// Once per reason: a file tried again fails the same way.
		if d.failed[name] != err.Error() {
			d.failed[name] = err.Error()
			klog.ErrorS(nil, "a manifest is not applied; its objects stay as they were", "file", f.path, "reason", err.Error(), "tryingAgain", retry)
			d.event(name, corev1.EventTypeWarning, "NotApplied", "%s: %v", f.rel, err)
		}
	}
	for name, a := range existing {
		if seen[name] || skipped[name] {
			continue
		}
		if err := d.remove(ctx, a); err != nil {
			klog.ErrorS(err, "deleting what a removed manifest made", "addon", name)
			again = true
		}
	}
	return again
}

// object is one object of a file, with the line it starts on.
type object struct {
	u    *unstructured.Unstructured
	line int
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// parse splits a file into its objects; an error names the line.
func parse(data []byte) ([]object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []object
	line := 1
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", line, err)
		}
		start := line
		// The next document starts after this one and its "---" line.
		line += bytes.Count(doc, []byte("\n")) + 1
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			msg := err.Error()
			if m := yamlLine.FindStringSubmatch(msg); m != nil {
				n, _ := strconv.Atoi(m[1])
				return nil, fmt.Errorf("line %d: not valid YAML: %s", start+n-1, strings.TrimPrefix(msg[strings.Index(msg, m[0])+len(m[0]):], ": "))
			}
			return nil, fmt.Errorf("line %d: not valid YAML: %s", start, msg)
		}
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(js); err != nil {
			return nil, fmt.Errorf("line %d: %v", start, err)
		}
		if u.GetName() == "" {
			return nil, fmt.Errorf("line %d: the %s has no metadata.name", start, u.GetKind())
		}
		out = append(out, object{u: u, line: start})
	}
}

type ref struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
}

func (r ref) String() string { return strings.Trim(r.Kind+" "+r.Namespace+"/"+r.Name, " /") }

// apply applies the objects of one file, prunes what it no longer holds,
// and records them in its Addon. retry says the failure may pass by itself.
func (d *Deploy) apply(ctx context.Context, f file, name string, data []byte, checksum string, old *unstructured.Unstructured) (retry bool, err error) {
	objs, err := parse(data)
	if err != nil {
		return false, err
	}
	type mapped struct {
		object
		gvr        schema.GroupVersionResource
		namespaced bool
	}
	var all []mapped
	for _, o := range objs {
		gvk := o.u.GroupVersionKind()
		m, err := d.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if meta.IsNoMatchError(err) {
			d.mapper.Reset()
			if m, err = d.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); meta.IsNoMatchError(err) {
				// A CRD in the same file or another may not be
				// established yet: tried again, and named meanwhile.
				return true, fmt.Errorf("line %d: unknown kind %s %s", o.line, o.u.GetAPIVersion(), o.u.GetKind())
			}
		}
		if err != nil {
			return true, err
		}
		namespaced := m.Scope.Name() == meta.RESTScopeNameNamespace
		if namespaced && o.u.GetNamespace() == "" {
			o.u.SetNamespace(corev1.NamespaceDefault)
		}
		if !namespaced {
			o.u.SetNamespace("")
		}
		all = append(all, mapped{o, m.Resource, namespaced})
	}
	var refs []ref
	for _, o := range all {
		_, err := d.dyn.Resource(o.gvr).Namespace(o.u.GetNamespace()).Apply(ctx, o.u.GetName(), o.u, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
		if err != nil {
			if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) {
				return false, fmt.Errorf("line %d: %v", o.line, err)
			}
			return true, fmt.Errorf("line %d: %v", o.line, err)
		}
		refs = append(refs, ref{o.u.GetAPIVersion(), o.u.GetKind(), o.u.GetNamespace(), o.u.GetName()})
	}
	// Prune what the file held before and holds no more.
	if old != nil {
		now := map[ref]bool{}
		for _, r := range refs {
			now[r] = true
		}
		for _, r := range recorded(old) {
			if !now[r] {
				if err := d.delete(ctx, r); err != nil {
					return true, err
				}
			}
		}
	}
	addon := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "skiff.dev/v1", "kind": "Addon",
		"metadata": map[string]any{"name": name, "namespace": Namespace, "labels": map[string]any{managedLabel: "true"}},
		"spec":     map[string]any{"source": f.rel, "checksum": checksum},
		"status":   map[string]any{"count": int64(len(refs)), "objects": refsToList(refs)},
	}}
	if _, err := d.dyn.Resource(addonGVR).Namespace(Namespace).Apply(ctx, name, addon, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
		return true, err
	}
	klog.InfoS("manifest applied", "file", f.path, "objects", len(refs))
	d.event(name, corev1.EventTypeNormal, "Applied", "%s: %d objects applied", f.rel, len(refs))
	return false, nil
}

func refsToList(refs []ref) []any {
	out := make([]any, 0, len(refs))
	for _, r := range refs {
		m := map[string]any{"apiVersion": r.APIVersion, "kind": r.Kind, "name": r.Name}
		if r.Namespace != "" {
			m["namespace"] = r.Namespace
		}
		out = append(out, m)
	}
	return out
}

// recorded is what an Addon says its file created.
func recorded(a *unstructured.Unstructured) []ref {
	list, _, _ := unstructured.NestedSlice(a.Object, "status", "objects")
	var out []ref
	for _, item := range list {
		m, ok := item.(map[string]any)
		if !ok {
			continue
		}
		s := func(k string) string { v, _ := m[k].(string); return v }
		out = append(out, ref{s("apiVersion"), s("kind"), s("namespace"), s("name")})
	}
	return out
}

// delete deletes one object a file made; one already gone is fine.
func (d *Deploy) delete(ctx context.Context, r ref) error {
	gv, err := schema.ParseGroupVersion(r.APIVersion)
	if err != nil {
		return nil
	}
	m, err := d.mapper.RESTMapping(gv.WithKind(r.Kind).GroupKind(), gv.Version)
	if meta.IsNoMatchError(err) {
		return nil // its kind is gone, and it with it
	}
	if err != nil {
		return err
	}
	err = d.dyn.Resource(m.Resource).Namespace(r.Namespace).Delete(ctx, r.Name, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	klog.InfoS("deleted what a manifest no longer holds", "object", r.String())
	return nil
}

// remove deletes what a removed file made, then its Addon.
func (d *Deploy) remove(ctx context.Context, a *unstructured.Unstructured) error {
	refs := recorded(a)
	for i := len(refs) - 1; i >= 0; i-- {
		if err := d.delete(ctx, refs[i]); err != nil {
			return err
		}
	}
	err := d.dyn.Resource(addonGVR).Namespace(Namespace).Delete(ctx, a.GetName(), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	klog.InfoS("manifest removed: deleted what it made", "addon", a.GetName(), "objects", len(refs))
	return nil
}

func (d *Deploy) event(addon, kind, reason, format string, args ...any) {
	d.events.Eventf(&corev1.ObjectReference{APIVersion: "skiff.dev/v1", Kind: "Addon", Namespace: Namespace, Name: addon}, kind, reason, format, args...)
}
