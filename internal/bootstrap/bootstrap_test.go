package bootstrap

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

var names = []string{"server-ca.crt", "server-ca.key", "service.key"}

func sample() map[string][]byte {
	files := map[string][]byte{}
	for _, name := range names {
		files[name] = []byte("contents of " + name)
	}
	return files
}

func paths(dir string) []string {
	var out []string
	for _, name := range names {
		out = append(out, filepath.Join(dir, name))
	}
	return out
}

func TestSealOpen(t *testing.T) {
	files := sample()
	data, err := Seal("s3cret", files)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open("s3cret", data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, files) {
		t.Fatalf("opened %v, want %v", got, files)
	}
	if _, err := Open("another", data); !errors.Is(err, ErrToken) {
		t.Fatalf("another secret: got %v, want ErrToken", err)
	}
	again, _ := Seal("s3cret", files)
	if string(again) == string(data) {
		t.Fatal("two seals of the same files are equal: salt or nonce is not random")
	}
	if _, err := Open("s3cret", []byte("not json")); err == nil || errors.Is(err, ErrToken) {
		t.Fatalf("damaged value: got %v, want a damage error", err)
	}
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	files := sample()
	os.WriteFile(filepath.Join(dir, "server-ca.crt"), []byte("another cluster"), 0o600)
	os.WriteFile(filepath.Join(dir, "service.key"), files["service.key"], 0o600)
	replaced, err := Write(paths(dir), files)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(replaced, []string{"server-ca.crt"}) {
		t.Fatalf("replaced %v, want [server-ca.crt]", replaced)
	}
	got, err := Read(paths(dir))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, files) {
		t.Fatal("read back other files than written")
	}
	delete(files, "service.key")
	if _, err := Write(paths(t.TempDir()), files); err == nil {
		t.Fatal("a set without service.key was written")
	}
}
