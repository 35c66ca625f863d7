// Package release tests `make release`: a static binary per architecture
// whose ELF header matches it, sha256sums that match the files, and the
// arm64 binary starting under qemu-user (Debian's qemu-user-static) to print
// its version and the commit it was built from.
package release

import (
	"bufio"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestRelease(t *testing.T) {
	qemu, err := exec.LookPath("qemu-aarch64-static")
	if err != nil {
		t.Fatal("no qemu-aarch64-static: apt-get install qemu-user-static (make test-deps does)")
	}
	dist := t.TempDir()
	root, _ := filepath.Abs("../..")
	cmd := exec.Command("make", "-C", root, "release", "DIST="+dist)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make release: %v\n%s", err, out)
	}

	want := map[string]struct {
		machine elf.Machine
		class   elf.Class
	}{
		"skiff-linux-amd64": {elf.EM_X86_64, elf.ELFCLASS64},
		"skiff-linux-arm64": {elf.EM_AARCH64, elf.ELFCLASS64},
		"skiff-linux-arm":   {elf.EM_ARM, elf.ELFCLASS32},
	}
	for name, w := range want {
		f, err := elf.Open(filepath.Join(dist, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if f.Machine != w.machine || f.Class != w.class || f.Type != elf.ET_EXEC {
			t.Errorf("%s: %v %v %v, want %v %v executable", name, f.Machine, f.Class, f.Type, w.machine, w.class)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("%s is dynamically linked", name)
			}
		}
		if f.Section(".symtab") != nil {
			t.Errorf("%s is not stripped", name)
		}
		info, _ := os.Stat(filepath.Join(dist, name))
		t.Logf("%s: %.1f MB", name, float64(info.Size())/1e6)
		f.Close()
	}

	// sha256sums names each binary with its digest, as the installer checks.
	sums, err := os.Open(filepath.Join(dist, "sha256sums"))
	if err != nil {
		t.Fatal(err)
	}
	defer sums.Close()
	listed := map[string]bool{}
	sc := bufio.NewScanner(sums)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 2 {
			t.Fatalf("sha256sums line %q", sc.Text())
		}
		data, err := os.ReadFile(filepath.Join(dist, fields[1]))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != fields[0] {
			t.Errorf("sha256sums: %s does not match", fields[1])
		}
		listed[fields[1]] = true
	}
	for name := range want {
		if !listed[name] {
			t.Errorf("sha256sums does not list %s", name)
		}
	}

	// The arm64 binary runs (under emulation) and says what it is: the
	// same version line as the build under test.
	got, err := exec.Command(qemu, filepath.Join(dist, "skiff-linux-arm64"), "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("skiff-linux-arm64 --version under qemu: %v\n%s", err, got)
	}
	commit, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	wantCommit := fmt.Sprintf("(%s)", strings.TrimSpace(string(commit)))
	if line := firstLine(got); !strings.HasPrefix(line, "skiff version ") || !strings.HasSuffix(line, wantCommit) {
		t.Errorf("arm64 --version says %q, want skiff version ... %s", line, wantCommit)
	}
}

func firstLine(b []byte) string {
	line, _, _ := strings.Cut(string(b), "\n")
	return line
}
