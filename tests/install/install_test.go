// Package install tests scripts/install.sh. Every run points the installer's
// paths into a temporary directory and skips enabling the service, so the
// host's /usr/local/bin, /etc/systemd, /etc/skiff, runc and kernel command
// line are never touched.
package install

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var installScript, _ = filepath.Abs("../../scripts/install.sh")

// fakeSkiff stands in for the binary when none is built: the installer only
// runs `--version`.
const fakeSkiff = `#!/bin/sh
case "$1" in
--version) echo "skiff version v0.0.0-test"; echo "kubernetes v1.37.2" ;;
server | agent) exec sleep 3600 ;;
*) exit 1 ;;
esac
`

const cmdline = "console=serial0,115200 console=tty1 root=PARTUUID=1234-02 rootfstype=ext4 fsck.repair=yes rootwait\n"

// skiffBinary is $SKIFF_BIN or ../../bin/skiff, as tests/cluster.Binary
// finds it (not imported: it pulls in the whole tree); else the fake.
func skiffBinary(t *testing.T) string {
	b := os.Getenv("SKIFF_BIN")
	if b == "" {
		b, _ = filepath.Abs("../../bin/skiff")
	}
	if _, err := os.Stat(b); err == nil {
		t.Logf("installing %s", b)
		return b
	}
	t.Logf("no skiff binary at %s: installing a fake one", b)
	return fakeBinary(t)
}

func fakeBinary(t *testing.T) string {
	b := filepath.Join(t.TempDir(), "skiff")
	write(t, b, fakeSkiff, 0o755)
	return b
}

func write(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func sha256File(t *testing.T, path string) string {
	sum := sha256.Sum256([]byte(read(t, path)))
	return hex.EncodeToString(sum[:])
}

// host is one redirected install target.
type host struct {
	t       *testing.T
	dir     string
	shims   string // first in PATH: runc, and uname or id where a test fakes them
	bin     string
	systemd string
	openrc  string
	config  string
	cmdline string
}

func newHost(t *testing.T) *host {
	dir := t.TempDir()
	h := &host{t: t, dir: dir,
		shims:   filepath.Join(dir, "shims"),
		bin:     filepath.Join(dir, "bin"),
		systemd: filepath.Join(dir, "systemd"),
		openrc:  filepath.Join(dir, "init.d"),
		config:  filepath.Join(dir, "etc-skiff"),
		cmdline: filepath.Join(dir, "boot", "cmdline.txt"),
	}
	// A runc on PATH, so the installer never reaches for apt-get; and root
	// as far as the installer can tell, so the test runs unprivileged too
	// (it writes only under dir).
	h.shim("runc", "exit 0")
	h.shim("id", `[ "$1" = -u ] && echo 0 || exec /usr/bin/id "$@"`)
	write(t, h.cmdline, cmdline, 0o644)
	return h
}

func (h *host) shim(name, body string) {
	write(h.t, filepath.Join(h.shims, name), "#!/bin/sh\n"+body+"\n", 0o755)
}

func (h *host) path() string {
	return h.shims + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

// run runs the installer with a clean environment plus vars; it returns
// stdout, stderr and the error.
func (h *host) run(vars ...string) (string, string, error) {
	h.t.Helper()
	cmd := exec.Command("sh", installScript)
	cmd.Dir = h.dir
	cmd.Env = append([]string{
		"PATH=" + h.path(),
		"HOME=" + h.dir,
		"INSTALL_SKIFF_BIN_DIR=" + h.bin,
		"INSTALL_SKIFF_SYSTEMD_DIR=" + h.systemd,
		"INSTALL_SKIFF_OPENRC_DIR=" + h.openrc,
		"INSTALL_SKIFF_CONFIG_DIR=" + h.config,
		"INSTALL_SKIFF_CMDLINE=" + h.cmdline,
		"INSTALL_SKIFF_SKIP_START=true",
		"INSTALL_SKIFF_SKIP_ENABLE=true",
	}, vars...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// install runs the installer and fails the test if it fails.
func (h *host) install(vars ...string) string {
	h.t.Helper()
	stdout, stderr, err := h.run(vars...)
	h.t.Logf("install.sh %v:\n%s%s", vars, stdout, stderr)
	if err != nil {
		h.t.Fatalf("install.sh: %v", err)
	}
	if strings.Contains(stdout+stderr, "[skiff] error:") {
		h.t.Fatal("install.sh succeeded but printed an error")
	}
	return stdout + stderr
}

// snapshot maps every file and link under the host dir (except the shims)
// to its mode and content or target.
func (h *host) snapshot() map[string]string {
	h.t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(h.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == h.shims {
			return filepath.SkipDir
		}
		info, err := os.Lstat(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(h.dir, path)
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(path)
			snap[rel] = "link -> " + target
		case info.Mode().IsRegular():
			snap[rel] = fmt.Sprintf("%v %s", info.Mode(), sha256File(h.t, path))
		}
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return snap
}

// checkScript fails unless path is an executable shell script that `sh -n`
// (and shellcheck, where installed) accepts.
func checkScript(t *testing.T, path string) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatalf("%s missing: %v", path, err)
	}
	if info.Mode().Perm()&0o100 == 0 {
		t.Errorf("%s is not executable (%v)", path, info.Mode())
	}
	if out, err := exec.Command("sh", "-n", path).CombinedOutput(); err != nil {
		t.Errorf("sh -n %s: %v\n%s", path, err, out)
	}
	t.Run("shellcheck", func(t *testing.T) {
		if _, err := exec.LookPath("shellcheck"); err != nil {
			t.Skipf("no shellcheck: %s checked with sh -n only", filepath.Base(path))
		}
		if out, err := exec.Command("shellcheck", "-s", "sh", path).CombinedOutput(); err != nil {
			t.Errorf("shellcheck %s: %v\n%s", path, err, out)
		}
	})
}

// verifyUnit runs systemd-analyze verify on the unit, where it works here
// (it is first tried on a unit known to be good).
func verifyUnit(t *testing.T, unit string) {
	t.Helper()
	t.Run("systemd-analyze", func(t *testing.T) {
		if _, err := exec.LookPath("systemd-analyze"); err != nil {
			t.Skip("no systemd-analyze: unit not verified")
		}
		good := filepath.Join(t.TempDir(), "skiff-test-good.service")
		write(t, good, "[Unit]\nDescription=known good\n[Service]\nExecStart=/bin/true\n", 0o644)
		if out, err := exec.Command("systemd-analyze", "verify", good).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Skipf("systemd-analyze verify does not work here (%v: %s): unit not verified", err, out)
		}
		out, err := exec.Command("systemd-analyze", "verify", unit).CombinedOutput()
		if err != nil || strings.Contains(string(out), filepath.Base(unit)) {
			t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
		}
	})
}

func TestInstallServerSystemd(t *testing.T) {
	h := newHost(t)
	src := skiffBinary(t)
	vars := []string{"INSTALL_SKIFF_BINARY=" + src, "INSTALL_SKIFF_INIT=systemd",
		"INSTALL_SKIFF_EXEC=--tls-san pi.local"}
	h.install(vars...)
	first := h.snapshot()

	// The binary, a copy of the source, executable.
	bin := filepath.Join(h.bin, "skiff")
	if got, want := sha256File(t, bin), sha256File(t, src); got != want {
		t.Errorf("installed binary sha256 %s, source %s", got, want)
	}
	if info, err := os.Stat(bin); err != nil || info.Mode().Perm() != 0o755 {
		t.Errorf("%s: %v, mode %v; want 0755", bin, err, info.Mode())
	}

	// Links, except where the host already has that command.
	for _, cmd := range []string{"kubectl", "crictl", "ctr"} {
		link := filepath.Join(h.bin, cmd)
		target, err := os.Readlink(link)
		if other, lerr := exec.LookPath(cmd); lerr == nil && !strings.HasPrefix(other, h.dir) {
			if err == nil {
				t.Errorf("%s linked although the host has %s", link, other)
			}
			continue
		}
		if err != nil || target != bin {
			t.Errorf("%s -> %q (%v), want -> %s", link, target, err, bin)
		}
	}

	// The unit.
	unitPath := filepath.Join(h.systemd, "skiff.service")
	unit := read(t, unitPath)
	for _, line := range []string{
		"Type=exec", "Restart=always", "RestartSec=5s", "KillMode=process", "Delegate=yes",
		"LimitNOFILE=1048576", "LimitNPROC=infinity", "LimitCORE=infinity", "TasksMax=infinity",
		"TimeoutStartSec=0", "EnvironmentFile=-/etc/default/skiff",
		"EnvironmentFile=-" + filepath.Join(h.config, "skiff.env"),
		"ExecStart=" + bin + " server \\", "\t--tls-san \\", "\tpi.local",
		"WantedBy=multi-user.target",
	} {
		if !strings.Contains("\n"+unit+"\n", "\n"+line+"\n") {
			t.Errorf("unit has no line %q:\n%s", line, unit)
		}
	}
	verifyUnit(t, unitPath)

	// The env file: no join settings for a server, root only.
	env := filepath.Join(h.config, "skiff.env")
	if info, err := os.Stat(env); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v, mode %v; want 0600", env, err, info.Mode())
	}
	if strings.Contains(read(t, env), "SKIFF_URL") {
		t.Errorf("server env file has join settings:\n%s", read(t, env))
	}

	checkScript(t, filepath.Join(h.bin, "skiff-uninstall.sh"))
	checkScript(t, filepath.Join(h.bin, "skiff-killall.sh"))
	if _, err := os.Stat(filepath.Join(h.bin, "skiff-agent-uninstall.sh")); err == nil {
		t.Error("a server install wrote skiff-agent-uninstall.sh")
	}
	killall := read(t, filepath.Join(h.bin, "skiff-killall.sh"))
	for _, want := range []string{"BIN=" + bin, "DATA_DIR=/var/lib/skiff", "RUN_DIR=/run/skiff\n", "SYSTEMD_DIR=" + h.systemd} {
		if !strings.Contains(killall, want) {
			t.Errorf("skiff-killall.sh has no %q", want)
		}
	}

	// The memory cgroup, enabled on the one line of cmdline.txt.
	wantCmdline := strings.TrimSuffix(cmdline, "\n") + " cgroup_memory=1 cgroup_enable=memory\n"
	if got := read(t, h.cmdline); got != wantCmdline {
		t.Errorf("cmdline.txt:\n%q\nwant\n%q", got, wantCmdline)
	}

	// Again: the same files, nothing appended or left over.
	out := h.install(vars...)
	if second := h.snapshot(); fmt.Sprint(second) != fmt.Sprint(first) {
		t.Errorf("second run changed the files:\nfirst  %v\nsecond %v", first, second)
	}
	if !strings.Contains(out, "is up to date") {
		t.Error("second run did not find the binary up to date")
	}
	if strings.Contains(out, "cmdline.txt") {
		t.Error("second run edited cmdline.txt again")
	}
}

func TestInstallAgentOpenRC(t *testing.T) {
	h := newHost(t)
	const url, token = "https://192.168.1.10:6443", "K10aaaa::server:secret"
	vars := []string{"INSTALL_SKIFF_BINARY=" + fakeBinary(t), "INSTALL_SKIFF_INIT=openrc",
		"SKIFF_URL=" + url, "SKIFF_TOKEN=" + token, "INSTALL_SKIFF_EXEC=--data-dir /srv/skiff --node-label role=edge"}
	h.install(vars...)
	first := h.snapshot()

	script := filepath.Join(h.openrc, "skiff-agent")
	checkScript(t, script)
	rc := read(t, script)
	for _, want := range []string{"#!/sbin/openrc-run", "supervisor=supervise-daemon", "respawn_delay=5", "respawn_max=0",
		`command_args="agent --data-dir /srv/skiff --node-label role=edge"`, filepath.Join(h.config, "skiff-agent.env")} {
		if !strings.Contains(rc, want) {
			t.Errorf("OpenRC script has no %q:\n%s", want, rc)
		}
	}
	if strings.Contains(rc, token) {
		t.Error("the token is in the OpenRC script")
	}

	env := filepath.Join(h.config, "skiff-agent.env")
	if info, err := os.Stat(env); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v, mode %v; want 0600", env, err, info.Mode())
	}
	if got := read(t, env); !strings.Contains(got, "SKIFF_URL='"+url+"'\n") || !strings.Contains(got, "SKIFF_TOKEN='"+token+"'\n") {
		t.Errorf("env file:\n%s", got)
	}

	checkScript(t, filepath.Join(h.bin, "skiff-agent-uninstall.sh"))
	checkScript(t, filepath.Join(h.bin, "skiff-killall.sh"))
	// The killall and uninstall scripts follow --data-dir, and its runtime
	// dir: /run/skiff-<first 8 hex digits of sha256(data dir)>.
	sum := sha256.Sum256([]byte("/srv/skiff"))
	wantRun := "RUN_DIR=/run/skiff-" + hex.EncodeToString(sum[:])[:8]
	for _, f := range []string{"skiff-killall.sh", "skiff-agent-uninstall.sh"} {
		s := read(t, filepath.Join(h.bin, f))
		if !strings.Contains(s, "DATA_DIR=/srv/skiff\n") || !strings.Contains(s, wantRun+"\n") {
			t.Errorf("%s does not use data dir /srv/skiff and %s", f, wantRun)
		}
	}
	if _, err := os.Stat(filepath.Join(h.systemd, "skiff-agent.service")); err == nil {
		t.Error("an OpenRC install wrote a systemd unit")
	}

	h.install(vars...)
	if second := h.snapshot(); fmt.Sprint(second) != fmt.Sprint(first) {
		t.Errorf("second run changed the files:\nfirst  %v\nsecond %v", first, second)
	}
}

// TestDownload installs from a release URL: the xz file for the
// architecture when xz works (else the binary itself), each checked against
// sha256sums, and the binary checked again once unpacked.
func TestDownload(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		if _, err := exec.LookPath("wget"); err != nil {
			t.Skip("neither curl nor wget")
		}
	}
	good := fakeSkiff
	var mu sync.Mutex
	files := map[string]string{}
	var fetched []string
	release := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		name := strings.TrimPrefix(r.URL.Path, "/v9.9.9/")
		content, ok := files[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		fetched = append(fetched, name)
		fmt.Fprint(w, content)
	}))
	defer release.Close()
	sum := func(s string) string {
		b := sha256.Sum256([]byte(s))
		return hex.EncodeToString(b[:])
	}
	packed, other := xzString(t, good), xzString(t, good+"# another build\n")
	both := sum(good) + "  skiff-linux-arm64\n" + sum(packed) + "  skiff-linux-arm64.xz\n"

	for _, c := range []struct {
		name           string
		sums, xz, bin  string
		brokenXZ       bool
		wantFetched    string
		wantErr, warns string
	}{
		{name: "xz", sums: both, xz: packed, bin: good, wantFetched: "skiff-linux-arm64.xz"},
		{name: "no working xz", sums: both, xz: packed, bin: good, brokenXZ: true, wantFetched: "skiff-linux-arm64",
			warns: "[skiff] warning: no working xz: downloading the uncompressed binary"},
		{name: "release without xz files", sums: sum(good) + "  skiff-linux-arm64\n", bin: good, wantFetched: "skiff-linux-arm64"},
		{name: "tampered xz", sums: both, xz: packed + "x", bin: good,
			wantErr: "[skiff] error: checksum mismatch for skiff-linux-arm64.xz"},
		{name: "xz of another binary", sums: sum(good) + "  skiff-linux-arm64\n" + sum(other) + "  skiff-linux-arm64.xz\n", xz: other, bin: good,
			wantErr: "[skiff] error: checksum mismatch for skiff-linux-arm64:"},
		{name: "tampered binary", sums: sum(good) + "  skiff-linux-arm64\n", bin: good + "# changed\n",
			wantErr: "[skiff] error: checksum mismatch for skiff-linux-arm64:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHost(t)
			h.shim("uname", "echo aarch64")
			if c.brokenXZ {
				h.shim("xz", "exit 1")
			}
			mu.Lock()
			files = map[string]string{"sha256sums": c.sums, "skiff-linux-arm64": c.bin}
			if c.xz != "" {
				files["skiff-linux-arm64.xz"] = c.xz
			}
			fetched = nil
			mu.Unlock()
			vars := []string{"INSTALL_SKIFF_INIT=systemd", "INSTALL_SKIFF_DOWNLOAD_URL=" + release.URL + "/v9.9.9"}
			if c.wantErr != "" {
				h.expectError(c.wantErr, vars...)
				return
			}
			stdout, stderr, err := h.run(vars...)
			t.Logf("stdout:\n%sstderr:\n%s", stdout, stderr)
			if err != nil {
				t.Fatalf("install.sh: %v", err)
			}
			if got := read(t, filepath.Join(h.bin, "skiff")); got != good {
				t.Errorf("installed binary differs from the release's")
			}
			mu.Lock()
			got := fmt.Sprint(fetched)
			mu.Unlock()
			if want := fmt.Sprint([]string{"sha256sums", c.wantFetched}); got != want {
				t.Errorf("downloaded %s, want %s", got, want)
			}
			if c.warns == "" && strings.Contains(stderr, "warning:") || !strings.Contains(stderr, c.warns) {
				t.Errorf("stderr %q, want the warning %q and no other", stderr, c.warns)
			}
		})
	}
}

// xzString is s compressed with xz, as make release writes it.
func xzString(t *testing.T, s string) string {
	t.Helper()
	cmd := exec.Command("xz", "-c")
	cmd.Stdin = strings.NewReader(s)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz: %v (apt-get install xz-utils; make test-deps does)", err)
	}
	return string(out)
}

// expectError runs the installer, which must fail with exactly one error
// line, on stderr, containing want, and leave nothing behind.
func (h *host) expectError(want string, vars ...string) {
	t := h.t
	t.Helper()
	if err := os.MkdirAll(h.bin, 0o755); err != nil {
		t.Fatal(err)
	}
	before := h.snapshot()
	stdout, stderr, err := h.run(vars...)
	t.Logf("stdout:\n%sstderr:\n%s", stdout, stderr)
	if err == nil {
		t.Fatal("install.sh succeeded")
	}
	if n := strings.Count(stdout+stderr, "[skiff] error:"); n != 1 {
		t.Errorf("%d error lines, want exactly 1", n)
	}
	if !strings.Contains(stderr, want) {
		t.Errorf("stderr has no %q", want)
	}
	if entries, _ := os.ReadDir(h.bin); len(entries) > 0 {
		t.Errorf("bin dir not empty: %v", entries)
	}
	if after := h.snapshot(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("files changed:\nbefore %v\nafter  %v", before, after)
	}
	for _, dir := range []string{h.systemd, h.openrc, h.config} {
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%s was created", dir)
		}
	}
}

func TestBadInput(t *testing.T) {
	zeros := strings.Repeat("0", 64)
	for _, c := range []struct {
		name  string
		shims map[string]string
		vars  []string
		want  string
	}{
		{"unsupported arch", map[string]string{"uname": "echo mips"}, nil,
			"[skiff] error: unsupported architecture mips: skiff is built for amd64, arm64 and armv7\n"},
		{"armv6", map[string]string{"uname": "echo armv6l"}, nil,
			"[skiff] error: unsupported architecture armv6l: skiff is built for amd64, arm64 and armv7\n"},
		{"checksum mismatch", nil, []string{"INSTALL_SKIFF_SHA256=" + zeros},
			"[skiff] error: checksum mismatch for skiff: expected " + zeros},
		{"url without token", nil, []string{"SKIFF_URL=https://10.0.0.1:6443"},
			"[skiff] error: SKIFF_URL is set but SKIFF_TOKEN is not: set both to install an agent, or neither for a server\n"},
		{"token without url", nil, []string{"SKIFF_TOKEN=K10abc::server:x"},
			"[skiff] error: SKIFF_TOKEN is set but SKIFF_URL is not: set both to install an agent, or neither for a server\n"},
		{"not root", map[string]string{"id": "echo 1000"}, nil, "[skiff] error: must run as root"},
		{"unknown init", nil, []string{"INSTALL_SKIFF_INIT=upstart"}, "[skiff] error: INSTALL_SKIFF_INIT is 'upstart'"},
		{"unknown command", nil, []string{"INSTALL_SKIFF_EXEC=serve --x"}, "[skiff] error: unknown command 'serve'"},
		{"broken binary", nil, nil, "does not run on this host (wrong architecture or a broken file?); nothing installed\n"},
		{"missing binary", nil, []string{"INSTALL_SKIFF_BINARY=/nonexistent/skiff"}, "[skiff] error: INSTALL_SKIFF_BINARY /nonexistent/skiff is not a file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHost(t)
			for name, body := range c.shims {
				h.shim(name, body)
			}
			vars := append([]string{"INSTALL_SKIFF_INIT=systemd", "INSTALL_SKIFF_BINARY=" + fakeBinary(t)}, c.vars...)
			if c.name == "broken binary" {
				broken := filepath.Join(t.TempDir(), "skiff-linux-arm64")
				write(t, broken, "\x7fELF truncated", 0o644)
				vars = append(vars, "INSTALL_SKIFF_BINARY="+broken)
			}
			h.expectError(c.want, vars...)
		})
	}
}

// TestChecksumFile checks a local binary against a sha256sums file next to
// it, as `make release` leaves in dist/.
func TestChecksumFile(t *testing.T) {
	for _, c := range []struct {
		name, sums, wantErr string
	}{
		{"matching sha256sums", "%s  skiff-linux-" + runtime.GOARCH + "\n", ""},
		{"binary-mode entry", "%s *skiff-linux-" + runtime.GOARCH + "\n", ""},
		{"wrong sha256sums", strings.Repeat("1", 64) + "  skiff-linux-" + runtime.GOARCH + "\n", "[skiff] error: checksum mismatch"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHost(t)
			dist := t.TempDir()
			bin := filepath.Join(dist, "skiff-linux-"+runtime.GOARCH)
			write(t, bin, fakeSkiff, 0o755)
			sums := c.sums
			if strings.Contains(sums, "%s") {
				sums = fmt.Sprintf(sums, sha256File(t, bin))
			}
			write(t, filepath.Join(dist, "sha256sums"), sums, 0o644)
			vars := []string{"INSTALL_SKIFF_INIT=systemd", "INSTALL_SKIFF_BINARY=" + bin}
			if c.wantErr != "" {
				h.expectError(c.wantErr, vars...)
				return
			}
			if out := h.install(vars...); strings.Contains(out, "unverified") {
				t.Error("binary installed unverified despite sha256sums")
			}
		})
	}
}
