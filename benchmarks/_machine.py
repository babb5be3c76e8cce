"""What the benchmark scripts record about the machine they ran on."""

from __future__ import annotations

import platform
from pathlib import Path


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
    return {"model": fields.get("model name", platform.processor() or ""), "vendor": fields.get("vendor_id", ""),
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
    -fopenmp``) and runs it on ``threads`` threads: a chain of dependent integer adds gives the
    clock under load (GHz; a VM's "cpu MHz" is the nominal clock, not the boost the kernels run
    at), 12 independent FMA accumulators give the reachable FMA rate. The peak used for
    efficiency figures is ``threads x flop_per_cycle x GHz``. Returns ``{"error": ...}`` where
    gcc is missing or the program fails (the benchmarks then fall back to the sgemm rate).
    """
    import json
    import shutil
    import subprocess

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
        subprocess.run([gcc, "-O2", "-march=native", "-fopenmp", str(src), "-o", str(exe)], check=True,
                       capture_output=True, text=True)
        runs = [json.loads(subprocess.run([str(exe), str(threads)], check=True, capture_output=True,
                                          text=True).stdout) for _ in range(3)]
    except (subprocess.CalledProcessError, OSError, ValueError) as exc:
        res["error"] = f"fma_peak.c failed: {getattr(exc, 'stderr', '') or exc}"
        return res
    best = max(runs, key=lambda r: r["gflops"])
    res.update(ghz=best["ghz"], lanes=best["lanes"], measured_fma_gflops=best["gflops"],
               computed_peak_gflops=threads * fpc * best["ghz"])
    return res
