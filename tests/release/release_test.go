// Package release tests `make release`: a static binary per architecture
// whose ELF header matches it, its xz file within the download target,
// sha256sums that match the files, and the arm64 binary starting under
// qemu-user (Debian's qemu-user-static) to print its version and the commit
// it was built from.
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
	listed := map[string]string{} // file name: its sha256
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
		listed[fields[1]] = fields[0]
	}
	for name := range want {
		for _, file := range []string{name, name + ".xz"} {
			if listed[file] == "" {
				t.Errorf("sha256sums does not list %s", file)
			}
		}
	}

	// The xz files are what the installer downloads: each unpacks to
	// exactly its binary and is within the download target.
	for name := range want {
		packed := filepath.Join(dist, name+".xz")
		info, err := os.Stat(packed)
		if err != nil {
			t.Error(err)
			continue
		}
		mib := float64(info.Size()) / (1 << 20)
		t.Logf("%s.xz: %.1f MiB", name, mib)
		if mib > downloadLimitMiB {
			t.Errorf("%s.xz is %.1f MiB, over the %d MiB download target", name, mib, downloadLimitMiB)
		}
		// The binary matches its listed sum (checked above), so an
		// unpacked stream with that sum is the binary.
		unpacked := sha256.New()
		xz := exec.Command("xz", "-dc", packed)
		xz.Stdout = unpacked
		if err := xz.Run(); err != nil {
			t.Errorf("xz -dc %s: %v", packed, err)
			continue
		}
		if hex.EncodeToString(unpacked.Sum(nil)) != listed[name] {
			t.Errorf("%s.xz does not unpack to %s", name, name)
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

// downloadLimitMiB is the most an architecture's xz file may weigh: what a
// user on a slow link should have to download.
const downloadLimitMiB = 40

func firstLine(b []byte) string {
	line, _, _ := strings.Cut(string(b), "\n")
	return line
}
