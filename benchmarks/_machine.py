"""What the benchmark scripts record about the machine they ran on."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

#: Set (to "avx2") in a process that runs under ``avx2_only.c`` (see :func:`run_as_avx2`).
ISA_ENV = "ROSETTE_BENCH_ISA"
#: The /proc/cpuinfo flags ``avx2_only.c`` hides (its leaf-7 bits).
HIDDEN_BY_AVX2_ONLY = ("avx512", "amx", "avx_vnni")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` where that is missing)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def cpuinfo() -> dict:
    """Vendor, family, model and the SIMD flags that matter for fp32 kernels, from /proc/cpuinfo."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                k, v = (s.strip() for s in line.split(":", 1))
                fields.setdefault(k, v)
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
            if f in flags]
    hidden = None
    if os.environ.get(ISA_ENV) == "avx2":
        hidden = [f for f in simd if f.startswith(HIDDEN_BY_AVX2_ONLY)]
        simd = [f for f in simd if f not in hidden]
    return {"hidden_by_avx2_only": hidden,
            "model": fields.get("model name", platform.processor() or ""), "vendor": fields.get("vendor_id", ""),
            "family": fields.get("cpu family", ""), "model_number": fields.get("model", ""),
            "reported_mhz": float(fields["cpu MHz"]) if "cpu MHz" in fields else None, "simd": simd}


def flop_per_cycle(info: dict) -> tuple[int, str]:
    """fp32 FLOP per cycle and core from the flags (2 x lanes x FMA pipes), with the rule used.

    AMD Zen (family >= 0x17) has two 256-bit FMA pipes and runs a 512-bit FMA on both (Zen 4),
    so 32 FLOP/cycle with AVX2 or AVX-512; Intel server cores with AVX-512 have two 512-bit FMA
    units (64); other AVX2 + FMA cores two 256-bit ones (32); without FMA, 8-wide add + mul (16).
    """
    simd = set(info.get("simd", []))
    amd = info.get("vendor") == "AuthenticAMD"
    try:
        family = int(info.get("family") or 0)
    except ValueError:
        family = 0
    if amd and family >= 0x17 and "fma" in simd:
        return 32, "AMD Zen: 2 x 256-bit FMA pipes (a 512-bit FMA takes both) = 2 x 8 lanes x 2 FLOP"
    if "avx512f" in simd:
        return 64, "Intel AVX-512: 2 x 512-bit FMA units = 2 x 16 lanes x 2 FLOP"
    if "fma" in simd:
        return 32, "AVX2 + FMA: 2 x 256-bit FMA units = 2 x 8 lanes x 2 FLOP"
    return 16, "no FMA: one 8-wide add + one 8-wide multiply per cycle"


def fma_peak(threads: int, workdir: str | Path) -> dict:
    """This machine's fp32 FMA peak: computed from flags x measured clock, and measured by an FMA loop.

    Compiles ``fma_peak.c`` (next to this file) with the system's gcc (``-O2 -march=native
    -fopenmp``) and runs it on ``threads`` threads: a chain of dependent integer multiplies gives the
    clock under load (GHz; a VM's "cpu MHz" is the nominal clock, not the boost the kernels run
    at), 12 independent FMA accumulators give the reachable FMA rate. The peak used for
    efficiency figures is ``threads x flop_per_cycle x GHz``. Returns ``{"error": ...}`` where
    gcc is missing or the program fails (the benchmarks then fall back to the sgemm rate).
    """
    import json

    info = cpuinfo()
    fpc, rule = flop_per_cycle(info)
    res: dict = {"cpu": info, "flop_per_cycle_per_core": fpc, "rule": rule, "threads": threads}
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        res["error"] = "no C compiler: peak not measured"
        return res
    src = Path(__file__).resolve().parent / "fma_peak.c"
    exe = Path(workdir) / "fma_peak"
    try:
        isa = ["-mno-avx512f"] if info.get("hidden_by_avx2_only") is not None else []
        # gcc installs its own SIGSEGV handler, which ends avx2_only.c's CPUID emulation: compile
        # without the preload (the -mno-avx512f build then runs under it)
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        subprocess.run([gcc, "-O2", "-march=native", *isa, "-fopenmp", str(src), "-o", str(exe)], check=True,
                       capture_output=True, text=True, env=env)
        runs = [json.loads(subprocess.run([str(exe), str(threads)], check=True, capture_output=True,
                                          text=True).stdout) for _ in range(3)]
    except (subprocess.CalledProcessError, OSError, ValueError) as exc:
        res["error"] = f"fma_peak.c failed: {getattr(exc, 'stderr', '') or exc}"
        return res
    best = max(runs, key=lambda r: r["gflops"])
    res.update(ghz=best["ghz"], lanes=best["lanes"], measured_fma_gflops=best["gflops"],
               computed_peak_gflops=threads * fpc * best["ghz"])
    return res


def run_as_avx2(argv: list[str], workdir: str | Path) -> None:
    """Re-run this script with AVX-512 hidden (``avx2_only.c`` preloaded); returns only in that run.

    In the re-run (``ROSETTE_BENCH_ISA=avx2``) it checks that the hiding took effect (numpy's
    runtime CPU features must show AVX2 without AVX-512F) and returns. Otherwise it compiles
    ``avx2_only.c`` into ``workdir`` with the system's gcc and replaces this process by
    ``python argv...`` with ``LD_PRELOAD`` set. Raises SystemExit with one line where the
    machine has no AVX-512 to hide, no CPUID faulting or no C compiler.
    """
    if os.environ.get(ISA_ENV) == "avx2":
        from numpy._core._multiarray_umath import __cpu_features__ as feats

        if feats.get("AVX512F") or not feats.get("AVX2"):
            raise SystemExit("--isa avx2: AVX-512 is still visible to this process (CPUID faulting did not "
                             "take effect); nothing measured")
        return
    flags = set(next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")),
                     "").split())
    if "avx512f" not in flags:
        raise SystemExit("--isa avx2: this CPU has no AVX-512 to hide; run without --isa (it is an AVX2 machine)")
    if "cpuid_fault" not in flags:
        raise SystemExit("--isa avx2: this machine has no CPUID faulting (no cpuid_fault flag), so AVX-512 "
                         "cannot be hidden")
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SystemExit("--isa avx2: needs a C compiler (gcc) to build avx2_only.c")
    lib = Path(workdir) / "avx2_only.so"
    subprocess.run([gcc, "-O2", "-shared", "-fPIC", str(Path(__file__).resolve().parent / "avx2_only.c"),
                    "-o", str(lib)], check=True)
    env = dict(os.environ, **{ISA_ENV: "avx2", "LD_PRELOAD": str(lib)})
    os.execve(sys.executable, [sys.executable, *argv], env)
