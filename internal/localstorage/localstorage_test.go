package localstorage

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
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
