"""Inference speed: our runner against bioimageio.core, and against this CPU's own limit (issues 8, 18).

    .venv/bin/python benchmarks/bench_inference.py            # full run (~15-20 min on 2 cores)
    .venv/bin/python benchmarks/bench_inference.py --processes-only --out benchmarks/results/processes_<kind>.json
                                                              # ~3 min: the comparison to repeat per machine kind
    .venv/bin/python benchmarks/bench_inference.py --quick    # smoke run (small images, 1 round)
    .venv/bin/python benchmarks/bench_inference.py --isa avx2 --out benchmarks/results/inference_avx2.json
                                                              # the same with AVX-512 hidden (AVX2 kernels)

The machine record names the CPU (vendor, family, model, SIMD flags) and its fp32 FMA peak:
``threads x FLOP/cycle x GHz``, FLOP/cycle from the flags (``_machine.flop_per_cycle``: 2 x
vector lanes x FMA pipes) and the clock measured under load by ``fma_peak.c`` (a VM's
"cpu MHz" is the nominal clock, not the boost clock the kernels run at); an FMA loop checks it.

On the same package and the same input, in one run:

* in-process, interleaved rounds (every round runs every variant once, in a rotated order, so
  a slow period of the machine hits all variants alike), medians reported:
  (a) bioimageio.core's blocked prediction on the package's rdf.yaml with onnx weights, as a
      user calls it: one ``create_prediction_pipeline(descr, weights_format="onnx")`` reused,
      ``predict_sample_with_blocking(sample, ns=10)`` per image (what
      ``bioimageio.core.predict(..., blocksize_parameter=10)`` and the CLI's ``--blockwise
      true`` run: blocks of 512 + 10 x 16 = 672 px, the package's 112 px halo, bioimageio.core's
      default symmetric border padding);
  (b) ``rosette_bmz.runner.predict`` with its defaults for each backend (onnx, torch, torchscript),
      predictors loaded once;
  for the full-width model (base 64, 31.4 M parameters: the recipe weights of
  tests/reference.py exported into a temporary package) and the demo model (the root
  rdf.yaml, else a temporary export of the demo checkpoint), on 1024^2 and 2048^2 synthetic
  outline images (``rosette_bmz.synth.generate``);
* ratio (b)/(a) of the medians, max |diff| of the outputs more than 64 px from the image
  border (runner backends vs bioimageio.core, vs the runner's onnx output, and the runner with
  bioimageio.core's padding vs bioimageio.core: that isolates bioimageio.core's block seams);
* FLOPs per 512^2 tile counted with forward hooks on Conv2d / ConvTranspose2d (2 x MACs),
  pixels each variant actually pushed through the network (tiles + halos / blocks), achieved
  GFLOP/s and its fraction of a torch fp32 matmul peak measured in every round of the same
  run (2048 x 2048 x 2048 sgemm, best of 5, torch threads = cores);
* whole processes, the way a user runs them, on a 2048^2 input of the demo package:
  ``bioimageio predict --blockwise true --weight-format onnx --inputs in.npy ... rdf.yaml``
  against ``rosette-bmz predict in.npy --model rdf.yaml --backend onnx --input-kind channels``
  (start-up, file I/O and, for ours, proposals included; ours with ``--no-quantities`` for the
  same work, and with its default per-proposal k / kind and per-image summary), interleaved in
  a rotated order, with each process's peak RSS (``os.wait4``); and the start-up of
  ``rosette-bmz predict`` before the model loads (a process importing what it imports by then);
* ``find_proposals`` on 2048^2 and 8192^2 probability maps;
* peak RSS of ``rosette-bmz predict`` on an 8192^2 outline image streamed from disk (a child
  process; ``ru_maxrss``).

Results: ``benchmarks/results/inference.json`` and ``inference.md`` (machine description,
versions, load average at the start). CPU timings on a shared machine are erratic: compare the
ratios measured in one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")   # bioimageio.core's per-block progress bars
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model, fma_peak, run_as_avx2  # noqa: E402

from rosette_bmz.files import atomic_path  # noqa: E402

BORDER = 64  # outputs are compared more than this many pixels from the image border
FAR = 128    # ... and more than this (beyond the network's receptive field, ~100 px)
BACKENDS = ("onnx", "torch", "torchscript")


# ----------------------------------------------------------------------------- machine
def machine(threads: int, tmp: Path) -> dict:
    cpu = cpu_model()
    import bioimageio.core
    import onnxruntime
    import torch

    flags = ""
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        mem = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
    except (OSError, StopIteration):
        pass
    isa = os.environ.get("ROSETTE_BENCH_ISA", "native")
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "threads": threads, "isa": isa,
            "avx512f": " avx512f " in flags + " " and isa != "avx2", "avx2": " avx2 " in flags + " ",
            "memory": mem.split(":", 1)[-1].strip(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "bioimageio.core": bioimageio.core.__version__,
            "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "loadavg_at_start": list(os.getloadavg()), "fma": fma_peak(threads, tmp)}


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` torch fp32 sgemm rate (GFLOP/s) with torch's current thread count."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def ort_matmul_gflops(n: int = 2048, repeats: int = 5, threads: int = 2) -> float:
    """Best-of-``repeats`` sgemm rate of onnxruntime's own MatMul (MLAS), for comparison."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    sess = ort.InferenceSession(m.SerializeToString(), o, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)}
    sess.run(None, feed)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, feed)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


# ----------------------------------------------------------------------------- models
def conv_flops(model, size: int = 512) -> int:
    """FLOPs (2 x multiply-adds) of every Conv2d / ConvTranspose2d for one (1, C, size, size) input."""
    import torch

    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.ConvTranspose2d):
            n, cin, h, w = inp[0].shape
            kh, kw = mod.kernel_size
            total[0] += 2 * n * cin * h * w * (mod.out_channels // mod.groups) * kh * kw
        else:
            n, cout, h, w = out.shape
            kh, kw = mod.kernel_size
            total[0] += 2 * n * cout * h * w * (mod.in_channels // mod.groups) * kh * kw

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, model.in_channels, size, size))
    finally:
        for h in hooks:
            h.remove()
    return total[0]


def full_width_package(tmp: Path) -> Path:
    from reference import recipe_state_dict

    from rosette_bmz.checkpoint import build_model, save_checkpoint
    from rosette_bmz.export import export_package

    ckpt = save_checkpoint(build_model(recipe_state_dict()), tmp / "recipe_base64.pt",
                           {"note": "recipe weights of the published base-64 layout (tests/reference.py)"})
    return export_package(ckpt, tmp / "full_width", run_test=False)


def demo_package(tmp: Path, given: str | None) -> tuple[Path, str]:
    """The root rdf.yaml if it has onnx weights, else a temporary export of the demo checkpoint."""
    import yaml

    if given:
        p = Path(given)
        if p.suffix in (".yaml", ".yml"):
            return p, str(p)
        ckpt = p
    else:
        rdf = ROOT / "rdf.yaml"
        try:
            if rdf.is_file() and (yaml.safe_load(rdf.read_text()).get("weights") or {}).get("onnx"):
                return rdf, "rdf.yaml (repository root)"
        except Exception:  # an rdf being rewritten by the exporter: fall back to a temporary export
            pass
        ckpt = next((c for c in (ROOT / "rosette_bmz/data/rosette_demo.pt", ROOT / "runs/demo/best.pt") if c.is_file()),
                    None)
        if ckpt is None:
            raise SystemExit("no demo package or checkpoint found; pass --demo")
    from rosette_bmz.export import export_package

    local = tmp / "demo.pt"
    shutil.copyfile(ckpt, local)   # a training run may rewrite it meanwhile
    if Path(str(ckpt) + ".json").is_file():
        shutil.copyfile(str(ckpt) + ".json", str(local) + ".json")
    return export_package(local, tmp / "demo_pkg", run_test=False), f"temporary export of {ckpt.relative_to(ROOT)}"


# ----------------------------------------------------------------------------- variants
class PixelCounter:
    """Counts the pixels every onnxruntime session (ours and bioimageio.core's) is fed."""

    def __init__(self):
        import onnxruntime as ort

        self.pixels = 0
        orig = ort.InferenceSession.run
        counter = self

        def run(sess, output_names, input_feed, run_options=None):
            v = next(iter(input_feed.values()))
            counter.pixels += int(v.shape[0]) * int(v.shape[-2]) * int(v.shape[-1])
            return orig(sess, output_names, input_feed, run_options)

        ort.InferenceSession.run = run


class Bioimageio:
    """bioimageio.core's blocked prediction, pipeline created once (as predict() would each call)."""

    def __init__(self, rdf: Path, ns: int = 10):
        from bioimageio.core import create_prediction_pipeline
        from bioimageio.spec import load_model_description

        self.descr = load_model_description(str(rdf), perform_io_checks=False)
        self.pp = create_prediction_pipeline(self.descr, weights_format="onnx")
        self.ns = ns
        self.input_id = str(self.descr.inputs[0].id)
        self.output_id = str(self.descr.outputs[0].id)
        self.axes = [str(a.id) for a in self.descr.inputs[0].axes]
        self.block = {str(a.id): int(a.size.min) + ns * int(a.size.step) for a in self.descr.inputs[0].axes
                      if hasattr(getattr(a, "size", None), "step")}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from bioimageio.core import Tensor
        from bioimageio.core.digest_spec import create_sample_for_model

        arr = x[None] if self.axes[0] == "batch" else x
        t = Tensor.from_numpy(arr, dims=tuple(self.axes))
        sample = create_sample_for_model(self.descr, inputs={self.input_id: t}, sample_id="image")
        out = self.pp.predict_sample_with_blocking(sample, ns=self.ns)
        a = np.asarray(out.members[self.output_id].data, dtype=np.float32)
        return a.reshape(a.shape[-2:])


def inner_max_diff(a: np.ndarray, b: np.ndarray, border: int = BORDER) -> float:
    """max |a - b| more than ``border`` px from the image border."""
    sl = (slice(border, -border), slice(border, -border))
    return float(np.abs(a[sl].astype(np.float64) - b[sl]).max())


def diffs(a: np.ndarray, b: np.ndarray) -> dict:
    return {f">{BORDER}px": inner_max_diff(a, b, BORDER), f">{FAR}px": inner_max_diff(a, b, FAR)}


def bench_model(label: str, rdf: Path, flops512: int, sizes: list[int], rounds: int, backends_for: dict,
                threads: int, counter: PixelCounter, peaks: list, seed: int) -> dict:
    """Interleaved rounds of bioimageio.core and the runner's backends on one package."""
    from rosette_bmz.inputs import from_outlines
    from rosette_bmz.runner import load_predictor, predict
    from rosette_bmz.synth import generate

    flop_per_px = flops512 / 512 ** 2
    t0 = time.perf_counter()
    bio = Bioimageio(rdf)
    load_s = {"bioimageio": time.perf_counter() - t0}
    bios = {"bioimageio": bio}
    preds = {}
    all_backends = sorted({b for bs in backends_for.values() for b in bs}, key=BACKENDS.index)
    for b in all_backends:
        t0 = time.perf_counter()
        preds[b] = load_predictor(rdf, b, threads=threads)
        load_s[b] = time.perf_counter() - t0
    width, halo = preds["onnx"].base_channels, preds["onnx"].halo
    res: dict = {"package": str(rdf), "base_channels": width, "halo": halo, "flops_per_512_tile": flops512,
                 "gflop_per_512_tile": flops512 / 1e9, "load_seconds": load_s, "sizes": {}}
    for size in sizes:
        x = from_outlines(generate(size, seed=seed).outlines)
        variants = list(bios) + list(backends_for[size])
        times: dict[str, list[float]] = {v: [] for v in variants}
        pixels: dict[str, int] = {}
        outs: dict[str, np.ndarray] = {}
        round_peaks = []
        for r in range(rounds):
            round_peaks.append(matmul_gflops())
            peaks.append(round_peaks[-1])
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for v in order:
                counter.pixels = 0
                t0 = time.perf_counter()
                out = bios[v](x) if v in bios else predict(x, preds[v])
                times[v].append(time.perf_counter() - t0)
                if v in bios or v == "onnx":
                    pixels[v] = counter.pixels
                outs[v] = out
                print(f"  {label} {size}^2 round {r + 1}/{rounds} {v}: {times[v][-1]:.2f} s", flush=True)
        # pixels pushed through the network by the torch backends = the onnx plan (same tiling)
        for v in variants:
            pixels.setdefault(v, pixels["onnx"])
        # bioimageio.core's padding (the halo, mirrored) in the runner: the remaining difference
        # is bioimageio.core's blocking alone
        with load_predictor(rdf, "onnx", threads=threads, pad="symmetric", border=halo) as same_pad:
            runner_bio_pad = predict(x, same_pad)
        med = {v: statistics.median(t) for v, t in times.items()}
        rows = {}
        for v in variants:
            gflops = pixels[v] * flop_per_px / med[v] / 1e9
            rows[v] = {"seconds_median": med[v], "seconds": times[v], "pixels_processed": pixels[v],
                       "pixel_overhead": pixels[v] / size ** 2, "gflop_executed": pixels[v] * flop_per_px / 1e9,
                       "gflops_achieved": gflops}
            if v not in bios:
                rows[v]["ratio_to_bioimageio"] = med[v] / med["bioimageio"]
                rows[v]["speedup_vs_bioimageio"] = med["bioimageio"] / med[v]
                rows[v]["max_abs_diff_vs_runner_onnx"] = diffs(outs[v], outs["onnx"])
                for b in bios:
                    rows[v][f"max_abs_diff_vs_{b}"] = diffs(outs[v], outs[b])
        from rosette_bmz.runner import in_memory_budget

        res["sizes"][size] = {
            "variants": rows,
            # bioimageio.core's own padding (halo px mirrored) in the runner: what remains is
            # bioimageio.core's blocking with the declared halo
            "max_abs_diff_runner_with_bioimageio_padding_vs": {b: diffs(runner_bio_pad, outs[b]) for b in bios},
            "max_abs_diff_runner_default_vs_runner_with_bioimageio_padding": diffs(outs["onnx"], runner_bio_pad),
            "bioimageio_block": bio.block, "runner_tile": preds["onnx"].tile_for(in_memory_budget()),
            # the machine is shared: the matmul rate measured in these rounds (median) as well
            "matmul_gflops_these_rounds": statistics.median(round_peaks),
        }
        print(f"  {label} {size}^2: " + ", ".join(f"{v} {med[v]:.2f} s" for v in variants), flush=True)
    for p in preds.values():
        p.close()
    for b in bios.values():
        b.pp = None
    return res


# ----------------------------------------------------------------------------- processes
#: Runs the command and reports its wall time and peak RSS. A small wrapper process starts it:
#: on Linux a forked child's ru_maxrss starts at its parent's RSS, and this benchmark's own
#: process holds gigabytes by then.
_WRAPPER = """
import json, os, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = p.stderr.read()
_, status, ru = os.wait4(p.pid, 0)
wall = time.perf_counter() - t0
print(json.dumps({"wall": wall, "maxrss_kb": ru.ru_maxrss, "rc": os.waitstatus_to_exitcode(status),
                  "stderr": err[-3000:].decode(errors="replace")}))
"""


def run_process(cmd: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, return code) of one child process."""
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if r["rc"]:
        print(f"  command failed ({r['rc']}): {' '.join(cmd)}\n{r['stderr']}", file=sys.stderr)
    return r["wall"], r["maxrss_kb"] / 1024, r["rc"]


def bench_processes(rdf: Path, size: int, rounds: int, tmp: Path, seed: int) -> dict:
    from rosette_bmz.inputs import from_outlines
    from rosette_bmz.synth import generate

    x = from_outlines(generate(size, seed=seed).outlines)
    inp = tmp / f"in{size}.npy"
    np.save(inp, x)
    inp_b = tmp / f"in{size}_batch.npy"          # bioimageio.core reads the tensor with its batch axis
    np.save(inp_b, x[None])
    bindir = Path(sys.executable).parent
    cmds = {
        "bioimageio_cli": [str(bindir / "bioimageio"), "predict", str(rdf), "--blockwise", "true", "--weight-format",
                           "onnx", "--inputs", str(inp_b), "--outputs", str(tmp / "bio_out" / "{sample_id}.npy")],
        "rosette_bmz_cli": [str(bindir / "rosette-bmz"), "predict", str(inp), "--model", str(rdf), "--backend",
                            "onnx", "--input-kind", "channels", "--out", str(tmp / "ours_out"), "--no-quantities"],
        "rosette_bmz_cli_quantities": [str(bindir / "rosette-bmz"), "predict", str(inp), "--model", str(rdf),
                                       "--backend", "onnx", "--input-kind", "channels", "--out",
                                       str(tmp / "ours_q_out")],
    }
    outdir = {"bioimageio_cli": "bio_out", "rosette_bmz_cli": "ours_out", "rosette_bmz_cli_quantities": "ours_q_out"}
    res: dict = {k: {"command": " ".join(c), "seconds": [], "peak_rss_mb": []} for k, c in cmds.items()}
    names = list(cmds)
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:     # rotated order
            shutil.rmtree(tmp / outdir[k], ignore_errors=True)
            wall, rss, rc = run_process(cmds[k])
            res[k]["seconds"].append(wall)
            res[k]["peak_rss_mb"].append(rss)
            res[k]["returncode"] = rc
            print(f"  process {size}^2 round {r + 1}/{rounds} {k}: {wall:.2f} s, {rss:.0f} MB", flush=True)
    for k in names:
        res[k]["seconds_median"] = statistics.median(res[k]["seconds"])
        res[k]["peak_rss_mb_max"] = max(res[k]["peak_rss_mb"])
    res["ratio"] = res["rosette_bmz_cli"]["seconds_median"] / res["bioimageio_cli"]["seconds_median"]
    res["speedup"] = 1 / res["ratio"]
    res["ratio_with_quantities"] = (res["rosette_bmz_cli_quantities"]["seconds_median"]
                                    / res["bioimageio_cli"]["seconds_median"])
    try:
        ours = np.asarray(__import__("tifffile").imread(tmp / "ours_out" / f"in{size}_prob.tif"))
        bio = np.load(next((tmp / "bio_out").glob("*.npy")))
        res["max_abs_diff"] = diffs(ours, bio.reshape(bio.shape[-2:]))
    except Exception as exc:  # the diff is a bonus; report why it is missing
        res["max_abs_diff"] = f"n/a ({type(exc).__name__}: {exc})"
    res["size"] = size
    return res


#: What ``rosette-bmz predict`` has imported when it starts loading the model (checked: no
#: scipy, onnxruntime, tifffile or yaml yet).
STARTUP_IMPORTS = "import rosette_bmz.cli, rosette_bmz.runner"   # tqdm comes in a thread while the model loads


def bench_startup(rounds: int = 7) -> dict:
    """Wall seconds of a Python process importing what ``rosette-bmz predict`` imports before the
    model loads (interpreter start included), against a bare ``python -c pass`` and ``import numpy``
    (the floor: onnxruntime needs numpy); medians."""
    t: dict = {"startup": [], "bare_python": [], "numpy": []}
    for _ in range(rounds):
        for k, code in (("startup", STARTUP_IMPORTS), ("bare_python", "pass"), ("numpy", "import numpy")):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            t[k].append(time.perf_counter() - t0)
    return {"command": f"python -c '{STARTUP_IMPORTS}'", "seconds": t["startup"],
            "seconds_median": statistics.median(t["startup"]), "bare_python_median": statistics.median(t["bare_python"]),
            "numpy_median": statistics.median(t["numpy"])}


def bench_proposals(sizes: tuple[int, ...] = (2048, 8192), rounds: int = 3, seed: int = 0) -> dict:
    """Seconds of ``find_proposals`` (threshold, one 8-connected label, bincounts) on size^2 maps.

    The map: blurred noise scaled so that about 1 % of the pixels lie above 0.5 in blobs of
    tens of pixels (like a real probability map); scipy is imported before timing.
    """
    from scipy import ndimage

    from rosette_bmz.proposals import find_proposals

    out = {}
    for size in sizes:
        rng = np.random.default_rng(seed)
        prob = ndimage.gaussian_filter(rng.random((size, size), dtype=np.float32), 3)
        lo, hi = np.percentile(prob[:1024, :1024], [50, 99])
        prob = np.clip(0.5 * (prob - lo) / (hi - lo), 0, 1).astype(np.float32)
        t = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            _, rows = find_proposals(prob)
            t.append(time.perf_counter() - t0)
        out[str(size)] = {"seconds_median": statistics.median(t), "seconds": t, "proposals": len(rows)}
        print(f"  find_proposals {size}^2: {statistics.median(t):.3f} s, {len(rows)} proposals", flush=True)
        del prob
    return out


def bench_streaming_rss(rdf: Path, size: int, tmp: Path, seed: int) -> dict:
    """Peak RSS of ``rosette-bmz predict`` on a size^2 outline NPY (streamed when > 4096^2)."""
    from rosette_bmz.synth import generate

    base = generate(min(size, 2048), seed=seed).outlines
    reps = -(-size // base.shape[0])
    big = np.tile(base, (reps, reps))[:size, :size]
    path = tmp / f"big{size}.npy"
    np.save(path, big)
    del big
    cmd = [str(Path(sys.executable).parent / "rosette-bmz"), "predict", str(path), "--model", str(rdf),
           "--backend", "onnx", "--input-kind", "outlines", "--out", str(tmp / "big_out")]
    wall, rss, rc = run_process(cmd)
    path.unlink()
    from rosette_bmz.runner import STREAM_PIXELS

    streamed = size * size > STREAM_PIXELS
    print(f"  {size}^2 ({'streamed' if streamed else 'in memory'}): {wall:.1f} s, peak RSS {rss:.0f} MB", flush=True)
    return {"size": size, "command": " ".join(cmd), "streamed": streamed, "seconds": wall, "peak_rss_mb": rss,
            "returncode": rc, "target_mb": 2000, "meets_target": rc == 0 and rss <= 2000}


# ----------------------------------------------------------------------------- report
_NAMES = {"bioimageio": "bioimageio.core, the package (onnx, 672 px blocks, its halo)"}


def _fmt(d: dict) -> str:
    return f"{d[f'>{BORDER}px']:.1e} / {d[f'>{FAR}px']:.1e}"


def _fma_line(f: dict) -> str:
    if not f or "computed_peak_gflops" not in f:
        return f"FMA peak: not measured ({f.get('error', 'no data') if f else 'no data'})."
    c = f["cpu"]
    hidden = (f" **AVX-512 hidden** from every process of this run by `benchmarks/avx2_only.c` (CPUID faulting; "
              f"hidden flags: {' '.join(c['hidden_by_avx2_only'])}): onnxruntime, numpy and torch ran their AVX2 + FMA "
              f"kernels, as on an AVX2 machine, but on this core and clock." if c.get("hidden_by_avx2_only") else "")
    return (f"FMA peak: **{f['computed_peak_gflops']:.0f} GFLOP/s** = {f['threads']} threads x "
            f"{f['flop_per_cycle_per_core']} FLOP/cycle ({f['rule']}; {c['vendor']} family {c['family']} model "
            f"{c['model_number']}, flags {' '.join(c['simd'])}) x {f['ghz']:.2f} GHz (measured under load by a chain "
            f"of dependent multiplies, `benchmarks/fma_peak.c`; /proc/cpuinfo reports {c['reported_mhz']} MHz). An FMA "
            f"loop of {f['lanes']}-float vectors reached {f['measured_fma_gflops']:.0f} GFLOP/s." + hidden)


def _in_process_markdown(res: dict) -> list[str]:
    m = res["machine"]
    peak = res["matmul_peak_gflops"]
    lines = ["In-process (predictors / pipelines loaded once; medians):", "",
             "| model | image | variant | median s | ratio to bioimageio.core | pixels through the net | "
             f"GFLOP/s | % of FMA peak | % of matmul peak (of the matmul rate measured in the same rounds) | max abs diff vs bioimageio.core, > {BORDER} / > {FAR} px from the border |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    fma = m.get("fma", {}).get("computed_peak_gflops")
    for label, mr in res["models"].items():
        for size, sr in mr["sizes"].items():
            for v, row in sr["variants"].items():
                if v.startswith("bioimageio"):
                    ratio = "1" if v == "bioimageio" else f"{row['seconds_median'] / sr['variants']['bioimageio']['seconds_median']:.2f}"
                    diff = "–"
                else:
                    ratio = f"**{row['ratio_to_bioimageio']:.2f}** ({row['speedup_vs_bioimageio']:.2f}x faster)"
                    diff = _fmt(row["max_abs_diff_vs_bioimageio"])
                name = _NAMES.get(v, f"rosette-bmz {v}")
                local = 100 * row["gflops_achieved"] / sr["matmul_gflops_these_rounds"]
                fma_pct = f"{100 * row['gflops_achieved'] / fma:.0f} %" if fma else "n/a"
                lines.append(f"| {label} (base {mr['base_channels']}) | {size}^2 | {name} | {row['seconds_median']:.2f} | "
                             f"{ratio} | {row['pixel_overhead']:.2f} x image | {row['gflops_achieved']:.0f} | {fma_pct} | "
                             f"{100 * row['gflops_achieved'] / peak:.0f} % ({local:.0f} %) | {diff} |")
    lines += ["", "FLOPs per 512^2 tile (Conv2d + ConvTranspose2d, 2 x multiply-adds, counted with forward hooks): " +
              ", ".join(f"{k} (base {v['base_channels']}): {v['gflop_per_512_tile']:.1f} GFLOP"
                        for k, v in res["models"].items()) + ". GFLOP/s = pixels through the net x FLOPs per pixel "
              "/ median seconds (everything else the variant does counts as time, not FLOPs).", ""]
    lines += [f"Output agreement, max abs diff > {BORDER} / > {FAR} px from the border:", "",
              "| model | image | halo | runner (zeros, no border) vs runner with bioimageio.core's padding (halo px mirrored) | "
              "runner with bioimageio.core's padding vs bioimageio.core (= bioimageio.core's block seams) |",
              "|---|---|---|---|---|"]
    for label, mr in res["models"].items():
        for size, sr in mr["sizes"].items():
            vs = sr["max_abs_diff_runner_with_bioimageio_padding_vs"]
            lines.append(f"| {label} | {size}^2 | {mr.get('halo', '?')} px | "
                         f"{_fmt(sr['max_abs_diff_runner_default_vs_runner_with_bioimageio_padding'])} | "
                         f"{_fmt(vs['bioimageio'])} |")
    lines.append("")
    return lines


def markdown(res: dict) -> str:
    m = res["machine"]
    peak = res["matmul_peak_gflops"]
    lines = [f"# Inference benchmark ({m['date_utc']} UTC)", "",
             f"{m['cpu']}, {m['threads']} threads ({m['logical_cpus']} logical CPUs, AVX-512: {m['avx512f']}), "
             f"{m['memory']} RAM; torch {m['torch']}, onnxruntime {m['onnxruntime']}, bioimageio.core "
             f"{m['bioimageio.core']}; load average at start {m['loadavg_at_start'][0]:.2f}. {res['rounds_note']}", "",
             _fma_line(m.get("fma", {})), "",
             f"torch fp32 matmul peak (2048^3 sgemm best of 5 in every round, 4096^3 best of 3 at start and end; the "
             f"maximum): **{peak:.0f} GFLOP/s**; onnxruntime's own MatMul (MLAS sgemm, 2048^3 / 4096^3, best of "
             f"5 / 3, measured at the end): {res['onnxruntime_matmul_gflops']:.0f} GFLOP/s.",
             ""]
    if res["models"]:
        lines += _in_process_markdown(res)
    pr = res.get("processes")
    if pr:
        bb, o = pr["bioimageio_cli"], pr["rosette_bmz_cli"]
        diff = pr["max_abs_diff"]
        diff = _fmt(diff) if isinstance(diff, dict) else diff
        lines += [f"Whole processes, demo package, {pr['size']}^2 2-channel NPY input (start-up, reading and writing "
                  f"included; medians of {len(bb['seconds'])}, interleaved):", "",
                  "| command | median s | peak RSS MB |", "|---|---|---|",
                  f"| `bioimageio predict rdf.yaml --blockwise true --weight-format onnx` | {bb['seconds_median']:.2f} | {bb['peak_rss_mb_max']:.0f} |",
                  f"| `rosette-bmz predict --backend onnx --no-quantities` (probability + proposals) | {o['seconds_median']:.2f} | {o['peak_rss_mb_max']:.0f} |",
                  f"| `rosette-bmz predict --backend onnx` (+ k, kind and per-image summary; the default) | "
                  f"{pr['rosette_bmz_cli_quantities']['seconds_median']:.2f} | {pr['rosette_bmz_cli_quantities']['peak_rss_mb_max']:.0f} |",
                  "", f"Ratio **{pr['ratio']:.2f}** ({pr['speedup']:.2f}x faster) for the same work as bioimageio.core "
                  f"(probability map; proposals on top), {pr['ratio_with_quantities']:.2f} with the quantities; "
                  f"max abs diff of the probability maps (> {BORDER} / > {FAR} px from the border): {diff}.", ""]
    su = res.get("startup")
    if su:
        lines += [f"Start-up before the model loads (`{su['command']}`, median of {len(su['seconds'])}): "
                  f"**{su['seconds_median']:.3f} s** (a bare `python -c pass`: {su['bare_python_median']:.3f} s"
                  + (f"; `import numpy` alone: {su['numpy_median']:.3f} s" if "numpy_median" in su else "") + ").", ""]
    pp = res.get("proposals")
    if pp:
        lines += ["`find_proposals` (threshold, one 8-connected `ndimage.label`, areas / centroids / scores by "
                  "`bincount`; scipy already imported), median of 3: " +
                  ", ".join(f"{k}^2 **{v['seconds_median']:.3f} s** ({v['proposals']} proposals)" for k, v in pp.items())
                  + ".", ""]
    st = res.get("streaming")
    if st:
        how = "streamed from disk" if st["streamed"] else "NOT streamed (<= 4096^2: read whole)"
        lines += [f"Large image: `rosette-bmz predict` on a {st['size']}^2 outline NPY (uint8, {how}) with the demo package: peak "
                  f"RSS **{st['peak_rss_mb']:.0f} MB** (target 2000 MB), {st['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def targets(res: dict) -> dict:
    """The issue's targets, each with the measured number and whether it is met."""
    t: dict = {}
    peak = res["matmul_peak_gflops"]
    for label, mr in res["models"].items():
        for size, sr in mr["sizes"].items():
            rows = {v: r for v, r in sr["variants"].items() if not v.startswith("bioimageio")}
            best = min(rows, key=lambda v: rows[v]["seconds_median"])
            r = rows[best]
            t[f"{label} {size}^2 in-process >= 2x"] = {"best_backend": best, "speedup": r["speedup_vs_bioimageio"],
                                                      "met": r["speedup_vs_bioimageio"] >= 2}
            # the runner pads with zeros, bioimageio.core mirrors: their outputs differ within the
            # receptive field of the border, so "away from the border" is > FAR px
            d = r["max_abs_diff_vs_bioimageio"][f">{FAR}px"]
            t[f"{label} {size}^2 max abs diff <= 1e-3 (> {FAR} px from the border) vs bioimageio.core"] = {
                "value": d, "met": d <= 1e-3}
            same = sr["max_abs_diff_runner_with_bioimageio_padding_vs"]["bioimageio"][f">{BORDER}px"]
            t[f"{label} {size}^2 max abs diff <= 1e-3 (> {BORDER} px), runner with bioimageio.core's padding"] = {
                "value": same, "met": same <= 1e-3}
        if label == "full_width":
            best_g = max(r["gflops_achieved"] for sr in mr["sizes"].values() for v, r in sr["variants"].items())
            fma = res["machine"].get("fma", {}).get("computed_peak_gflops")
            if fma:   # the runner's own passes, not bioimageio.core's
                ours = max(r["gflops_achieved"] for sr in mr["sizes"].values() for v, r in sr["variants"].items()
                           if not v.startswith("bioimageio"))
                t["full_width >= 80 % of FMA peak (rosette-bmz)"] = {"gflops": ours, "fma_peak_gflops": fma,
                                                                     "fraction": ours / fma, "met": ours / fma >= 0.8}
            local = max(r["gflops_achieved"] / sr["matmul_gflops_these_rounds"] for sr in mr["sizes"].values()
                        for v, r in sr["variants"].items())
            t["full_width >= 80 % of matmul peak"] = {"gflops": best_g, "fraction": best_g / peak,
                                                      "fraction_of_matmul_in_same_rounds": local,
                                                      "met": best_g / peak >= 0.8}
    if res.get("processes"):
        t["whole process ratio <= 0.40 (>= 2.5x)"] = {"ratio": res["processes"]["ratio"],
                                                      "speedup": res["processes"]["speedup"],
                                                      "met": res["processes"]["ratio"] <= 0.40}
    if res.get("startup"):
        t["start-up before the model loads < 0.3 s"] = {"seconds": res["startup"]["seconds_median"],
                                                         "met": res["startup"]["seconds_median"] < 0.3}
    if res.get("streaming") and res["streaming"]["streamed"]:
        t[f"streaming {res['streaming']['size']}^2 <= 2 GB RSS"] = {"peak_rss_mb": res["streaming"]["peak_rss_mb"],
                                                                  "met": res["streaming"]["meets_target"]}
    return t


def targets_markdown(t: dict) -> str:
    lines = ["| target | measured | met |", "|---|---|---|"]
    for k, v in t.items():
        val = ", ".join(f"{a}={b:.3g}" if isinstance(b, float) else f"{a}={b}" for a, b in v.items() if a != "met")
        lines.append(f"| {k} | {val} | {'yes' if v['met'] else 'no'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: small images, 1 round, small streaming image")
    ap.add_argument("--demo", default=None, help="demo rdf.yaml or checkpoint (default: root rdf.yaml, else "
                                                  "rosette_bmz/data/rosette_demo.pt or runs/demo/best.pt)")
    ap.add_argument("--rounds-demo", type=int, default=3)
    ap.add_argument("--rounds-full", type=int, default=2)
    ap.add_argument("--rounds-process", type=int, default=3)
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--processes-only", action="store_true",
                    help="only the machine (FMA peak), start-up and the whole-process comparison (~3 min): "
                         "the run to repeat on every machine kind")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--isa", choices=("native", "avx2"), default="native",
                    help="avx2: on an AVX-512 machine with CPUID faulting, hide AVX-512 from this run and its "
                         "child processes (benchmarks/avx2_only.c), so every library takes its AVX2 kernels")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/inference.json"))
    args = ap.parse_args(argv)
    if args.isa == "avx2":
        run_as_avx2([str(Path(__file__).resolve()), *(sys.argv[1:] if argv is None else argv)],
                    tempfile.mkdtemp(prefix="bench-avx2-"))

    import torch

    from rosette_bmz.runner import default_threads
    from rosette_bmz.checkpoint import build_model
    from rosette_bmz.model import AttentionUNet

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="bench-machine-") as td:
        res: dict = {"machine": machine(threads, Path(td))}
    print("machine:", res["machine"], flush=True)
    q = args.quick
    sizes = [704, 1024] if q else [1024, 2048]   # bioimageio.core needs at least one 672 px block
    rounds_demo, rounds_full, rounds_proc = (1, 1, 1) if q else (args.rounds_demo, args.rounds_full, args.rounds_process)
    res["rounds_note"] = (f"In-process: {rounds_demo} interleaved rounds (demo), {rounds_full} (full width); "
                          f"whole processes: {rounds_proc}." + (" QUICK SMOKE RUN." if q else ""))
    counter = PixelCounter()
    peaks: list[float] = [matmul_gflops(), matmul_gflops(4096, 3)]
    res["models"] = {}
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as td:
        tmp = Path(td)
        demo_rdf, demo_src = demo_package(tmp, args.demo)
        print("demo package:", demo_src, flush=True)
        from rosette_bmz.runner import resolve_model

        width = resolve_model(demo_rdf).width or 16
        f_demo = conv_flops(AttentionUNet(base_channels=width).eval())
        if not args.processes_only:
            res["models"]["demo"] = bench_model("demo", demo_rdf, f_demo, sizes, rounds_demo,
                                                {s: BACKENDS for s in sizes}, threads, counter, peaks, args.seed)
            res["models"]["demo"]["source"] = demo_src
        if not (args.skip_full or args.processes_only):
            t0 = time.perf_counter()
            full_rdf = full_width_package(tmp)
            print(f"full-width package exported in {time.perf_counter() - t0:.0f} s", flush=True)
            from reference import recipe_state_dict

            full = build_model(recipe_state_dict())
            n_params = sum(p.numel() for p in full.parameters())
            f_full = conv_flops(full)
            del full
            # torch / torchscript at base 64 take minutes per 2048^2 image: only at the smaller size
            backends_for = {sizes[0]: BACKENDS, sizes[1]: ("onnx",)}
            res["models"]["full_width"] = bench_model("full_width", full_rdf, f_full, sizes, rounds_full,
                                                      backends_for, threads, counter, peaks, args.seed)
            res["models"]["full_width"]["parameters"] = n_params
            res["models"]["full_width"]["source"] = "tests/reference.py recipe_state_dict() exported with run_test=False"
        res["startup"] = bench_startup(3 if q else 7)
        res["proposals"] = bench_proposals((1024,) if q else (2048, 8192))
        res["processes"] = bench_processes(demo_rdf, 1024 if q else 2048, rounds_proc, tmp, args.seed)
        if not args.processes_only:
            res["streaming"] = bench_streaming_rss(demo_rdf, 2048 if q else 8192, tmp, args.seed)
    peaks += [matmul_gflops(), matmul_gflops(4096, 3)]
    res["matmul_peak_gflops"] = max(peaks)
    res["onnxruntime_matmul_gflops"] = max(ort_matmul_gflops(2048, 5, threads), ort_matmul_gflops(4096, 3, threads))
    res["matmul_gflops_per_round"] = peaks
    res["targets"] = targets(res)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(res, indent=2, default=str))
    md = markdown(res) + "\n" + targets_markdown(res["targets"]) + "\n"
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(md)
    print(md)
    print("wrote", out, "and", out.with_suffix(".md"))
    return 0



if __name__ == "__main__":
    sys.exit(main())
