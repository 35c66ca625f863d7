package pause

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestIDIsTheProgramsDigest(t *testing.T) {
	program, err := Program(runtime.GOARCH)
	if err != nil {
		t.Skip(err)
	}
	if want, got := fmt.Sprintf("sha256:%x", sha256.Sum256(program)), ID(); got != want {
		t.Fatalf("ID() = %s, want %s", got, want)
	}
}

func TestProgramIsAStaticExecutable(t *testing.T) {
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "arm": elf.EM_ARM}
	for _, arch := range Architectures {
		program, err := Program(arch)
		if err != nil {
			t.Fatal(err)
		}
		f, err := elf.NewFile(bytes.NewReader(program))
		if err != nil {
			t.Fatalf("%s: %v", arch, err)
		}
		if f.Type != elf.ET_EXEC || f.Machine != machines[arch] || f.ByteOrder != binary.LittleEndian {
			t.Errorf("%s: type %v, machine %v, byte order %v", arch, f.Type, f.Machine, f.ByteOrder)
		}
		var load, stack int
		for _, p := range f.Progs {
			switch p.Type {
			case elf.PT_LOAD:
				load++
				if p.Flags != elf.PF_R|elf.PF_X || p.Off != 0 || p.Filesz != uint64(len(program)) || p.Memsz != p.Filesz {
					t.Errorf("%s: the segment is %+v, want the whole file, readable and executable", arch, p.ProgHeader)
				}
				if f.Entry < p.Vaddr || f.Entry >= p.Vaddr+p.Filesz || (f.Entry-p.Vaddr)%4 != 0 {
					t.Errorf("%s: entry %#x is not an aligned address in the segment at %#x", arch, f.Entry, p.Vaddr)
				}
				if p.Vaddr%segAlign != 0 || p.Vaddr < 0x10000 {
					t.Errorf("%s: segment at %#x", arch, p.Vaddr)
				}
			case elf.PT_GNU_STACK:
				stack++
				if p.Flags&elf.PF_X != 0 {
					t.Errorf("%s: the stack is executable", arch)
				}
			default:
				t.Errorf("%s: unexpected program header %v", arch, p.Type)
			}
		}
		if load != 1 || stack != 1 {
			t.Errorf("%s: %d loadable segments and %d stack headers, want one of each", arch, load, stack)
		}
	}
	if _, err := Program("riscv64"); err == nil || !strings.Contains(err.Error(), "riscv64") {
		t.Errorf("Program(riscv64): %v, want an error naming the architecture", err)
	}
}

// The signal set is the same number in every listing.
func TestProgramsBlockTheSameSignals(t *testing.T) {
	if got := binary.LittleEndian.Uint32(amd64[1:5]); got != sigset {
		t.Errorf("amd64 pushes %#x, want %#x", got, sigset)
	}
	// movz x9, #imm16 and movk x9, #imm16, lsl #16 keep imm16 in bits 5-20.
	imm := func(w uint32) uint32 { return w >> 5 & 0xffff }
	if got := imm(arm64[0]) | imm(arm64[1])<<16; got != sigset {
		t.Errorf("arm64 sets %#x, want %#x", got, sigset)
	}
	// movw and movt keep imm16 as imm4:imm12 (bits 16-19 and 0-11).
	imm = func(w uint32) uint32 { return w>>16&0xf<<12 | w&0xfff }
	if got := imm(arm[0]) | imm(arm[1])<<16; got != sigset {
		t.Errorf("arm sets %#x, want %#x", got, sigset)
	}
}

// runner is how this (amd64) machine runs a program of arch: itself, or
// qemu-user, which the tests install for the arm64 release.
func runner(t *testing.T, arch string) []string {
	if arch == runtime.GOARCH {
		return nil
	}
	names := map[string]string{"arm64": "qemu-aarch64-static", "arm": "qemu-arm-static"}
	path, err := exec.LookPath(names[arch])
	if err != nil {
		t.Skipf("no %s to run the %s program with", names[arch], arch)
	}
	return []string{path}
}

// start writes the program of arch and starts it, waiting until it waits
// for signals: the first field of /proc/PID/syscall is the system call a
// process blocks in, rt_sigtimedwait (the host's, under qemu-user too).
func start(t *testing.T, arch string, attr *syscall.SysProcAttr) *exec.Cmd {
	t.Helper()
	program, err := Program(arch)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "pause-"+arch)
	if err := os.WriteFile(path, program, 0o755); err != nil {
		t.Fatal(err)
	}
	args := append(runner(t, arch), path)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.SysProcAttr = attr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	waitFor(t, "the program to wait for signals", func() bool { return waiting(cmd.Process.Pid) })
	return cmd
}

// rtSigtimedwait is the host's system call number (amd64).
const rtSigtimedwait = "128"

func waiting(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
	return err == nil && strings.Fields(string(data))[0] == rtSigtimedwait
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waited 30 s for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Each architecture's program keeps running through SIGCHLD (with no child
// to reap) and exits with status 0 on SIGTERM and on SIGINT.
func TestProgramWaitsAndExitsOnSignal(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the check reads amd64 system call numbers")
	}
	for _, arch := range Architectures {
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
			t.Run(arch+"/"+sig.String(), func(t *testing.T) {
				cmd := start(t, arch, nil)
				exited := make(chan error, 1)
				go func() { exited <- cmd.Wait() }()
				for range 3 {
					if err := cmd.Process.Signal(syscall.SIGCHLD); err != nil {
						t.Fatal(err)
					}
				}
				waitFor(t, "the program to wait again after SIGCHLD", func() bool {
					select {
					case err := <-exited:
						t.Fatalf("the program ended on SIGCHLD: %v", err)
					default:
					}
					return waiting(cmd.Process.Pid)
				})
				if err := cmd.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
				select {
				case err := <-exited:
					if err != nil {
						t.Fatalf("on %v: %v, want exit status 0", sig, err)
					}
				case <-time.After(30 * time.Second):
					t.Fatalf("the program did not exit on %v", sig)
				}
			})
		}
	}
}

// As PID 1 of a PID namespace, each architecture's program reaps the
// orphans handed to it and exits on a SIGTERM from outside the namespace.
func TestProgramReapsOrphansAsPID1(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("a PID namespace needs root")
	}
	if runtime.GOARCH != "amd64" {
		t.Skip("the check reads amd64 system call numbers")
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Skip("no nsenter")
	}
	for _, arch := range Architectures {
		t.Run(arch, func(t *testing.T) {
			cmd := start(t, arch, &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID})
			pid := cmd.Process.Pid
			// A shell in the namespace leaves two sleeps behind: they
			// become the program's children (under qemu-user, of one of
			// its threads).
			if out, err := exec.Command(nsenter, "--target", fmt.Sprint(pid), "--pid", "--", "/bin/sh", "-c", "sleep 2 >/dev/null 2>&1 & sleep 2 >/dev/null 2>&1 & exit 0").CombinedOutput(); err != nil {
				t.Fatalf("nsenter: %v: %s", err, out)
			}
			children := func() string {
				files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
				var all []string
				for _, f := range files {
					data, _ := os.ReadFile(f)
					all = append(all, strings.Fields(string(data))...)
				}
				return strings.Join(all, " ")
			}
			if children() == "" {
				t.Fatal("the orphans were not handed to the program")
			}
			waitFor(t, "the orphans to be reaped", func() bool { return children() == "" })
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("on SIGTERM as PID 1: %v, want exit status 0", err)
			}
		})
	}
}
