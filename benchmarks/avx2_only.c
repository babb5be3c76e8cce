/* Hide AVX-512 (and AVX-VNNI, AMX) from a process, so that its libraries pick their AVX2 kernels
 * (issue 18: the whole-process comparison on an AVX2 machine, measured on an AVX-512 one).
 *
 *   gcc -O2 -shared -fPIC avx2_only.c -o avx2_only.so
 *   LD_PRELOAD=$PWD/avx2_only.so python ...      (benchmarks/bench_inference.py --isa avx2 does this)
 *
 * How: Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID, x86 "cpuid_fault" flag in /proc/cpuinfo)
 * makes every CPUID instruction of the process raise SIGSEGV. The handler below runs the real
 * CPUID with faulting briefly off, clears the AVX-512 / AVX-VNNI / AMX bits of leaf 7, writes the
 * registers back and steps over the instruction. onnxruntime's MLAS, numpy and torch read leaf 7
 * when they choose kernels, so they all take their AVX2 + FMA paths. The setting is per thread,
 * inherited by threads and forks, and reset by execve (LD_PRELOAD sets it again in children).
 * Limits: glibc's dynamic loader reads CPUID before this library loads (its string functions may
 * still use EVEX forms), and a library that installs its own SIGSEGV handler later would end the
 * emulation (none of the benchmark's does; the benchmark checks numpy's view of the CPU).
 * Without CPUID faulting it prints one line and changes nothing (the benchmark then refuses).
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define ARCH_SET_CPUID 0x1012

/* leaf 7 subleaf 0: EBX avx512 f dq ifma pf er cd bw vl; ECX vbmi vbmi2 vnni bitalg vpopcntdq;
 * EDX 4vnniw 4fmaps vp2intersect amx-bf16 avx512-fp16 amx-tile amx-int8. Subleaf 1 EAX: avx-vnni,
 * avx512-bf16, amx-fp16. */
#define B(n) (1u << (n))
static const unsigned L7_EBX = B(16) | B(17) | B(21) | B(26) | B(27) | B(28) | B(30) | B(31);
static const unsigned L7_ECX = B(1) | B(6) | B(11) | B(12) | B(14);
static const unsigned L7_EDX = B(2) | B(3) | B(8) | B(22) | B(23) | B(24) | B(25);
static const unsigned L7S1_EAX = B(4) | B(5) | B(21);

static void faulting(int on) { syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1); }

static void on_segv(int sig, siginfo_t *si, void *ctx) {
    (void)sig; (void)si;
    greg_t *g = ((ucontext_t *)ctx)->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)g[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) {   /* not CPUID: a real fault, die as usual */
        signal(SIGSEGV, SIG_DFL);
        return;
    }
    unsigned leaf = (unsigned)g[REG_RAX], sub = (unsigned)g[REG_RCX], a, b, c, d;
    faulting(0);
    __cpuid_count(leaf, sub, a, b, c, d);
    faulting(1);
    if (leaf == 7 && sub == 0) {
        b &= ~L7_EBX; c &= ~L7_ECX; d &= ~L7_EDX;
    } else if (leaf == 7 && sub == 1) {
        a &= ~L7S1_EAX;
    }
    g[REG_RAX] = a; g[REG_RBX] = b; g[REG_RCX] = c; g[REG_RDX] = d;
    g[REG_RIP] += 2;
}

__attribute__((constructor)) static void avx2_only_init(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0)
        fprintf(stderr, "avx2_only: this machine has no CPUID faulting; AVX-512 stays visible\n");
}
