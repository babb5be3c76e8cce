"""Operating point: choose a checkpoint's threshold on validation images and bake it into the weights.

    rosette-bmz calibrate --model runs/mine/best.pt --data data/val --out runs/mine/calibrated.pt
    rosette-bmz calibrate ... --min-precision 0.85     # highest recall at >= 85 % event precision

Everything downstream of a package reads its output at 0.5: ``rosette-bmz predict``, the
model card's metrics, BiaPy's and deepImageJ's thresholding. A trained network's best
threshold is seldom exactly 0.5, and a threshold kept beside the weights (as StarDist keeps
its optimised thresholds in ``thresholds.json``) would be ignored by every other consumer of
the package. So :func:`calibrate` sweeps thresholds on images with ground truth (a folder as
``rosette-bmz synth`` writes it, never the test images), picks one, and writes a checkpoint
whose final layer's bias is lowered by ``logit(t)``: ``sigmoid(z - logit(t)) >= 0.5`` exactly
where ``sigmoid(z) >= t``, so the new weights at 0.5 detect what the old ones did at ``t``.
Nothing else changes (architecture, file size, every exporter).

Per threshold ``t`` the sweep reports the card's event metrics read at ``t``: recall (rosettes
with >= 1 pixel at ``p >= t``), precision (components of ``p > t`` with ``>= min_size`` pixels
that touch a rosette) and decoys hit. The choice: with ``min_precision``, the lowest threshold
whose precision reaches it (the most recall at that precision); otherwise, or where no
threshold reaches it, the highest event F1.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import metrics as M
from .errors import EvaluationError

__all__ = ["THRESHOLDS", "threshold_sweep", "choose_threshold", "shift_threshold", "calibrate", "format_sweep",
           "calibration_threshold", "logit"]

#: Thresholds swept by default.
THRESHOLDS = tuple(round(0.30 + 0.05 * i, 2) for i in range(13))   # 0.30 .. 0.90

#: The state-dict entry of the final 1x1 convolution's bias (``AttentionUNet.final[0]``).
FINAL_BIAS = "final.0.bias"


def threshold_sweep(items: Sequence[Any], predict_fn: Callable[[np.ndarray], np.ndarray],
                    thresholds: Sequence[float] = THRESHOLDS, min_size: int = M.MIN_PROPOSAL_SIZE) -> list[dict]:
    """Event recall, precision, F1 and decoys hit of ``predict_fn`` on ``items`` at each threshold.

    ``items``: :class:`rosette_bmz.evaluate.EvalImage` objects; ``predict_fn``: ``(2, H, W)``
    input -> ``(H, W)`` probability. Each image is predicted once.
    """
    from .inputs import from_outlines

    ts = sorted({float(t) for t in thresholds})
    if not ts or not all(0 < t < 1 for t in ts):
        raise EvaluationError(f"thresholds must lie strictly between 0 and 1, got {list(thresholds)!r}")
    accs = {t: M.MetricsAccumulator(threshold=t, min_size=min_size) for t in ts}
    detected = dict.fromkeys(ts, 0)
    n_rosettes = 0
    for it in items:
        prob = predict_fn(from_outlines(it.outlines, it.source or it.name))
        radius = M.decoy_radius(it.meta)
        for t in ts:
            stats = M.rosette_pixel_stats(prob, it.rosettes, threshold=t)
            detected[t] += int(np.count_nonzero(stats["n_high"] >= 1))
            accs[t].add(prob, it.rosettes, it.decoys, radius=radius, name=it.name)
        n_rosettes += int(stats["ids"].size)
    rows = []
    for t in ts:
        s = accs[t].summary()
        recall = detected[t] / n_rosettes if n_rosettes else None
        precision = s["event_precision"]
        f1 = (2 * recall * precision / (recall + precision)
              if recall is not None and precision is not None and recall + precision > 0 else None)
        rows.append({"threshold": t, "event_recall": recall, "event_precision": precision, "event_f1": f1,
                     "decoy_hit_rate": s["decoy_hit_rate"], "n_rosettes": n_rosettes, "n_detected": detected[t],
                     "n_proposals": s["n_proposals"], "n_proposals_matched": s["n_proposals_matched"]})
    return rows


def choose_threshold(sweep: Sequence[dict], min_precision: float | None = None) -> tuple[float, str]:
    """The threshold of the sweep to use, and why (module doc)."""
    scored = [r for r in sweep if r["event_f1"] is not None]
    if not scored:
        raise EvaluationError("no threshold gives an event F1 (no rosettes or no proposals in the images)")
    if min_precision is not None:
        ok = [r for r in scored if r["event_precision"] >= min_precision]
        if ok:
            best = min(ok, key=lambda r: r["threshold"])
            return best["threshold"], f"lowest threshold with event precision >= {min_precision:g}"
    best = max(scored, key=lambda r: (r["event_f1"], -abs(r["threshold"] - M.THRESHOLD)))
    why = "highest event F1"
    if min_precision is not None:
        why += f" (no threshold reached event precision {min_precision:g})"
    return best["threshold"], why


def calibration_threshold(checkpoint: str | os.PathLike) -> float | None:
    """The threshold :func:`calibrate` baked into ``checkpoint``, or None.

    A checkpoint carries it in its JSON sidecar, a package exported from one in its rdf.yaml
    (``config.rosette_bmz.calibration.threshold``).
    """
    import yaml

    from .checkpoint import calibration_threshold_of, sidecar_path
    from .constants import RDF_CONFIG_KEY

    path = Path(checkpoint)
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
            return calibration_threshold_of(config.get(RDF_CONFIG_KEY))
        side = sidecar_path(checkpoint)
        if path.suffix.lower() not in (".pt", ".pth") or not side.is_file():
            return None
        return calibration_threshold_of(json.loads(side.read_text()))
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return None


def logit(threshold: float) -> float:
    """``log(t / (1 - t))``: the bias offset that moves a threshold ``t`` to 0.5."""
    return math.log(threshold / (1 - threshold))


def shift_threshold(state: dict, threshold: float) -> dict:
    """A copy of ``state`` whose output at 0.5 is the original's at ``threshold`` (bias - logit(t))."""
    import torch

    if not 0 < threshold < 1:
        raise EvaluationError(f"threshold must lie strictly between 0 and 1, got {threshold!r}")
    if FINAL_BIAS not in state:
        raise EvaluationError(f"the state dict has no {FINAL_BIAS} (not an AttentionUNet checkpoint?)")
    out = dict(state)
    out[FINAL_BIAS] = state[FINAL_BIAS] - torch.tensor(logit(threshold), dtype=state[FINAL_BIAS].dtype)
    return out


def calibrate(model: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, *,
              min_precision: float | None = None, thresholds: Sequence[float] = THRESHOLDS,
              backend: str = "onnx", mode: str = "published", threads: int | None = None,
              min_size: int = M.MIN_PROPOSAL_SIZE, force: bool = False) -> dict[str, Any]:
    """Sweep ``model`` (a checkpoint) on the ground truth in ``data`` and write the shifted checkpoint to ``out``.

    Returns the report (also in the new checkpoint's sidecar under ``calibration``):
    ``chosen`` (the swept threshold picked), ``threshold``, ``reason``, ``sweep`` (one row per
    threshold), ``data``, ``source``. ``threshold`` is the whole offset on the final bias, counted
    from the uncalibrated weights: a ``model`` that is itself calibrated (a checkpoint trained from
    a calibrated one keeps that offset) has ``previous`` = its threshold ``t0``, and
    ``logit(threshold) = logit(t0) + logit(chosen)``, so a later fine-tune removes both.
    """
    from .checkpoint import build_model, calibration_threshold_of, load_checkpoint, save_checkpoint
    from .evaluate import load_eval_dataset
    from .runner import load_predictor, predict

    model, out = Path(model), Path(out)
    if model.suffix.lower() not in (".pt", ".pth"):
        raise EvaluationError(f"{model}: calibrate needs a checkpoint (.pt / .pth), the weights it rewrites")
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; choose another --out or pass --force")
    if out.resolve() == model.resolve():
        raise EvaluationError(f"{out}: write the calibrated weights beside the checkpoint, not over it")
    if min_precision is not None and not 0 < min_precision <= 1:
        raise EvaluationError(f"min_precision must lie in (0, 1], got {min_precision!r}")
    loaded = load_checkpoint(model)
    items = load_eval_dataset(data)
    predictor = load_predictor(model, backend, threads)
    try:
        sweep = threshold_sweep(items, lambda x: predict(x, predictor, mode=mode), thresholds, min_size)
    finally:
        predictor.close()
    chosen, reason = choose_threshold(sweep, min_precision)
    state = shift_threshold(loaded.model.state_dict(), chosen)
    previous = calibration_threshold_of(loaded.metadata)
    threshold = chosen if previous is None else 1 / (1 + math.exp(-(logit(previous) + logit(chosen))))
    report = {"threshold": round(threshold, 6), "chosen": chosen, "previous": previous, "reason": reason,
              "min_precision": min_precision, "sweep": sweep,
              "data": str(data), "images": len(items), "source": str(model), "backend": backend, "mode": mode,
              "written": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    meta = {**loaded.metadata, "calibration": report}
    save_checkpoint(build_model(state, f"calibrated {model}"), out, meta)
    return report


def format_sweep(report: dict[str, Any]) -> str:
    """The sweep as a markdown table, the chosen threshold marked."""

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}"

    lines = ["| threshold | event recall % | event precision % | event F1 % | decoys hit % |",
             "|---:|---:|---:|---:|---:|"]
    for r in report["sweep"]:
        mark = " **(chosen)**" if r["threshold"] == report.get("chosen", report["threshold"]) else ""
        lines.append(f"| {r['threshold']:.2f}{mark} | {pct(r['event_recall'])} | {pct(r['event_precision'])} | "
                     f"{pct(r['event_f1'])} | {pct(r['decoy_hit_rate'])} |")
    return "\n".join(lines)
