// Package localstorage provisions persistent volumes on the node's own disk:
// the `local-path` StorageClass, in the node process, with no helper pod and
// no image. Every node runs it and is the owner of its volumes: it
// provisions only the claims the scheduler placed on it (or, for a class
// that binds at once, the claims of a class whose allowedTopologies name
// it) and deletes only the volumes pinned to it, so no leader election is
// needed.
//
// It is upstream's sig-storage-lib-external-provisioner controller with a
// Provisioner of our own: a claim becomes a directory
// <root>/<pv-name>_<namespace>_<claim> and a PersistentVolume of type local
// (or hostPath) pinned to the node by kubernetes.io/hostname.
package localstorage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"

	"github.com/skiff-dev/skiff/internal/kubeconfig"
)

const (
	// Provisioner is the StorageClass provisioner name skiff serves.
	Provisioner = "skiff.dev/local-path"
	// k3sProvisioner is k3s's name, served too so that StorageClasses
	// carried over from k3s work unchanged.
	k3sProvisioner = "rancher.io/local-path"

	// Parameters a StorageClass may set.
	paramNodePath   = "nodePath"   // the root of the class's volumes
	paramVolumeType = "volumeType" // local (the default) or hostPath
	// annVolumeType is k3s's StorageClass annotation for the same.
	annVolumeType = "defaultVolumeType"

	hostnameLabel = "kubernetes.io/hostname"
	// annSelectedNode is the node the scheduler placed a claim's first
	// pod on (WaitForFirstConsumer classes).
	annSelectedNode = "volume.kubernetes.io/selected-node"
)

// AllowedRoots are where a StorageClass's nodePath may lie, beside the
// node's storage dir: where a second disk is mounted on a small board.
var AllowedRoots = []string{"/mnt", "/media", "/srv"}

// Config is the component's settings.
type Config struct {
	NodeName   string
	Kubeconfig string
	// Dir is the default storage dir, the root of volumes of classes that
	// name no nodePath.
	Dir string
}

// Storage is the local volume component.
type Storage struct {
	cfg Config
	// class returns the StorageClass of a name, or nil; nodes lists the
	// cluster's nodes. Both are set when the component runs.
	class func(name string) *storagev1.StorageClass
	nodes func(ctx context.Context) ([]v1.Node, error)
}

// New returns the component. It writes nothing: the storage dir is made
// when it runs.
func New(cfg Config) (*Storage, error) {
	if cfg.NodeName == "" || cfg.Kubeconfig == "" {
		return nil, fmt.Errorf("local storage: a node name and a kubeconfig are needed")
	}
	if !filepath.IsAbs(cfg.Dir) {
		return nil, fmt.Errorf("--default-local-storage-path %q is not an absolute path: give one such as /mnt/disk1/skiff", cfg.Dir)
	}
	cfg.Dir = filepath.Clean(cfg.Dir)
	if blocker := notADir(cfg.Dir); blocker != "" {
		return nil, fmt.Errorf("the local storage dir %s cannot be created (%s is not a directory): pick another with --default-local-storage-path, or --disable local-storage", cfg.Dir, blocker)
	}
	return &Storage{cfg: cfg}, nil
}

// notADir returns the first existing path of dir and its parents, when it
// is not a directory: what would keep dir from being made.
func notADir(dir string) string {
	for p := dir; ; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err == nil {
			if !fi.IsDir() {
				return p
			}
			return ""
		}
		if p == filepath.Dir(p) {
			return ""
		}
	}
}

// Name implements component.Component.
func (s *Storage) Name() string { return "local-storage" }

// Run implements component.Component.
func (s *Storage) Run(ctx context.Context) error {
	if err := os.MkdirAll(s.cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("the local storage dir %s cannot be created (%v): pick another with --default-local-storage-path, or --disable local-storage", s.cfg.Dir, unwrap(err))
	}
	client, err := kubeconfig.Client(s.cfg.Kubeconfig)
	if err != nil {
		return err
	}
	// The classes informer is shared with the controller: ShouldProvision
	// reads a claim's class from it.
	factory := informers.NewSharedInformerFactory(client, 0)
	classes := factory.Storage().V1().StorageClasses()
	classInformer := classes.Informer()
	s.class = func(name string) *storagev1.StorageClass {
		c, err := classes.Lister().Get(name)
		if err != nil {
			return nil
		}
		return c
	}
	// Nodes are listed only for an unbound claim of a class that binds at
	// once and does not name this node (rare): from the API server's cache,
	// not through a watch every node would keep.
	s.nodes = func(ctx context.Context) ([]v1.Node, error) {
		l, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err != nil {
			return nil, err
		}
		return l.Items, nil
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	pc := controller.NewProvisionController(ctx, client, Provisioner, s,
		controller.AdditionalProvisionerNames([]string{k3sProvisioner}),
		controller.ClassesInformer(classInformer),
		// The node owns its volumes: no other node competes for them.
		controller.LeaderElection(false),
		controller.MetricsPort(0),
		controller.Threadiness(2),
	)
	pc.Run(ctx)
	return nil
}

// ShouldProvision implements controller.Qualifier: the claims the
// scheduler placed on this node, and claims of classes that bind at once
// which this node is to provision or to refuse (see shouldProvision).
func (s *Storage) ShouldProvision(ctx context.Context, claim *v1.PersistentVolumeClaim) bool {
	if sel := claim.Annotations[annSelectedNode]; sel != "" {
		return sel == s.cfg.NodeName
	}
	return shouldProvision(ctx, s.cfg.NodeName, claim, s.class(claimClass(claim)), s.nodes)
}

// shouldProvision says whether node is to take up claim (which the
// scheduler placed on no node) of class: the class binds at once (Immediate)
// and is either served by node alone (its allowedTopologies name it, see
// classNode), or names no node of the cluster and node is the one that
// says so (see reporter).
func shouldProvision(ctx context.Context, node string, claim *v1.PersistentVolumeClaim, class *storagev1.StorageClass, nodes func(context.Context) ([]v1.Node, error)) bool {
	if class == nil || (class.Provisioner != Provisioner && class.Provisioner != k3sProvisioner) {
		return false
	}
	if class.VolumeBindingMode != nil && *class.VolumeBindingMode == storagev1.VolumeBindingWaitForFirstConsumer {
		return false // the scheduler picks the node
	}
	owner := classNode(class)
	if owner == node {
		return true
	}
	all, err := nodes(ctx)
	if err != nil {
		klog.ErrorS(err, "listing nodes for a claim of a class that binds at once", "claim", klog.KObj(claim), "storageClass", class.Name)
		return false
	}
	if reporter(all) != node {
		return false
	}
	// No node can take it, or the node it names is not in the cluster:
	// Provision says what to fix.
	return owner == "" || !slices.ContainsFunc(all, func(n v1.Node) bool { return n.Name == owner })
}

// reporter is the node that refuses a claim no node can provision (its
// class binds at once and names no single node, or a node the cluster
// lacks), so that the claim gets one event that says what to fix, not one
// from every node. With no leader election, each node picks it on its own
// from the same list: the Ready node whose name sorts first. Names are
// unique and stay across restarts; Ready, so that a node that is down does
// not swallow the event. While a node's readiness changes two nodes may
// briefly disagree: at worst the event comes twice, or at the next resync.
func reporter(nodes []v1.Node) string {
	first := ""
	for _, n := range nodes {
		if ready(n) && (first == "" || n.Name < first) {
			first = n.Name
		}
	}
	return first
}

func ready(n v1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// classNode is the one node a class's allowedTopologies name by
// kubernetes.io/hostname, or "" when they name none or several: every term
// must name the node (a term without it allows any node).
func classNode(class *storagev1.StorageClass) string {
	node := ""
	for _, t := range class.AllowedTopologies {
		named := false
		for _, e := range t.MatchLabelExpressions {
			if e.Key != hostnameLabel {
				continue
			}
			if len(e.Values) != 1 || named || (node != "" && e.Values[0] != node) {
				return ""
			}
			node, named = e.Values[0], true
		}
		if !named {
			return ""
		}
	}
	return node
}

// claimClass is the name of a claim's StorageClass.
func claimClass(claim *v1.PersistentVolumeClaim) string {
	if c, ok := claim.Annotations[v1.BetaStorageClassAnnotation]; ok {
		return c
	}
	if claim.Spec.StorageClassName != nil {
		return *claim.Spec.StorageClassName
	}
	return ""
}

// claimNode is the node claim of class is to be provisioned on: the
// scheduler's choice, else the node the class names; else an error that
// says what to fix.
func claimNode(claim *v1.PersistentVolumeClaim, class *storagev1.StorageClass) (string, error) {
	if sel := claim.Annotations[annSelectedNode]; sel != "" {
		return sel, nil
	}
	if node := classNode(class); node != "" {
		return node, nil
	}
	return "", fmt.Errorf("StorageClass %s binds claims at once (volumeBindingMode Immediate) and its allowedTopologies name no single node, but a local-path volume lives on one node: use volumeBindingMode WaitForFirstConsumer, or name exactly one node in allowedTopologies (key %s, one value)", class.Name, hostnameLabel)
}

// ShouldDelete implements controller.DeletionGuard: only the volumes pinned
// to this node.
func (s *Storage) ShouldDelete(_ context.Context, pv *v1.PersistentVolume) bool {
	return pinnedTo(pv) == s.cfg.NodeName
}

// SupportsBlock implements controller.BlockProvisioner. Block claims reach
// Provision, which refuses them with a message that says what to do.
func (s *Storage) SupportsBlock(context.Context) bool { return true }

// Provision implements controller.Provisioner.
func (s *Storage) Provision(_ context.Context, o controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	claim := o.PVC
	node, err := claimNode(claim, o.StorageClass)
	if err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	if node != s.cfg.NodeName {
		// shouldProvision lets a node take up a claim the class pins to
		// another node only to say that the cluster has no such node.
		return nil, controller.ProvisioningFinished, fmt.Errorf("StorageClass %s's allowedTopologies name node %s, which is not a node of this cluster: name one that is (kubectl get nodes)", o.StorageClass.Name, node)
	}
	if err := checkClaim(claim); err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	class, err := parseClass(o.StorageClass.Parameters, o.StorageClass.Annotations, s.cfg.Dir)
	if err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	dir := filepath.Join(class.root, fmt.Sprintf("%s_%s_%s", o.PVName, claim.Namespace, claim.Name))
	if err := os.MkdirAll(class.root, 0o755); err != nil {
		return nil, controller.ProvisioningFinished, fmt.Errorf("the volume root %s on node %s cannot be created (%v): fix it on the node, or give the StorageClass another %s", class.root, s.cfg.NodeName, unwrap(err), paramNodePath)
	}
	// Pods run as any user: the volume is theirs to write, as k3s's are.
	if err := os.Mkdir(dir, 0o777); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, controller.ProvisioningFinished, fmt.Errorf("the volume dir %s on node %s cannot be created (%v): check that %s is writable", dir, s.cfg.NodeName, unwrap(err), class.root)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		os.Remove(dir)
		return nil, controller.ProvisioningFinished, err
	}
	klog.InfoS("volume provisioned", "pv", o.PVName, "claim", klog.KObj(claim), "path", dir)
	return volume(o, s.cfg.NodeName, dir, class.hostPath), controller.ProvisioningFinished, nil
}

// Delete implements controller.Provisioner: it removes the volume's
// directory, once it is found to be one this provisioner made.
func (s *Storage) Delete(_ context.Context, pv *v1.PersistentVolume) error {
	if pinnedTo(pv) != s.cfg.NodeName {
		return &controller.IgnoredError{Reason: "the volume is not on this node"}
	}
	path := volumePath(pv)
	if err := s.ownsDir(pv.Name, path); err != nil {
		return err
	}
	if err := os.RemoveAll(path); err != nil {
		return fmt.Errorf("removing %s on node %s: %w", path, s.cfg.NodeName, err)
	}
	klog.InfoS("volume deleted", "pv", pv.Name, "path", path)
	return nil
}

// ownsDir refuses to delete a path that is not a volume dir of this
// provisioner: <allowed root>/<pv name>_..., with nothing between.
func (s *Storage) ownsDir(pvName, path string) error {
	clean := filepath.Clean(path)
	if clean != path || !filepath.IsAbs(path) || !strings.HasPrefix(filepath.Base(path), pvName+"_") || !s.allowedRoot(filepath.Dir(path)) {
		return fmt.Errorf("volume %s's path %q is not a dir this node's local storage made (%s/%s_...): delete it by hand if it should go", pvName, path, s.cfg.Dir, pvName)
	}
	return nil
}

// allowedRoot says whether root may hold volumes: the storage dir, or a dir
// inside an allowed root.
func (s *Storage) allowedRoot(root string) bool {
	return root == s.cfg.Dir || inside(root, AllowedRoots)
}

// checkClaim refuses what a directory on one node cannot give.
func checkClaim(claim *v1.PersistentVolumeClaim) error {
	if claim.Spec.VolumeMode != nil && *claim.Spec.VolumeMode == v1.PersistentVolumeBlock {
		return errors.New("local-path volumes are directories: volumeMode Block is not supported; use volumeMode Filesystem (the default)")
	}
	for _, m := range claim.Spec.AccessModes {
		if m != v1.ReadWriteOnce && m != v1.ReadWriteOncePod {
			return fmt.Errorf("local-path volumes live on one node: access mode %s is not supported; ask for ReadWriteOnce or ReadWriteOncePod", m)
		}
	}
	return nil
}

// class is what a StorageClass's parameters ask for.
type class struct {
	root     string
	hostPath bool
}

// parseClass reads a StorageClass's parameters (and k3s's volume type
// annotation); an unknown parameter or a root outside the allowed ones is
// refused.
func parseClass(params, annotations map[string]string, dir string) (class, error) {
	c := class{root: dir}
	vt := annotations[annVolumeType]
	for k, v := range params {
		switch k {
		case paramNodePath:
			root := filepath.Clean(v)
			if !filepath.IsAbs(v) || root != strings.TrimSuffix(v, "/") || !(root == dir || inside(root, AllowedRoots)) {
				return c, fmt.Errorf("StorageClass parameter %s %q must be an absolute path inside %s or %s: pick one there, such as /mnt/disk1", paramNodePath, v, dir, strings.Join(AllowedRoots, ", "))
			}
			c.root = root
		case paramVolumeType:
			vt = v
		default:
			return c, fmt.Errorf("StorageClass parameter %q is not one local-path knows: use %s or %s", k, paramNodePath, paramVolumeType)
		}
	}
	switch strings.ToLower(vt) {
	case "", "local":
	case "hostpath":
		c.hostPath = true
	default:
		return c, fmt.Errorf("StorageClass volume type %q is not one local-path knows: use local or hostPath", vt)
	}
	return c, nil
}

// inside says whether path lies strictly inside one of roots.
func inside(path string, roots []string) bool {
	return slices.ContainsFunc(roots, func(r string) bool {
		rel, err := filepath.Rel(r, path)
		return err == nil && rel != "." && !strings.HasPrefix(rel, "..") && !filepath.IsAbs(rel)
	})
}

// volume is the PersistentVolume of dir on node.
func volume(o controller.ProvisionOptions, node, dir string, hostPath bool) *v1.PersistentVolume {
	claim := o.PVC
	fs := v1.PersistentVolumeFilesystem
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: o.PVName},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: reclaimPolicy(o.StorageClass.ReclaimPolicy),
			AccessModes:                   claim.Spec.AccessModes,
			VolumeMode:                    &fs,
			// Capacity is recorded, not enforced: a directory has no size.
			Capacity:     v1.ResourceList{v1.ResourceStorage: claim.Spec.Resources.Requests[v1.ResourceStorage]},
			MountOptions: o.StorageClass.MountOptions,
			NodeAffinity: &v1.VolumeNodeAffinity{Required: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{
				MatchExpressions: []v1.NodeSelectorRequirement{{Key: hostnameLabel, Operator: v1.NodeSelectorOpIn, Values: []string{node}}},
			}}}},
		},
	}
	if hostPath {
		t := v1.HostPathDirectoryOrCreate
		pv.Spec.HostPath = &v1.HostPathVolumeSource{Path: dir, Type: &t}
	} else {
		pv.Spec.Local = &v1.LocalVolumeSource{Path: dir}
	}
	return pv
}

// reclaimPolicy is the class's, Delete by default as the API server sets it.
func reclaimPolicy(p *v1.PersistentVolumeReclaimPolicy) v1.PersistentVolumeReclaimPolicy {
	if p == nil {
		return v1.PersistentVolumeReclaimDelete
	}
	return *p
}

// pinnedTo is the node a volume's node affinity names, if it names one.
func pinnedTo(pv *v1.PersistentVolume) string {
	if pv.Spec.NodeAffinity == nil || pv.Spec.NodeAffinity.Required == nil {
		return ""
	}
	for _, t := range pv.Spec.NodeAffinity.Required.NodeSelectorTerms {
		for _, e := range t.MatchExpressions {
			if e.Key == hostnameLabel && e.Operator == v1.NodeSelectorOpIn && len(e.Values) == 1 {
				return e.Values[0]
			}
		}
	}
	return ""
}

func volumePath(pv *v1.PersistentVolume) string {
	switch {
	case pv.Spec.Local != nil:
		return pv.Spec.Local.Path
	case pv.Spec.HostPath != nil:
		return pv.Spec.HostPath.Path
	}
	return ""
}

func unwrap(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
