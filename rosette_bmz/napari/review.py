"""The review of one image's rosette proposals, and the corrections folder: no napari, no Qt.

A :class:`Review` holds what the reviewer decided about each proposal of one image
(``pending``, ``accepted``, ``rejected``, or ``added`` for a rosette the model missed and
the reviewer painted), with the time of each decision. The proposal *pixels* live in a
label image (one number per proposal: the napari Labels layer the reviewer edits); a
review only reads it, so brush edits to a proposal's mask are kept as they are.

:meth:`Review.save` writes three files into the corrections folder, all under temporary
names first and renamed only when all three are complete (:func:`rosette_bmz.files.atomic_paths`;
a crash mid-save leaves the previous files as they were):

* ``<name>_outlines.tif``: the binary outline image the model read (uint8 0/1);
* ``<name>_rosettes.tif``: the corrected rosette mask (uint32, one number per rosette):
  accepted, pending (seen and not rejected) and added rosettes with the reviewer's edits;
  rejected proposals removed;
* ``<name>_review.csv``: one row per proposal (:data:`REVIEW_COLUMNS`): decision, model
  score, centroid, area after the review, time of the decision.

That folder is exactly what the trainer reads:
``rosette-bmz train --config review --init MODEL --images CORR --masks CORR``
(:func:`rosette_bmz.training.data.match_pairs` pairs ``a_outlines.tif`` with ``a_rosettes.tif``).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..constants import IMAGE_SUFFIXES, MIN_PROPOSAL_SIZE, THRESHOLD
from ..errors import InputError
from ..files import atomic_paths

__all__ = ["STATUSES", "STATUS_COLORS", "REVIEW_COLUMNS", "Proposal", "Review", "review_name", "detect",
           "outlines_of", "list_images", "is_reviewed", "review_paths", "find_predictions", "load_predictions",
           "default_model", "load_saved_review", "finetune_events"]

#: A proposal's decision. ``added``: painted by the reviewer (the model missed it).
STATUSES: tuple[str, ...] = ("pending", "accepted", "rejected", "added")
#: RGBA colour of each status in the points layer.
STATUS_COLORS: dict[str, tuple[float, float, float, float]] = {
    "pending": (1.0, 0.85, 0.0, 1.0),    # yellow
    "accepted": (0.1, 0.9, 0.2, 1.0),    # green
    "rejected": (1.0, 0.15, 0.15, 1.0),  # red
    "added": (0.2, 0.6, 1.0, 1.0),       # blue
}
#: Columns of ``<name>_review.csv`` (``axis-0``/``axis-1`` repeat the centroid so napari's own
#: CSV reader opens it as points too).
REVIEW_COLUMNS = ("image", "id", "status", "score", "mean_prob", "model_area", "area", "centroid_y", "centroid_x",
                  "decided", "axis-0", "axis-1")
_SUFFIXES = ("_outlines", "_outline", "_labels", "_channels", "_cells", "_masks")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def review_name(name: str) -> str:
    """The image's name in the corrections folder: a layer or file stem without ``_outlines`` etc."""
    stem = Path(str(name)).name
    for s in IMAGE_SUFFIXES:
        if stem.lower().endswith(s):
            stem = stem[: -len(s)]
    for s in _SUFFIXES:
        if stem.endswith(s) and len(stem) > len(s):
            return stem[: -len(s)]
    return stem


@dataclass
class Proposal:
    """One rosette proposal (or a rosette the reviewer added) and its decision."""

    id: int
    y: float
    x: float
    score: float = float("nan")
    mean_prob: float = float("nan")
    model_area: int = 0
    status: str = "pending"
    decided: str = ""

    def set(self, status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        self.status = status
        self.decided = _now()


@dataclass
class Review:
    """The decisions about one image's proposals; ``current`` is the proposal in view."""

    name: str
    outlines: np.ndarray
    proposals: list[Proposal] = field(default_factory=list)
    current: int = -1

    @classmethod
    def from_rows(cls, name: str, outlines: np.ndarray, rows: Iterable[dict]) -> "Review":
        """From the proposal rows of :func:`rosette_bmz.find_proposals` (or a ``_rosettes.csv``)."""
        props = [Proposal(int(r["id"]), float(r["centroid_y"]), float(r["centroid_x"]),
                          float(r.get("max_prob", np.nan)), float(r.get("mean_prob", np.nan)),
                          int(r.get("area", 0))) for r in rows]
        return cls(review_name(name), (np.asarray(outlines) > 0).astype(np.uint8), props)

    # -- navigation and decisions
    def by_id(self, pid: int) -> Proposal | None:
        return next((p for p in self.proposals if p.id == pid), None)

    def step(self, delta: int) -> Proposal | None:
        """Move to the next (``+1``) or previous (``-1``) proposal, wrapping around; returns it."""
        if not self.proposals:
            self.current = -1
            return None
        self.current = (self.current + delta) % len(self.proposals) if self.current >= 0 else (
            0 if delta >= 0 else len(self.proposals) - 1)
        return self.proposals[self.current]

    @property
    def focus(self) -> Proposal | None:
        return self.proposals[self.current] if 0 <= self.current < len(self.proposals) else None

    def decide(self, status: str) -> Proposal | None:
        """Set the proposal in view to ``status`` (``accepted`` / ``rejected`` / ``pending``)."""
        p = self.focus
        if p is not None:
            p.set(status)
        return p

    def new_id(self, labels: np.ndarray) -> int:
        """A label number no proposal and no pixel uses yet (for painting a missed rosette)."""
        top = int(np.asarray(labels).max()) if np.asarray(labels).size else 0
        return max([top] + [p.id for p in self.proposals]) + 1

    def sync(self, labels: np.ndarray) -> list[Proposal]:
        """Register label numbers painted into ``labels`` that no proposal has as ``added``
        rosettes (centroid of their pixels); returns the new ones."""
        from scipy import ndimage

        lab = np.asarray(labels)
        ids = np.unique(lab)
        known = {p.id for p in self.proposals}
        new_ids = [int(i) for i in ids if i and int(i) not in known]
        added = []
        if new_ids:
            cents = ndimage.center_of_mass(np.ones(lab.shape, dtype=np.uint8), lab, new_ids)
            for pid, (cy, cx) in zip(new_ids, cents):
                p = Proposal(pid, float(cy), float(cx), status="added", decided=_now())
                self.proposals.append(p)
                added.append(p)
        return added

    def counts(self) -> dict[str, int]:
        return {s: sum(p.status == s for p in self.proposals) for s in STATUSES}

    # -- output
    def corrected_mask(self, labels: np.ndarray) -> np.ndarray:
        """``labels`` (uint32) without the rejected proposals' pixels."""
        lab = np.asarray(labels)
        out = lab.astype(np.uint32, copy=True)
        rejected = [p.id for p in self.proposals if p.status == "rejected"]
        if rejected:
            out[np.isin(lab, rejected)] = 0
        return out

    def table(self, labels: np.ndarray) -> str:
        """The ``_review.csv`` text (see :data:`REVIEW_COLUMNS`)."""
        lab = np.asarray(labels)
        areas = np.bincount(lab.ravel().astype(np.int64), minlength=max([0] + [p.id for p in self.proposals]) + 1)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(REVIEW_COLUMNS)
        for p in sorted(self.proposals, key=lambda q: q.id):
            area = 0 if p.status == "rejected" else int(areas[p.id])
            w.writerow([self.name, p.id, p.status, f"{p.score:.4f}", f"{p.mean_prob:.4f}", p.model_area, area,
                        f"{p.y:.2f}", f"{p.x:.2f}", p.decided, f"{p.y:.2f}", f"{p.x:.2f}"])
        return buf.getvalue()

    def paths(self, folder: str | os.PathLike) -> dict[str, Path]:
        return review_paths(folder, self.name)

    def save(self, folder: str | os.PathLike, labels: np.ndarray) -> dict[str, Path]:
        """Write the three files (module doc) into ``folder``, all or none."""
        import tifffile

        lab = np.asarray(labels)
        if lab.shape != self.outlines.shape:
            raise InputError(f"{self.name}: the rosette labels ({lab.shape}) and the image ({self.outlines.shape}) "
                             "differ in shape")
        self.sync(lab)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        finals = self.paths(folder)
        with atomic_paths(finals) as tmp:
            tifffile.imwrite(tmp["outlines"], self.outlines, photometric="minisblack")
            tifffile.imwrite(tmp["rosettes"], self.corrected_mask(lab), photometric="minisblack")
            tmp["review"].write_text(self.table(lab))
        return finals


def review_paths(folder: str | os.PathLike, name: str) -> dict[str, Path]:
    """The three files of a saved review in ``folder``; ``name`` is the review's (:func:`review_name`)."""
    folder = Path(folder)
    return {"outlines": folder / f"{name}_outlines.tif", "rosettes": folder / f"{name}_rosettes.tif",
            "review": folder / f"{name}_review.csv"}


def load_saved_review(folder: str | os.PathLike, name: str) -> tuple[Review, np.ndarray] | None:
    """A review saved by :meth:`Review.save` (its outlines, decisions and corrected mask), or None."""
    import tifffile

    name = review_name(name)
    paths = review_paths(folder, name)
    if not all(p.is_file() for p in paths.values()):
        return None
    outlines = tifffile.imread(paths["outlines"])
    labels = tifffile.imread(paths["rosettes"]).astype(np.uint32)
    with open(paths["review"], newline="") as f:
        rows = list(csv.DictReader(f))
    props = [Proposal(int(r["id"]), float(r["centroid_y"]), float(r["centroid_x"]), float(r["score"]),
                      float(r["mean_prob"]), int(r["model_area"]), r["status"], r["decided"]) for r in rows]
    return Review(name, (outlines > 0).astype(np.uint8), props), labels


# ----------------------------------------------------------------------------- model and images
def default_model() -> Path:
    """The shipped demo weights (a checkpoint inside the installed package; the onnx backend
    converts it on first use, so an installed wheel needs no rdf.yaml)."""
    return Path(__file__).resolve().parents[1] / "data" / "rosette_demo.pt"


def outlines_of(image: np.ndarray, input_kind: str, name: str = "image") -> np.ndarray:
    """The binary outline image (uint8 0/1) the model reads: the image itself, or a label
    image's inner outlines."""
    from ..inputs import build_input

    return build_input(np.asarray(image), input_kind, name)[1].astype(np.uint8)


def detect(image: np.ndarray, input_kind: str, predictor: Any, threshold: float = THRESHOLD,
           min_size: int = MIN_PROPOSAL_SIZE, name: str = "image", check: bool = False, tta: bool = False
           ) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Run the model on an outline or label image: (probability, proposal labels, proposal rows).

    ``check``: the proposals checked against the image's vertex graph, as ``rosette-bmz predict
    --check`` writes them (:func:`rosette_bmz.quantities.check_proposals`). ``tta``: the probability
    is the mean over the 8 rotations / flips (``predict --tta``)."""
    from ..inputs import build_input, check_size
    from ..proposals import find_proposals
    from ..runner import predict

    x = build_input(np.asarray(image), input_kind, name)
    check_size(x.shape, name)
    prob = predict(x, predictor, tta=tta)
    labels, rows = find_proposals(prob, threshold, min_size)
    if check:
        from ..quantities import check_image_proposals

        labels, rows = check_image_proposals(labels, rows, prob, np.asarray(image), input_kind, name)
    return prob, labels, rows


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Input images of a folder in name order: TIFF/NPY/PNG files that are not outputs of
    ``rosette-bmz predict`` or of a review (``_prob``, ``_rosettes``, ``_overlay``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    out = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES or p.name.startswith("."):
            continue
        if p.stem.endswith(("_prob", "_rosettes", "_overlay", "_rosette", "_mask")):
            continue
        out.append(p)
    return out


def is_reviewed(corrections: str | os.PathLike, name: str) -> bool:
    """Whether ``corrections`` holds a saved review of image ``name``."""
    return review_paths(corrections, review_name(name))["review"].is_file()


def find_predictions(image: Path, folders: Sequence[str | os.PathLike | None]) -> dict[str, Path] | None:
    """``<stem>_rosettes.tif`` + ``_rosettes.csv`` (+ ``_prob.tif``) written by ``rosette-bmz predict``
    for ``image`` in one of ``folders``, or None."""
    for d in folders:
        if not d:
            continue
        d = Path(d)
        found = {"labels": d / f"{image.stem}_rosettes.tif", "csv": d / f"{image.stem}_rosettes.csv",
                 "prob": d / f"{image.stem}_prob.tif"}
        if found["labels"].is_file() and found["csv"].is_file():
            if not found["prob"].is_file():
                del found["prob"]
            return found
    return None


def load_predictions(found: dict[str, Path]) -> tuple[np.ndarray | None, np.ndarray, list[dict]]:
    """(probability or None, proposal labels, rows) from :func:`find_predictions`' files."""
    import tifffile

    from ..proposals import read_csv

    prob = tifffile.imread(found["prob"]) if "prob" in found else None
    return prob, tifffile.imread(found["labels"]).astype(np.uint32), read_csv(found["csv"])


# ----------------------------------------------------------------------------- fine-tuning
def finetune_events(cfg: Any) -> Iterator[tuple]:
    """Run :func:`rosette_bmz.training.train.train` on ``cfg``, yielding ``("step", (epoch, step,
    steps_per_epoch, loss))`` and ``("epoch", row)`` as it goes; returns its TrainResult.

    A generator for napari's worker threads: training runs in a helper thread and the events
    come back through a queue, so the worker can hand them to the UI thread as they happen.
    """
    import queue
    import threading

    from ..training.train import train

    events: queue.Queue = queue.Queue()
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = train(cfg, progress=False, on_epoch=lambda row: events.put(("epoch", row)),
                                      on_step=lambda *a: events.put(("step", a)))
        except BaseException as exc:   # re-raised in the worker below
            outcome["error"] = exc
        finally:
            events.put(None)

    thread = threading.Thread(target=run, name="rosette-finetune", daemon=True)
    thread.start()
    while (item := events.get()) is not None:
        yield item
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
