"""Model-card evaluation: the network and the classical baseline side by side.

:func:`evaluate_dataset` reads a folder of ground truth, predicts every image with the
model (any runner backend), runs the classical vertex-multiplicity baseline
(:mod:`rosette_bmz.baseline`) on the same outlines, scores both with the same metrics
(:mod:`rosette_bmz.metrics`, definitions in ``docs/metrics.md``) and returns a report dict
whose ``"table_markdown"`` is the model-card table with the published card's values in a
third column. ``rosette-bmz evaluate`` prints that table and writes the report as JSON.

Data layout (what ``rosette-bmz synth`` writes; napari annotations in the same layout work):
per image ``<stem>_rosettes.tif`` (rosette instance labels, 0 = none) and the input the
model reads, ``<stem>_outlines.tif`` (binary Cellpose-style outlines) or, if that is
absent, ``<stem>_labels.tif`` (a cell label image; the outlines are drawn from it with
:func:`rosette_bmz.inputs.inner_outlines`). An optional ``<stem>.json`` adds the decoys
(``"decoys": [{"y", "x", ...}]``) and ``"cell_diameter"`` (pixels; sets the decoy radius).

``truth="labels"`` (``rosette-bmz evaluate --truth labels``) needs no annotation at all: the
ground truth is read off each ``<stem>_labels.tif`` (a corrected segmentation, or any cell
tiling) by the one definition of a rosette (:func:`rosette_bmz.definition.find_rosettes`, gaps
up to 3 px closed first): its rosettes are the events, its 4-cell junctions the decoys, the
typical cell diameter sets the decoy radius. The synthetic generator labels its images with the
same function in the same way (on its final label image, gaps closed), so for a synthetic folder
``--truth labels`` reproduces the ``_rosettes.tif`` files.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import metrics as M
from .constants import EVAL_TRUTHS as TRUTHS
from .errors import EvaluationError
from .files import atomic_path

__all__ = ["EvaluationError", "EvalImage", "MODEL_CARD", "TRUTHS", "load_eval_dataset", "evaluate_dataset",
           "format_table", "checked_probability", "write_report"]


log = logging.getLogger(__name__)

#: The published model card (54 held-out images, 269 rosettes). Ratios as reported, plus the
#: counts behind the event rows.
MODEL_CARD: dict[str, Any] = {
    "source": "NoahBruderer/nematostella_rosette_detection model card (Hugging Face), Evaluation table",
    "n_images": 54, "n_rosettes": 269,
    "pixel_dice": 0.51, "pixel_f1": 0.61, "pixel_recall": 0.64,
    "event_recall": 239 / 269, "n_detected": 239,
    "coverage_ge10_at04": 224 / 269, "n_coverage_ge10_at04": 224,
    "coverage_gt80_at05": 135 / 269, "n_coverage_gt80_at05": 135,
    "coverage_gt40_at05": 182 / 269, "n_coverage_gt40_at05": 182,
    "completely_missed": 30 / 269, "n_missed": 30,
}

#: (label, key of the ratio, key of its count or None, what kind of number). Table row order.
ROWS: tuple[tuple[str, str, str | None, str], ...] = (
    ("Pixel-level Dice (soft, mean per image)", "pixel_dice", None, "ratio"),
    ("Pixel-level F1 (p ≥ 0.5, all pixels)", "pixel_f1", None, "ratio"),
    ("Pixel-level Recall (p ≥ 0.5, all pixels)", "pixel_recall", None, "ratio"),
    ("Pixel-level Precision (p ≥ 0.5, all pixels)", "pixel_precision", None, "ratio"),
    ("Event-level Recall (≥ 1 px at p ≥ 0.5)", "event_recall", "n_detected", "event"),
    ("Rosettes with ≥ 10 % pixel coverage at 0.4", "coverage_ge10_at04", "n_coverage_ge10_at04", "event"),
    ("Rosettes with > 80 % pixel coverage at 0.5", "coverage_gt80_at05", "n_coverage_gt80_at05", "event"),
    ("Rosettes with > 40 % pixel coverage at 0.5", "coverage_gt40_at05", "n_coverage_gt40_at05", "event"),
    ("Completely missed (no pixel at 0.5)", "completely_missed", "n_missed", "event"),
    ("Event precision (proposals on a rosette)", "event_precision", "n_proposals_matched", "proposal"),
    ("Proposals per image", "proposals_per_image", None, "number"),
    ("False proposals per image", "false_proposals_per_image", None, "number"),
    ("Decoys hit (4-cell junctions, small cells)", "decoy_hit_rate", "n_decoys_hit", "decoy"),
)

_SUFFIXES = (".tif", ".tiff")


@dataclass
class EvalImage:
    """One ground-truth image.

    ``outlines``: the binary outline image the model and the baseline read (any 0/x
    encoding; checked by the input builder when used); ``rosettes``: instance labels;
    ``meta``: the JSON (decoys, cell_diameter) or {}; ``labels``: the cell labels if given;
    ``source``: where the outlines came from (named in error messages).
    """

    name: str
    outlines: np.ndarray
    rosettes: np.ndarray
    meta: dict = field(default_factory=dict)
    labels: np.ndarray | None = None
    source: str | None = None

    @property
    def decoys(self) -> list[dict]:
        return list(self.meta.get("decoys") or [])


# ----------------------------------------------------------------------------- data
def _find(directory: Path, stem: str, suffix: str) -> Path | None:
    for ext in _SUFFIXES:
        p = directory / f"{stem}{suffix}{ext}"
        if p.is_file():
            return p
    return None


def _read(path: Path) -> np.ndarray:
    from .inputs import read_image

    arr = np.asarray(read_image(path))
    if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
        arr = arr.reshape(arr.shape[1:] if arr.shape[0] == 1 else arr.shape[:-1])
    if arr.ndim != 2:
        raise EvaluationError(f"{path}: expected a 2D image, got shape {arr.shape}")
    return arr


def load_eval_dataset(directory: str | os.PathLike, truth: str = "files") -> list[EvalImage]:
    """Read every ``<stem>_rosettes.tif`` of ``directory`` with its input (module doc), sorted by stem.

    ``truth="labels"``: every ``<stem>_labels.tif`` instead, its ground truth made by the
    definition (module doc).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise EvaluationError(f"{directory}: no such directory")
    if truth not in TRUTHS:
        raise EvaluationError(f"truth must be one of {', '.join(TRUTHS)}, not {truth!r}")
    if truth == "labels":
        return _truth_from_labels(directory)
    stems = sorted({p.name[: p.name.rindex("_rosettes")] for ext in _SUFFIXES
                    for p in directory.glob(f"*_rosettes{ext}")})
    if not stems:
        raise EvaluationError(f"{directory}: no ground truth found (expected <name>_rosettes.tif with "
                              "<name>_outlines.tif or <name>_labels.tif beside it, as `rosette-bmz synth` writes)")
    items = []
    for stem in stems:
        ros_path = _find(directory, stem, "_rosettes")
        rosettes = _read(ros_path)
        if rosettes.dtype.kind not in "biu":
            raise EvaluationError(f"{ros_path}: rosette masks must be an integer label image, got {rosettes.dtype}")
        out_path, lab_path = _find(directory, stem, "_outlines"), _find(directory, stem, "_labels")
        labels = _read(lab_path) if lab_path else None
        if out_path is not None:
            outlines, source = _read(out_path), str(out_path)   # checked by the input builder when used
        elif labels is not None:
            from .inputs import inner_outlines

            outlines, source = inner_outlines(labels).astype(np.uint8), f"{lab_path} (outlines drawn from the labels)"
        else:
            raise EvaluationError(f"{ros_path}: no input beside it (expected {stem}_outlines.tif or "
                                  f"{stem}_labels.tif)")
        if outlines.shape != rosettes.shape or (labels is not None and labels.shape != rosettes.shape):
            raise EvaluationError(f"{ros_path}: rosette mask {rosettes.shape} and input "
                                  f"{outlines.shape} of {stem} differ in shape")
        meta: dict = {}
        js = directory / f"{stem}.json"
        if js.is_file():
            try:
                meta = json.loads(js.read_text())
            except (OSError, ValueError) as exc:
                raise EvaluationError(f"{js}: cannot read ({type(exc).__name__}: {exc})") from None
            if not isinstance(meta, dict):
                raise EvaluationError(f"{js}: expected a JSON object")
            for d in meta.get("decoys") or []:
                if not (isinstance(d, dict) and "y" in d and "x" in d):
                    raise EvaluationError(f"{js}: every decoy needs 'y' and 'x', got {d!r}")
        items.append(EvalImage(stem, outlines, rosettes.astype(np.int64, copy=False), meta, labels, source))
    return items


def _truth_from_labels(directory: Path) -> list[EvalImage]:
    from .baseline import LABEL_GAP_FILL
    from .definition import find_rosettes

    stems = sorted({p.name[: p.name.rindex("_labels")] for ext in _SUFFIXES for p in directory.glob(f"*_labels{ext}")})
    if not stems:
        raise EvaluationError(f"{directory}: no label images found (expected <name>_labels.tif: a cell label "
                              "image per image, the ground truth is read off it by the rosette definition)")
    items = []
    for stem in stems:
        lab_path = _find(directory, stem, "_labels")
        labels = _read(lab_path)
        if labels.dtype.kind not in "iu" or (labels.size and labels.min() < 0):
            raise EvaluationError(f"{lab_path}: a cell label image must hold non-negative integers, got {labels.dtype}")
        t = find_rosettes(labels, fill_gaps=LABEL_GAP_FILL)
        out_path = _find(directory, stem, "_outlines")
        if out_path is not None:
            outlines, source = _read(out_path), str(out_path)
            if outlines.shape != labels.shape:
                raise EvaluationError(f"{out_path}: shape {outlines.shape} differs from {lab_path} {labels.shape}")
        else:
            from .inputs import inner_outlines

            outlines, source = inner_outlines(labels).astype(np.uint8), f"{lab_path} (outlines drawn from the labels)"
        meta = {"truth": "labels", "cell_diameter": t.cell_diameter, "rosettes": t.rosettes, "decoys": t.decoys}
        items.append(EvalImage(stem, outlines, t.mask.astype(np.int64), meta, labels, source))
    return items


# ----------------------------------------------------------------------------- evaluation
def _fmt_cell(s: dict[str, Any] | None, key: str, count: str | None, what: str) -> str:
    if s is None or key not in s:
        return "—"
    v = s[key]
    if v is None:
        return "n/a"
    if what == "ratio":
        return f"{v:.2f}"
    if what == "number":
        return f"{v:.1f}"
    den = {"event": "n_rosettes", "proposal": "n_proposals", "decoy": "n_decoys"}[what]
    pct = f"{100 * v:.1f} %"
    if count and count in s and den in s:
        pct += f" ({s[count]}/{s[den]})"
    return pct


def format_table(model: dict[str, Any] | None, baseline: dict[str, Any] | None,
                 card: dict[str, Any] | None = MODEL_CARD, model_name: str = "Model",
                 checked: dict[str, Any] | None = None) -> str:
    """The model-card markdown table: one row per metric, columns model / checked (when given) /
    baseline / published card."""
    cols = ([model_name] + (["Checked"] if checked is not None else []) + (["Baseline"] if baseline is not None else [])
            + (["Model card"] if card else []))
    lines = ["| Metric | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for label, key, count, what in ROWS:
        cells = [_fmt_cell(model, key, count, what)]
        if checked is not None:
            cells.append(_fmt_cell(checked, key, count, what))
        if baseline is not None:
            cells.append(_fmt_cell(baseline, key, count, what))
        if card:
            cells.append(_fmt_cell(card, key, count, what))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def checked_probability(outlines: np.ndarray, prob: np.ndarray, threshold: float = M.THRESHOLD,
                        min_size: int = M.MIN_PROPOSAL_SIZE, name: str = "outlines") -> np.ndarray:
    """The proposals of ``prob`` checked against the vertex graph of the ``outlines`` it was predicted
    from (``rosette-bmz predict --check``), as a 0/1 map (``name`` names the outlines in errors)."""
    from .proposals import find_proposals
    from .quantities import check_image_proposals

    labels, rows = find_proposals(prob, threshold, min_size)
    checked, _ = check_image_proposals(labels, rows, prob, outlines, "outlines", name)
    return (checked > 0).astype(np.float32)


def _baseline_prob(item: EvalImage, input_kind: str, params: dict[str, Any]) -> np.ndarray:
    from .baseline import detect_rosettes

    image = item.labels if input_kind == "labels" else item.outlines
    return (detect_rosettes(image, input_kind, **params).rosettes > 0).astype(np.float32)


def evaluate_dataset(model: Any, data_dir: str | os.PathLike | Sequence[EvalImage], backend: str = "onnx",
                     *, predict_fn: Callable[[np.ndarray], np.ndarray] | None = None, mode: str = "published",
                     threads: int | None = None, baseline: bool = True, baseline_input: str = "outlines",
                     baseline_params: dict[str, Any] | None = None, threshold: float = M.THRESHOLD,
                     min_size: int = M.MIN_PROPOSAL_SIZE, progress: bool = False,
                     truth: str = "files", tta: bool = False, check: bool = False) -> dict[str, Any]:
    """Score ``model`` and the classical baseline on the ground truth in ``data_dir``.

    ``model``: rdf.yaml / package folder / checkpoint / torch module (None with ``predict_fn``), run through
    :func:`rosette_bmz.runner.load_predictor` with ``backend`` and tiled ``mode``
    (default ``published``: 512 windows, 128 overlap, as the card was computed).
    ``predict_fn``: instead of a model, any function ``(2, H, W) float32 -> (H, W)``
    probability (e.g. for tests or another detector). ``data_dir``: a folder (module doc)
    or already loaded :class:`EvalImage` items. ``baseline_input``: what the baseline reads,
    ``outlines`` (the model's input, default) or ``labels`` (needs ``<stem>_labels.tif``).
    ``truth``: ``files`` (the ``_rosettes.tif`` annotations) or ``labels`` (the definition applied
    to each ``_labels.tif``, module doc). ``tta``: the model's probability is the mean over the
    8 rotations / flips (:func:`rosette_bmz.runner.predict_tta`). ``check``: also score the model's
    proposals checked against the vertex graph of the outlines (``rosette-bmz predict --check``,
    :func:`rosette_bmz.quantities.check_proposals`; metrics ``checked``).

    Returns the report: ``metrics`` (``model`` / ``baseline`` summaries, see
    :func:`rosette_bmz.metrics.summarize`), ``model_card``, ``per_image`` and
    ``table_markdown``.
    """
    from .inputs import from_outlines

    if (model is None) == (predict_fn is None):
        raise EvaluationError("give exactly one of model and predict_fn")
    if baseline_input not in ("outlines", "labels"):
        raise EvaluationError(f"baseline_input must be 'outlines' or 'labels', not {baseline_input!r}")
    items = (list(data_dir) if not isinstance(data_dir, (str, os.PathLike))
             else load_eval_dataset(data_dir, truth=truth))
    if not items:
        raise EvaluationError("no images to evaluate")
    if baseline and baseline_input == "labels":
        missing = [it.name for it in items if it.labels is None]
        if missing:
            raise EvaluationError(f"baseline_input='labels' needs <stem>_labels.tif; missing for {missing[0]}"
                                  + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    params = dict(baseline_params or {})

    predictor = None
    model_name = "custom predict_fn"
    if predict_fn is None:
        from .runner import load_predictor, predict

        predictor = load_predictor(model, backend, threads)
        model_name = str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__

        def predict_fn(x: np.ndarray) -> np.ndarray:
            return predict(x, predictor, mode=mode, tta=tta)

    acc_model = M.MetricsAccumulator(threshold, min_size)
    acc_base = M.MetricsAccumulator(threshold, min_size)
    acc_check = M.MetricsAccumulator(threshold, min_size)
    per_image = []
    t_model = t_base = t_check = 0.0
    bar = None
    if progress and len(items) > 1:
        import sys

        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc="evaluate", unit="image", file=sys.stderr, dynamic_ncols=True)
    try:
        for it in items:
            radius = M.decoy_radius(it.meta)
            t0 = time.perf_counter()
            prob = np.asarray(predict_fn(from_outlines(it.outlines, it.source or it.name)), dtype=np.float32)
            t_model += time.perf_counter() - t0
            if prob.shape != it.rosettes.shape:
                raise EvaluationError(f"{it.name}: prediction has shape {prob.shape}, ground truth "
                                      f"{it.rosettes.shape}")
            acc_model.add(prob, it.rosettes, it.decoys, radius=radius, name=it.name)
            row = {"name": it.name, "model": acc_model.per_image[-1]}
            if check:
                t0 = time.perf_counter()
                cprob = checked_probability(it.outlines, prob, threshold, min_size, it.source or it.name)
                t_check += time.perf_counter() - t0
                acc_check.add(cprob, it.rosettes, it.decoys, radius=radius, name=it.name)
                row["checked"] = acc_check.per_image[-1]
            if baseline:
                t0 = time.perf_counter()
                bprob = _baseline_prob(it, baseline_input, params)
                t_base += time.perf_counter() - t0
                acc_base.add(bprob, it.rosettes, it.decoys, radius=radius, name=it.name)
                row["baseline"] = acc_base.per_image[-1]
            per_image.append(row)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if predictor is not None:
            predictor.close()

    m = acc_model.summary()
    b = acc_base.summary() if baseline else None
    c = acc_check.summary() if check else None
    table = format_table(m, b, MODEL_CARD, model_name="Model", checked=c)
    n_dec = m["n_decoys"]
    note = (f"{m['n_images']} image(s), {m['n_rosettes']} rosette(s), {n_dec} decoy(s) from `{_data_name(data_dir)}`; "
            f"model: `{Path(model_name).name if predictor is not None else model_name}`"
            + (f" ({backend} backend, {mode} tiling)" if predictor is not None else "")
            + ("; checked: the model's proposals checked against the vertex graph of the outlines" if check else "")
            + (f"; baseline: vertex multiplicity ≥ 5 on the {baseline_input}" if baseline else "")
            + ". Model card: the published values on 54 held-out real images (269 rosettes); "
              "definitions in docs/metrics.md.")
    return {
        "model": model_name, "backend": backend if predictor is not None else None,
        "mode": mode if predictor is not None else None, "data": _data_name(data_dir),
        "n_images": m["n_images"],
        "settings": {"truth": truth, "threshold": threshold, "min_size": min_size,
                     "tier_low_threshold": M.TIER_LOW_THRESHOLD,
                     "decoy_radius": "cell_diameter / 4 from the JSON, else "
                                     f"{M.DEFAULT_DECOY_RADIUS:g} px",
                     "baseline_input": baseline_input if baseline else None, "baseline_params": params},
        "metrics": {"model": m, "baseline": b, **({"checked": c} if check else {})},
        "model_card": MODEL_CARD,
        "per_image": per_image,
        "seconds": {"model": round(t_model, 3), "baseline": round(t_base, 3),
                    **({"checked": round(t_check, 3)} if check else {})},
        "table_markdown": table + "\n\n" + note,
    }


def _data_name(data: Any) -> str:
    return str(data) if isinstance(data, (str, os.PathLike)) else "(in-memory images)"


def write_report(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``report`` as JSON atomically (temporary file + rename: never half-written)."""
    path = Path(path)
    if path.is_dir():
        raise EvaluationError(f"{path}: is a directory; give a file name such as report.json")
    if not path.parent.is_dir():
        raise EvaluationError(f"{path.parent}: output directory does not exist")
    text = json.dumps(report, indent=1, default=_json_default) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
