package pause

import (
	"encoding/binary"
	"fmt"
)

// The pause program holds a pod's namespaces and, as PID 1 of a pod that
// shares its PID namespace, reaps the orphans handed to it. One runs per
// pod, so it is written here as machine code in a minimal static ELF file:
// a Go program always brings the Go runtime (2 MB resident, 680 KB of it
// private, and six threads per pod), a C one a C toolchain for every target
// architecture in the build. This one is 8 KB resident and one thread.
//
// What it does, the same on every architecture:
//
//	block SIGINT, SIGTERM and SIGCHLD (rt_sigprocmask)
//	wait: sig = rt_sigtimedwait(those three)
//	      SIGCHLD: reap every exited child (wait4(-1, WNOHANG) until none), wait again
//	      an error (EINTR): wait again
//	      SIGINT or SIGTERM: exit_group(0)
//
// Waiting for blocked signals instead of handling them needs no handler
// code, and the kernel still queues them for a namespace's PID 1: a signal
// is dropped for PID 1 only when it is neither handled nor blocked. The
// instructions below are those that binutils assembles from the listings
// beside them; the tests run the program of each architecture (arm64 and
// arm under qemu-user when it is installed).

// sigset is SIGINT (2), SIGTERM (15) and SIGCHLD (17): bit n-1 for signal n.
const sigset = 1<<(2-1) | 1<<(15-1) | 1<<(17-1) // 0x14002

// amd64 is the program for x86-64 (Intel syntax).
var amd64 = []byte{
	0x68, 0x02, 0x40, 0x01, 0x00, // push 0x14002            the signal set, on the stack
	0x48, 0x89, 0xe6, //             mov rsi, rsp            set
	0x31, 0xff, //                   xor edi, edi            SIG_BLOCK
	0x31, 0xd2, //                   xor edx, edx            no old set
	0x41, 0xba, 0x08, 0x00, 0x00, 0x00, // mov r10d, 8       sigsetsize
	0xb8, 0x0e, 0x00, 0x00, 0x00, // mov eax, 14             rt_sigprocmask
	0x0f, 0x05, //                   syscall
	// wait:
	0x48, 0x89, 0xe7, //             mov rdi, rsp            set
	0x31, 0xf6, //                   xor esi, esi            no siginfo
	0x31, 0xd2, //                   xor edx, edx            no timeout
	0x41, 0xba, 0x08, 0x00, 0x00, 0x00, // mov r10d, 8       sigsetsize
	0xb8, 0x80, 0x00, 0x00, 0x00, // mov eax, 128            rt_sigtimedwait
	0x0f, 0x05, //                   syscall
	0x83, 0xf8, 0x11, //             cmp eax, 17             SIGCHLD?
	0x74, 0x0d, //                   je reap
	0x85, 0xc0, //                   test eax, eax
	0x78, 0xe3, //                   js wait                 an error
	0x31, 0xff, //                   xor edi, edi            status 0
	0xb8, 0xe7, 0x00, 0x00, 0x00, // mov eax, 231            exit_group
	0x0f, 0x05, //                   syscall
	// reap:
	0xbf, 0xff, 0xff, 0xff, 0xff, // mov edi, -1             any child
	0x31, 0xf6, //                   xor esi, esi            no status
	0xba, 0x01, 0x00, 0x00, 0x00, // mov edx, 1              WNOHANG
	0x45, 0x31, 0xd2, //             xor r10d, r10d          no rusage
	0xb8, 0x3d, 0x00, 0x00, 0x00, // mov eax, 61             wait4
	0x0f, 0x05, //                   syscall
	0x85, 0xc0, //                   test eax, eax
	0x7f, 0xe6, //                   jg reap                 reaped one: try again
	0xeb, 0xbe, //                   jmp wait
}

// arm64 is the program for AArch64, one instruction a word.
var arm64 = []uint32{
	0xd2880049, // movz x9, #0x4002
	0xf2a00029, // movk x9, #0x1, lsl #16      x9 = the signal set
	0xf81f0fe9, // str x9, [sp, #-16]!         on the stack
	0xd2800000, // mov x0, #0                  SIG_BLOCK
	0x910003e1, // mov x1, sp                  set
	0xd2800002, // mov x2, #0                  no old set
	0xd2800103, // mov x3, #8                  sigsetsize
	0xd28010e8, // mov x8, #135                rt_sigprocmask
	0xd4000001, // svc #0
	// wait:
	0x910003e0, // mov x0, sp                  set
	0xd2800001, // mov x1, #0                  no siginfo
	0xd2800002, // mov x2, #0                  no timeout
	0xd2800103, // mov x3, #8                  sigsetsize
	0xd2801128, // mov x8, #137                rt_sigtimedwait
	0xd4000001, // svc #0
	0xf100441f, // cmp x0, #17                 SIGCHLD?
	0x540000a0, // b.eq reap
	0xb7ffff00, // tbnz x0, #63, wait          an error
	0xd2800000, // mov x0, #0                  status 0
	0xd2800bc8, // mov x8, #94                 exit_group
	0xd4000001, // svc #0
	// reap:
	0x92800000, // mov x0, #-1                 any child
	0xd2800001, // mov x1, #0                  no status
	0xd2800022, // mov x2, #1                  WNOHANG
	0xd2800003, // mov x3, #0                  no rusage
	0xd2802088, // mov x8, #260                wait4
	0xd4000001, // svc #0
	0xf100001f, // cmp x0, #0
	0x54ffff2c, // b.gt reap                   reaped one: try again
	0x17ffffec, // b wait
}

// arm is the program for 32-bit ARM (ARMv7, EABI), one instruction a word.
var arm = []uint32{
	0xe3044002, // movw r4, #0x4002
	0xe3404001, // movt r4, #0x1               r4 = the signal set's low word
	0xe3a05000, // mov r5, #0                  and its high word
	0xe92d0030, // push {r4, r5}               on the stack
	0xe3a00000, // mov r0, #0                  SIG_BLOCK
	0xe1a0100d, // mov r1, sp                  set
	0xe3a02000, // mov r2, #0                  no old set
	0xe3a03008, // mov r3, #8                  sigsetsize
	0xe3a070af, // mov r7, #175                rt_sigprocmask
	0xef000000, // svc #0
	// wait:
	0xe1a0000d, // mov r0, sp                  set
	0xe3a01000, // mov r1, #0                  no siginfo
	0xe3a02000, // mov r2, #0                  no timeout
	0xe3a03008, // mov r3, #8                  sigsetsize
	0xe3a070b1, // mov r7, #177                rt_sigtimedwait
	0xef000000, // svc #0
	0xe3500011, // cmp r0, #17                 SIGCHLD?
	0x0a000004, // beq reap
	0xe3500000, // cmp r0, #0
	0xbafffff5, // blt wait                    an error
	0xe3a00000, // mov r0, #0                  status 0
	0xe3a070f8, // mov r7, #248                exit_group
	0xef000000, // svc #0
	// reap:
	0xe3e00000, // mvn r0, #0                  any child (-1)
	0xe3a01000, // mov r1, #0                  no status
	0xe3a02001, // mov r2, #1                  WNOHANG
	0xe3a03000, // mov r3, #0                  no rusage
	0xe3a07072, // mov r7, #114                wait4
	0xef000000, // svc #0
	0xe3500000, // cmp r0, #0
	0xcafffff7, // bgt reap                    reaped one: try again
	0xeaffffe9, // b wait
}

// Architectures are those Program writes the pause program for.
var Architectures = []string{"amd64", "arm64", "arm"}

// ELF constants (see elf(5)).
const (
	ptLoad      = 1
	ptGNUStack  = 0x6474e551
	pfR, pfW    = 4, 2
	pfX         = 1
	emX8664     = 62
	emAArch64   = 183
	emARM       = 40
	efARMEABIv5 = 0x05000000
	segAlign    = 0x10000 // the largest page size of the three (arm64's 64 KB)
)

// Program returns the pause program for a Go architecture name, as an
// executable static ELF file.
func Program(arch string) ([]byte, error) {
	switch arch {
	case "amd64":
		return executable(true, emX8664, 0, 0x400000, amd64), nil
	case "arm64":
		return executable(true, emAArch64, 0, 0x400000, words(arm64)), nil
	case "arm":
		return executable(false, emARM, efARMEABIv5, 0x10000, words(arm)), nil
	}
	return nil, fmt.Errorf("skiff's pod sandbox (pause) program is written for %v, not %s: build skiff for one of those", Architectures, arch)
}

func words(code []uint32) []byte {
	b := make([]byte, 0, 4*len(code))
	for _, w := range code {
		b = binary.LittleEndian.AppendUint32(b, w)
	}
	return b
}

// executable is a little-endian ELF executable (64-bit, else 32-bit) of one
// read-and-execute segment, the whole file, loaded at base and entered at
// its code, and a non-executable stack. The two classes differ in the width
// of addresses and offsets, and in where a program header keeps its flags.
func executable(is64 bool, machine uint16, flags uint32, base uint64, code []byte) []byte {
	le := binary.LittleEndian
	var b []byte
	word := func(v uint64) { // an address, offset or size
		if is64 {
			b = le.AppendUint64(b, v)
		} else {
			b = le.AppendUint32(b, uint32(v))
		}
	}
	class, ehsize, phsize := byte(1), 52, 32
	if is64 {
		class, ehsize, phsize = 2, 64, 56
	}
	off := uint64(ehsize + 2*phsize)
	size := off + uint64(len(code))
	b = append(b, 0x7f, 'E', 'L', 'F', class, 1 /* little-endian */, 1 /* version */, 0 /* System V */, 0, 0, 0, 0, 0, 0, 0, 0)
	b = le.AppendUint16(b, 2) // ET_EXEC
	b = le.AppendUint16(b, machine)
	b = le.AppendUint32(b, 1) // version
	word(base + off)          // entry
	word(uint64(ehsize))      // program headers
	word(0)                   // no section headers
	b = le.AppendUint32(b, flags)
	b = le.AppendUint16(b, uint16(ehsize))
	b = le.AppendUint16(b, uint16(phsize))
	b = le.AppendUint16(b, 2) // program headers
	b = le.AppendUint16(b, 0) // section header size
	b = le.AppendUint16(b, 0) // section headers
	b = le.AppendUint16(b, 0) // section name table
	ph := func(typ, pflags uint32, addr, size, align uint64) {
		b = le.AppendUint32(b, typ)
		if is64 {
			b = le.AppendUint32(b, pflags)
		}
		word(0) // offset
		word(addr)
		word(addr) // physical address
		word(size) // in the file
		word(size) // in memory
		if !is64 {
			b = le.AppendUint32(b, pflags)
		}
		word(align)
	}
	ph(ptLoad, pfR|pfX, base, size, segAlign)
	ph(ptGNUStack, pfR|pfW, 0, 0, 16)
	return append(b, code...)
}
