package localstorage

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestParseClass(t *testing.T) {
	dir := "/var/lib/skiff/storage"
	for _, c := range []struct {
		params, ann map[string]string
		root        string
		hostPath    bool
		err         string
	}{
		{root: dir},
		{params: map[string]string{"nodePath": "/mnt/disk1"}, root: "/mnt/disk1"},
		{params: map[string]string{"nodePath": "/mnt/disk1/"}, root: "/mnt/disk1"},
		{params: map[string]string{"volumeType": "hostPath"}, root: dir, hostPath: true},
		{ann: map[string]string{"defaultVolumeType": "hostPath"}, root: dir, hostPath: true},
		{params: map[string]string{"nodePath": "/etc"}, err: `nodePath "/etc" must be an absolute path inside`},
		{params: map[string]string{"nodePath": "/mnt"}, err: `nodePath "/mnt" must be`},
		{params: map[string]string{"nodePath": "/mnt/../etc"}, err: `nodePath "/mnt/../etc" must be`},
		{params: map[string]string{"nodePath": "mnt/x"}, err: `must be an absolute path`},
		{params: map[string]string{"pathPattern": "x"}, err: `StorageClass parameter "pathPattern" is not one local-path knows: use nodePath or volumeType`},
		{params: map[string]string{"volumeType": "nfs"}, err: `volume type "nfs" is not one local-path knows: use local or hostPath`},
	} {
		got, err := parseClass(c.params, c.ann, dir)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("parseClass(%v, %v) = %v, want an error with %q", c.params, c.ann, err, c.err)
			}
			continue
		}
		if err != nil || got.root != c.root || got.hostPath != c.hostPath {
			t.Errorf("parseClass(%v, %v) = %+v, %v; want root %s hostPath %v", c.params, c.ann, got, err, c.root, c.hostPath)
		}
	}
}

func TestCheckClaim(t *testing.T) {
	block := v1.PersistentVolumeBlock
	for _, c := range []struct {
		modes []v1.PersistentVolumeAccessMode
		block bool
		err   string
	}{
		{modes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}},
		{modes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOncePod}},
		{modes: []v1.PersistentVolumeAccessMode{v1.ReadWriteMany}, err: "access mode ReadWriteMany is not supported; ask for ReadWriteOnce or ReadWriteOncePod"},
		{modes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}, block: true, err: "volumeMode Block is not supported; use volumeMode Filesystem"},
	} {
		claim := &v1.PersistentVolumeClaim{Spec: v1.PersistentVolumeClaimSpec{AccessModes: c.modes}}
		if c.block {
			claim.Spec.VolumeMode = &block
		}
		err := checkClaim(claim)
		if (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("checkClaim(%v, block %v) = %v, want %q", c.modes, c.block, err, c.err)
		}
	}
}

func TestOwnsDir(t *testing.T) {
	s := &Storage{cfg: Config{Dir: "/var/lib/skiff/storage"}}
	for path, ok := range map[string]bool{
		"/var/lib/skiff/storage/pvc-1_ns_data":        true,
		"/mnt/disk1/pvc-1_ns_data":                    true,
		"/var/lib/skiff/storage/pvc-2_ns_data":        false, // another volume's
		"/var/lib/skiff/storage/sub/pvc-1_ns_data":    false,
		"/etc/pvc-1_ns_data":                          false,
		"/var/lib/skiff/storage/../x/pvc-1_ns_data":   false,
		"/var/lib/skiff/storage":                      false,
		"":                                            false,
		"/mnt/pvc-1_ns_data":                          false, // /mnt itself is not a volume root
		"/var/lib/skiff/storage/pvc-1_ns_data/../etc": false,
	} {
		if err := s.ownsDir("pvc-1", path); (err == nil) != ok {
			t.Errorf("ownsDir(pvc-1, %q) = %v, want ok=%v", path, err, ok)
		}
	}
}

func TestNewRefusesADirUnderAFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o600)
	_, err := New(Config{NodeName: "n", Kubeconfig: "k", Dir: filepath.Join(file, "a", "b")})
	if err == nil || !strings.Contains(err.Error(), "("+file+" is not a directory)") {
		t.Errorf("New with a storage dir under a file: %v", err)
	}
	if _, err := New(Config{NodeName: "n", Kubeconfig: "k", Dir: filepath.Join(t.TempDir(), "new", "dir")}); err != nil {
		t.Errorf("New with a storage dir to make: %v", err)
	}
}

func topology(terms ...map[string][]string) []v1.TopologySelectorTerm {
	var out []v1.TopologySelectorTerm
	for _, t := range terms {
		var term v1.TopologySelectorTerm
		for k, vs := range t {
			term.MatchLabelExpressions = append(term.MatchLabelExpressions, v1.TopologySelectorLabelRequirement{Key: k, Values: vs})
		}
		out = append(out, term)
	}
	return out
}

func TestClassNode(t *testing.T) {
	for _, c := range []struct {
		what  string
		terms []v1.TopologySelectorTerm
		want  string
	}{
		{"none", nil, ""},
		{"one node", topology(map[string][]string{hostnameLabel: {"a"}}), "a"},
		{"one node and a zone", topology(map[string][]string{hostnameLabel: {"a"}, "topology.kubernetes.io/zone": {"z"}}), "a"},
		{"one node in two terms", topology(map[string][]string{hostnameLabel: {"a"}}, map[string][]string{hostnameLabel: {"a"}}), "a"},
		{"two nodes", topology(map[string][]string{hostnameLabel: {"a", "b"}}), ""},
		{"two nodes in two terms", topology(map[string][]string{hostnameLabel: {"a"}}, map[string][]string{hostnameLabel: {"b"}}), ""},
		{"a term without a node", topology(map[string][]string{hostnameLabel: {"a"}}, map[string][]string{"topology.kubernetes.io/zone": {"z"}}), ""},
		{"a zone only", topology(map[string][]string{"topology.kubernetes.io/zone": {"z"}}), ""},
	} {
		if got := classNode(&storagev1.StorageClass{AllowedTopologies: c.terms}); got != c.want {
			t.Errorf("%s: classNode = %q, want %q", c.what, got, c.want)
		}
	}
}

func node(name string, ready v1.ConditionStatus) v1.Node {
	n := v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if ready != "" {
		n.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeMemoryPressure, Status: v1.ConditionFalse}, {Type: v1.NodeReady, Status: ready}}
	}
	return n
}

func TestReporter(t *testing.T) {
	for _, c := range []struct {
		nodes []v1.Node
		want  string
	}{
		{nil, ""},
		{[]v1.Node{node("server", v1.ConditionTrue), node("agent", v1.ConditionTrue)}, "agent"},
		{[]v1.Node{node("server", v1.ConditionTrue), node("agent", v1.ConditionFalse)}, "server"},
		{[]v1.Node{node("server", v1.ConditionTrue), node("agent", v1.ConditionUnknown), node("b", "")}, "server"},
		{[]v1.Node{node("a", v1.ConditionFalse)}, ""},
	} {
		if got := reporter(c.nodes); got != c.want {
			t.Errorf("reporter(%v) = %q, want %q", c.nodes, got, c.want)
		}
	}
}

// TestShouldProvision: which node takes up a claim the scheduler placed on
// no node, on a cluster of a Ready "agent" and "server" and a NotReady
// "down": exactly one, or none when the claim is not local-path's to make.
func TestShouldProvision(t *testing.T) {
	cluster := []v1.Node{node("server", v1.ConditionTrue), node("agent", v1.ConditionTrue), node("down", v1.ConditionFalse)}
	immediate, wffc := storagev1.VolumeBindingImmediate, storagev1.VolumeBindingWaitForFirstConsumer
	class := func(provisioner string, mode *storagev1.VolumeBindingMode, terms []v1.TopologySelectorTerm) *storagev1.StorageClass {
		return &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Provisioner: provisioner, VolumeBindingMode: mode, AllowedTopologies: terms}
	}
	on := func(n string) []v1.TopologySelectorTerm { return topology(map[string][]string{hostnameLabel: {n}}) }
	for _, c := range []struct {
		what  string
		class *storagev1.StorageClass
		want  string // the node that takes it up, "" for none
	}{
		{"no class", nil, ""},
		{"another provisioner's class", class("example.com/nfs", &immediate, nil), ""},
		{"a class that waits for the scheduler", class(Provisioner, &wffc, on("server")), ""},
		{"Immediate, naming the server", class(Provisioner, &immediate, on("server")), "server"},
		{"Immediate by default, naming the agent", class(Provisioner, nil, on("agent")), "agent"},
		{"k3s's name, naming the server", class(k3sProvisioner, &immediate, on("server")), "server"},
		{"Immediate, naming a node that is down", class(Provisioner, &immediate, on("down")), "down"},
		{"Immediate, naming no node: the first Ready node refuses it", class(Provisioner, &immediate, nil), "agent"},
		{"Immediate, naming two nodes", class(Provisioner, &immediate, topology(map[string][]string{hostnameLabel: {"server", "agent"}})), "agent"},
		{"Immediate, naming a node not in the cluster", class(Provisioner, &immediate, on("typo")), "agent"},
	} {
		var took []string
		for _, n := range cluster {
			claim := &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: "ns"}}
			if shouldProvision(context.Background(), n.Name, claim, c.class, func(context.Context) ([]v1.Node, error) { return cluster, nil }) {
				took = append(took, n.Name)
			}
		}
		if want := []string{c.want}; (c.want == "" && len(took) != 0) || (c.want != "" && !slices.Equal(took, want)) {
			t.Errorf("%s: taken up by %v, want %q", c.what, took, c.want)
		}
	}
}

func TestClaimNode(t *testing.T) {
	class := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "fast"}}
	claim := &v1.PersistentVolumeClaim{}
	_, err := claimNode(claim, class)
	if err == nil || !strings.Contains(err.Error(), "StorageClass fast binds claims at once (volumeBindingMode Immediate) and its allowedTopologies name no single node") ||
		!strings.Contains(err.Error(), "use volumeBindingMode WaitForFirstConsumer, or name exactly one node in allowedTopologies") || strings.Contains(err.Error(), "\n") {
		t.Errorf("claimNode of a class naming no node: %v", err)
	}
	class.AllowedTopologies = topology(map[string][]string{hostnameLabel: {"agent"}})
	if n, err := claimNode(claim, class); n != "agent" || err != nil {
		t.Errorf("claimNode of a class naming agent: %q %v", n, err)
	}
	claim.Annotations = map[string]string{annSelectedNode: "server"}
	if n, err := claimNode(claim, class); n != "server" || err != nil {
		t.Errorf("claimNode of a claim the scheduler placed on server: %q %v", n, err)
	}
}
