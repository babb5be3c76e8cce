"""Per-image rosette summaries of a run, and the per-condition table and figure a paper shows.

Files in a run directory (``rosette-bmz predict --out RUN_DIR``)
-----------------------------------------------------------------
``<name>_summary.json`` (:func:`write_image_summary`), one per image: the dict of
:func:`rosette_bmz.quantities.image_summary` plus ``"format": "rosette-bmz-image-summary"``
and ``"version": 1``::

    {"format": "rosette-bmz-image-summary", "version": 1, "image": "embryo_01",
     "input_kind": "labels", "n_cells": 812, "n_cells_at_edge": 64, "tissue_area_px": 402113,
     "pixel_size_um": 0.134, "tissue_area_um2": 7220.34, "n_rosettes": 12, "n_rosettes_k5": 11,
     "rosettes_per_1000_cells": 14.778325, "rosettes_per_1000_um2": 1.661971,
     "n_cells_in_rosettes": 71, "percent_cells_in_rosette": 8.743842,
     "k_histogram": {"4": 1, "5": 7, "6": 3, "7": 1}, "kinds": {"vertex": 8, "extrusion": 4, "none": 0},
     "rosettes_from": "network"}

(``pixel_size_um``, ``tissue_area_um2`` and ``rosettes_per_1000_um2`` are null without
``--pixel-size``; a ratio whose denominator is 0 is null. ``rosettes_from``: ``"network"`` or
``"checked"`` (``predict --check``); summaries written before it existed read as ``"network"``.)

``summary.csv`` (:func:`write_summary_csv`), one row per image, columns :data:`SUMMARY_COLUMNS`:
the scalar fields of the JSON, ``n_vertex``/``n_extrusion`` (from ``kinds``), the k histogram
binned as in the figure (``k_lt5`` = proposals without a junction of >= 5 cells, ``k_5``,
``k_6``, ``k_7``, ``k_8plus``), the full histogram as ``k_histogram`` (``"5:7 6:3 7:1"``) and
``rosettes_from``. Empty cell = null.

Conditions (:func:`summarize_runs`, ``rosette-bmz summarize RUN_DIR... --by folder --out DIR``)
-----------------------------------------------------------------------------------------------
Every ``*_summary.json`` under each RUN_DIR (recursively) is one image. ``by="folder"``: the
images of one folder (the folder holding the JSON) are one condition, named after the folder
(when two folders share a name, every condition is named by its path relative to the
folders' common parent);
``by="run"``: everything under one RUN_DIR argument is one condition. Conditions keep the
order of the arguments. Runs whose rosettes were checked against the vertex graph
(``predict --check``) and runs with the network's own proposals are not mixed: their counts
differ by the detector, not by the tissue (:class:`SummaryError`). Written into ``out``:

``conditions.csv`` (:data:`CONDITION_COLUMNS`), one row per condition: ``n_images``; totals
``n_cells``, ``n_rosettes``, ``n_rosettes_k5``; mean and sample standard deviation over the
images (``_mean``, ``_sd``; sd empty for one image) of ``rosettes_per_1000_cells``,
``rosettes_per_1000_um2`` (over the images with a pixel size; ``rosettes_per_1000_um2_n``
says how many) and ``percent_cells_in_rosette``; ``rosettes_per_1000_cells_pooled``
(1000 x all rosettes / all cells); pooled kinds (``n_vertex``, ``n_extrusion``,
``percent_extrusion``) and the pooled k histogram, as counts (``k_lt5`` ... ``k_8plus``) and as
percent of the condition's rosettes (``pct_k_lt5`` ... ``pct_k_8plus``).

``images.csv``: ``condition`` + :data:`SUMMARY_COLUMNS`, one row per image.

``conditions.png`` (:func:`plot_conditions`): left, rosettes per 1000 cells per condition (bar
= mean over images, whisker = ± sd, dots = the images, jittered sideways); right, the k
distribution (bars = pooled percent of the condition's rosettes per k bin, dots = the images
with at least one rosette). Drawn with Pillow (no matplotlib needed).

All files are written atomically (:func:`rosette_bmz.files.atomic_path`). Bad input raises
:class:`SummaryError` naming the file or argument (a :class:`~rosette_bmz.errors.RosetteError` and
``ValueError``: the CLI prints it as one line).
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from .constants import GROUPINGS, ROSETTE_SOURCES, SUMMARY_CSV, SUMMARY_SUFFIX
from .errors import SummaryError
from .files import atomic_path

__all__ = ["SummaryError", "FORMAT", "VERSION", "SUMMARY_SUFFIX", "SUMMARY_CSV", "SUMMARY_COLUMNS", "K_BINS",
           "ROSETTE_SOURCES", "rosettes_from",
           "CONDITION_COLUMNS", "GROUPINGS", "write_image_summary", "read_image_summary", "summary_row",
           "write_summary_csv", "find_image_summaries", "condition_stats", "summarize_runs", "plot_conditions"]

FORMAT = "rosette-bmz-image-summary"
VERSION = 1
#: The k bins of the tables and the figure: (column suffix, label, lowest k, highest k).
K_BINS = (("lt5", "<5", 0, 4), ("5", "5", 5, 5), ("6", "6", 6, 6), ("7", "7", 7, 7), ("8plus", "8+", 8, None))
_SCALARS = ("image", "input_kind", "n_cells", "n_cells_at_edge", "tissue_area_px", "pixel_size_um", "tissue_area_um2",
            "n_rosettes", "n_rosettes_k5", "rosettes_per_1000_cells", "rosettes_per_1000_um2", "n_cells_in_rosettes",
            "percent_cells_in_rosette")
#: Columns of ``summary.csv``.
SUMMARY_COLUMNS = (_SCALARS + ("n_vertex", "n_extrusion") + tuple(f"k_{b[0]}" for b in K_BINS)
                   + ("k_histogram", "rosettes_from"))
_RATES = ("rosettes_per_1000_cells", "rosettes_per_1000_um2", "percent_cells_in_rosette")
#: Columns of ``conditions.csv``.
CONDITION_COLUMNS = (("condition", "n_images", "n_cells", "n_rosettes", "n_rosettes_k5")
                     + ("rosettes_per_1000_cells_mean", "rosettes_per_1000_cells_sd", "rosettes_per_1000_cells_pooled")
                     + ("rosettes_per_1000_um2_mean", "rosettes_per_1000_um2_sd", "rosettes_per_1000_um2_n")
                     + ("percent_cells_in_rosette_mean", "percent_cells_in_rosette_sd")
                     + ("n_vertex", "n_extrusion", "percent_extrusion")
                     + tuple(f"k_{b[0]}" for b in K_BINS) + tuple(f"pct_k_{b[0]}" for b in K_BINS))


# ----------------------------------------------------------------------------- per image
def rosettes_from(summary: dict) -> str:
    """Where a summary's rosettes came from (:data:`ROSETTE_SOURCES`; older summaries: the network)."""
    return summary.get("rosettes_from", ROSETTE_SOURCES[0])


def _check_summary(summary: Any, where: str) -> dict:
    if not isinstance(summary, dict):
        raise SummaryError(f"{where}: an image summary must be a JSON object, got {type(summary).__name__}")
    missing = [k for k in _SCALARS + ("k_histogram", "kinds") if k not in summary]
    if missing:
        raise SummaryError(f"{where}: image summary lacks {', '.join(missing)}")
    hist = summary["k_histogram"]
    if not isinstance(hist, dict) or not all(str(k).isdigit() and isinstance(v, int) for k, v in hist.items()):
        raise SummaryError(f"{where}: k_histogram must map k (as text) to a count, got {hist!r}")
    if not isinstance(summary["kinds"], dict):
        raise SummaryError(f"{where}: kinds must map a kind to a count, got {summary['kinds']!r}")
    if rosettes_from(summary) not in ROSETTE_SOURCES:
        raise SummaryError(f"{where}: rosettes_from must be one of {', '.join(ROSETTE_SOURCES)}, "
                           f"got {summary['rosettes_from']!r}")
    return summary


def write_image_summary(path: str | os.PathLike, summary: dict) -> Path:
    """Write ``<name>_summary.json`` (module doc) atomically.

    Parameters
    ----------
    path : path-like
        Target file, by convention ``RUN_DIR / (name + SUMMARY_SUFFIX)``.
    summary : dict
        From :func:`rosette_bmz.quantities.image_summary`.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    data = {"format": FORMAT, "version": VERSION, **_check_summary(summary, str(path))}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return path


def read_image_summary(path: str | os.PathLike) -> dict:
    """Read a ``<name>_summary.json`` back (``image`` defaults to the file name without the suffix)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SummaryError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SummaryError(f"{path}: cannot read as JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SummaryError(f"{path}: not a rosette-bmz image summary (no \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise SummaryError(f"{path}: image summary version {data.get('version')!r}, this version reads {VERSION}")
    _check_summary(data, str(path))
    if not data.get("image"):
        name = path.name
        data["image"] = name[:-len(SUMMARY_SUFFIX)] if name.endswith(SUMMARY_SUFFIX) else path.stem
    return data


def _k_bins(hist: dict) -> list[int]:
    counts = [0] * len(K_BINS)
    for k, n in hist.items():
        k = int(k)
        for i, (_, _, lo, hi) in enumerate(K_BINS):
            if k >= lo and (hi is None or k <= hi):
                counts[i] += int(n)
    return counts


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        text = f"{v:.4f}".rstrip("0").rstrip(".")
        return text if text not in ("", "-0") else "0"
    return str(v)


def summary_row(summary: dict) -> dict[str, Any]:
    """One ``summary.csv`` row (a dict over :data:`SUMMARY_COLUMNS`, values not yet formatted)."""
    _check_summary(summary, str(summary.get("image") if isinstance(summary, dict) else "summary"))
    row = {k: summary[k] for k in _SCALARS}
    row["n_vertex"] = int(summary["kinds"].get("vertex", 0))
    row["n_extrusion"] = int(summary["kinds"].get("extrusion", 0))
    for (suffix, *_), n in zip(K_BINS, _k_bins(summary["k_histogram"])):
        row[f"k_{suffix}"] = n
    row["k_histogram"] = " ".join(f"{k}:{n}" for k, n in sorted(((int(k), n) for k, n in
                                                                  summary["k_histogram"].items())))
    row["rosettes_from"] = rosettes_from(summary)
    return row


def _write_table(path: Path, columns: Sequence[str], rows: Iterable[dict]) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(columns)
            for r in rows:
                w.writerow([_fmt(r.get(c)) for c in columns])
    return path


def write_summary_csv(path: str | os.PathLike, summaries: Iterable[dict]) -> Path:
    """Write a run's ``summary.csv``: one row per image summary (module doc), atomically."""
    return _write_table(Path(path), SUMMARY_COLUMNS, [summary_row(s) for s in summaries])


# ----------------------------------------------------------------------------- conditions
def find_image_summaries(run_dir: str | os.PathLike) -> list[Path]:
    """All ``*_summary.json`` files under ``run_dir`` (recursively), sorted by path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SummaryError(f"{run_dir}: no such run directory")
    return sorted(p for p in run_dir.rglob("*" + SUMMARY_SUFFIX) if p.is_file() and not p.name.startswith("."))


def _labels(folders: list[Path]) -> dict[Path, str]:
    """Folder -> condition name: the folder's name; when two names clash, every folder's path
    relative to the folders' common parent."""
    names = {f: f.name or f.as_posix() for f in folders}
    if len(set(names.values())) == len(names):
        return names
    base = Path(os.path.commonpath([str(f) for f in folders]))
    return {f: (f.relative_to(base).as_posix() if f != base else "") or names[f] for f in folders}


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def condition_stats(name: str, summaries: Sequence[dict]) -> dict[str, Any]:
    """One ``conditions.csv`` row (:data:`CONDITION_COLUMNS`) from the image summaries of a condition."""
    row: dict[str, Any] = {"condition": name, "n_images": len(summaries)}
    for key in ("n_cells", "n_rosettes", "n_rosettes_k5"):
        row[key] = sum(int(s[key]) for s in summaries)
    for key in _RATES:
        vals = [float(s[key]) for s in summaries if s.get(key) is not None]
        row[f"{key}_mean"], row[f"{key}_sd"] = _mean_sd(vals)
        if key == "rosettes_per_1000_um2":
            row[f"{key}_n"] = len(vals)
    row["rosettes_per_1000_cells_pooled"] = 1000.0 * row["n_rosettes"] / row["n_cells"] if row["n_cells"] else None
    row["n_vertex"] = sum(int(s["kinds"].get("vertex", 0)) for s in summaries)
    row["n_extrusion"] = sum(int(s["kinds"].get("extrusion", 0)) for s in summaries)
    kinds = row["n_vertex"] + row["n_extrusion"]
    row["percent_extrusion"] = 100.0 * row["n_extrusion"] / kinds if kinds else None
    counts = [0] * len(K_BINS)
    for s in summaries:
        counts = [a + b for a, b in zip(counts, _k_bins(s["k_histogram"]))]
    total = sum(counts)
    for (suffix, *_), n in zip(K_BINS, counts):
        row[f"k_{suffix}"] = n
        row[f"pct_k_{suffix}"] = 100.0 * n / total if total else None
    return row


def summarize_runs(run_dirs: Sequence[str | os.PathLike], by: str = "folder", out: str | os.PathLike = ".",
                   *, title: str | None = None) -> dict[str, Any]:
    """Group the image summaries of runs into conditions; write the tables and the figure.

    Parameters
    ----------
    run_dirs : sequence of path-like
        Run directories (searched recursively for ``*_summary.json``).
    by : {"folder", "run"}
        What a condition is (module doc).
    out : path-like
        Output directory (created if missing) for ``conditions.csv``, ``images.csv`` and
        ``conditions.png``.
    title : str, optional
        A title above the figure.

    Returns
    -------
    dict
        ``conditions`` (list of :data:`CONDITION_COLUMNS` dicts), ``images`` (list of
        ``(condition, summary)``), ``files`` (``{"conditions_csv", "images_csv", "figure"}`` paths).

    Raises
    ------
    SummaryError
        Unknown ``by``, a missing run directory, an unreadable summary, no summary at all, or
        checked and unchecked rosettes mixed.
    """
    if by not in GROUPINGS:
        raise SummaryError(f"unknown grouping --by {by!r}; choose one of {', '.join(GROUPINGS)}")
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise SummaryError("summarize: give at least one run directory")
    groups: dict[Path, list[dict]] = {}
    example: dict[str, Path] = {}
    for run in run_dirs:
        run = Path(run)
        files = find_image_summaries(run)
        if not files:
            raise SummaryError(f"{run}: no *{SUMMARY_SUFFIX} image summaries (is it a rosette-bmz predict output?)")
        for f in files:
            key = (f.parent if by == "folder" else run).resolve()
            s = read_image_summary(f)
            example.setdefault(rosettes_from(s), f)
            groups.setdefault(key, []).append(s)
    if len(example) > 1:
        network, checked = ROSETTE_SOURCES
        raise SummaryError(f"the runs mix rosettes checked against the vertex graph (predict --check; e.g. "
                           f"{example[checked]}) with the network's own (e.g. {example[network]}): the counts "
                           "are not comparable; predict every condition the same way")
    names = _labels(list(groups))
    conditions = [condition_stats(names[k], v) for k, v in groups.items()]
    images = [(names[k], s) for k, v in groups.items() for s in v]
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SummaryError(f"{out}: cannot create the output directory ({exc})") from None
    files = {
        "conditions_csv": _write_table(out / "conditions.csv", CONDITION_COLUMNS, conditions),
        "images_csv": _write_table(out / "images.csv", ("condition",) + SUMMARY_COLUMNS,
                                   [{"condition": c, **summary_row(s)} for c, s in images]),
        "figure": plot_conditions(out / "conditions.png", conditions, images, title=title),
    }
    return {"conditions": conditions, "images": images, "files": files}


# ----------------------------------------------------------------------------- figure (Pillow)
#: Okabe-Ito colours (distinguishable with colour-vision deficiencies), one per condition.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def _rgb(hex_colour: str, lighten: float = 0.0) -> tuple[int, int, int]:
    c = [int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]
    return tuple(int(round(v + (255 - v) * lighten)) for v in c)  # type: ignore[return-value]


def _nice_ticks(top: float, n: int = 5) -> list[float]:
    """0 and round steps (1, 2, 2.5, 5 x 10^e) up to at least ``top``."""
    top = top if top > 0 else 1.0
    raw = top / n
    e = 10 ** math.floor(math.log10(raw))
    step = next(m * e for m in (1, 2, 2.5, 5, 10) if m * e >= raw)
    count = int(math.ceil(top / step - 1e-9))
    return [i * step for i in range(count + 1)]


def _tick_text(v: float) -> str:
    return f"{v:g}" if abs(v - round(v)) > 1e-9 else str(int(round(v)))


class _Canvas:
    """Minimal plotting on a Pillow image: text, rotated text, panels with a y axis."""

    def __init__(self, width: int, height: int, scale: int) -> None:
        from PIL import Image, ImageDraw, ImageFont

        self.s = scale
        self.img = Image.new("RGB", (width * scale, height * scale), "white")
        self.draw = ImageDraw.Draw(self.img)
        self._font = lambda size: ImageFont.load_default(size=size * scale)
        self.fonts: dict[int, Any] = {}
        try:
            self.font(10)
        except (TypeError, ImportError, OSError, AttributeError) as exc:  # Pillow < 10.1 or without FreeType
            try:
                ImageFont.truetype("DejaVuSans.ttf", 10)
                self._font = lambda size: ImageFont.truetype("DejaVuSans.ttf", size * scale)
            except (ImportError, OSError):
                raise SummaryError(f"the figure needs Pillow >= 10.1 with FreeType (scalable fonts): {exc}") from None

    def font(self, size: int) -> Any:
        if size not in self.fonts:
            self.fonts[size] = self._font(size)
        return self.fonts[size]

    def text_size(self, text: str, size: int) -> tuple[float, float]:
        x0, y0, x1, y1 = self.draw.textbbox((0, 0), text, font=self.font(size))
        return (x1 - x0) / self.s, (y1 - y0) / self.s

    def text(self, x: float, y: float, text: str, size: int, anchor: str = "mm", fill: Any = "black") -> None:
        self.draw.text((x * self.s, y * self.s), text, font=self.font(size), anchor=anchor, fill=fill)

    def vtext(self, x: float, y: float, text: str, size: int) -> None:
        """Text rotated 90° counter-clockwise, centred on (x, y)."""
        from PIL import Image, ImageDraw

        w, h = self.text_size(text, size)
        tile = Image.new("L", (int((w + 8) * self.s), int((h + 8) * self.s)), 0)
        ImageDraw.Draw(tile).text((tile.width / 2, tile.height / 2), text, font=self.font(size), anchor="mm",
                                  fill=255)
        tile = tile.rotate(90, expand=True)
        self.img.paste((0, 0, 0), (int(x * self.s - tile.width / 2), int(y * self.s - tile.height / 2)), tile)

    def line(self, pts: Sequence[tuple[float, float]], fill: Any = "black", width: float = 1.0) -> None:
        self.draw.line([(px * self.s, py * self.s) for px, py in pts], fill=fill,
                       width=max(1, int(round(width * self.s))))

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: Any, outline: Any = None) -> None:
        self.draw.rectangle([x0 * self.s, y0 * self.s, x1 * self.s, y1 * self.s], fill=fill, outline=outline,
                            width=max(1, self.s // 2))

    def dot(self, x: float, y: float, r: float, fill: Any, outline: Any = "white") -> None:
        self.draw.ellipse([(x - r) * self.s, (y - r) * self.s, (x + r) * self.s, (y + r) * self.s], fill=fill,
                          outline=outline, width=max(1, self.s // 2))

    def yaxis(self, box: tuple[float, float, float, float], ticks: list[float], label: str) -> Any:
        """Draw gridlines, ticks and the y label of a panel; return value -> y position."""
        x0, y0, x1, y1 = box
        top = ticks[-1]

        def ypos(v: float) -> float:
            return y1 - (y1 - y0) * (v / top)

        for t in ticks:
            y = ypos(t)
            if t > 0:
                self.line([(x0, y), (x1, y)], fill=(225, 225, 225), width=0.5)
            self.line([(x0 - 4, y), (x0, y)])
            self.text(x0 - 7, y, _tick_text(t), 10, anchor="rm")
        self.line([(x0, y0), (x0, y1)])
        self.line([(x0, y1), (x1, y1)])
        widest = max(self.text_size(_tick_text(t), 10)[0] for t in ticks)
        self.vtext(x0 - 16 - widest, (y0 + y1) / 2, label, 12)
        return ypos


def _fit(canvas: _Canvas, text: str, size: int, width: float) -> str:
    if canvas.text_size(text, size)[0] <= width:
        return text
    while len(text) > 1 and canvas.text_size(text + "…", size)[0] > width:
        text = text[:-1]
    return text + "…"


def plot_conditions(path: str | os.PathLike, conditions: Sequence[dict], images: Sequence[tuple[str, dict]],
                    *, title: str | None = None, scale: int = 2) -> Path:
    """Two-panel PNG figure (module doc): rosette density and k distribution per condition.

    Parameters
    ----------
    path : path-like
        Output PNG.
    conditions : sequence of dict
        Rows from :func:`condition_stats`, in plotting order.
    images : sequence of (str, dict)
        ``(condition name, image summary)`` pairs, for the per-image dots.
    title : str, optional
        Figure title.
    scale : int
        Pixels per layout point (2: a 1840 x 880 px image).

    Returns
    -------
    Path
        ``path``.
    """
    import random

    if not conditions:
        raise SummaryError(f"{path}: nothing to plot (no conditions)")
    names = [c["condition"] for c in conditions]
    colours = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    per_image: dict[str, list[dict]] = {n: [] for n in names}
    for name, s in images:
        if name in per_image:
            per_image[name].append(s)
    jitter = random.Random(0)

    W, H = 920, 440
    top = 48 if title else 26
    cv = _Canvas(W, H, scale)
    if title:
        cv.text(W / 2, 20, title, 14)

    # ---- left panel: rosettes per 1000 cells
    box = (86.0, float(top + 10), 400.0, float(H - 78))
    x0, y0, x1, y1 = box
    vals = {n: [float(s["rosettes_per_1000_cells"]) for s in per_image[n]
                if s.get("rosettes_per_1000_cells") is not None] for n in names}
    highs = [v for n in names for v in vals[n]]
    for c in conditions:
        if c["rosettes_per_1000_cells_mean"] is not None:
            highs.append(c["rosettes_per_1000_cells_mean"] + (c["rosettes_per_1000_cells_sd"] or 0.0))
    ticks = _nice_ticks(max(highs, default=1.0) * 1.05)
    ypos = cv.yaxis(box, ticks, "Rosettes per 1000 cells")
    slot = (x1 - x0) / len(names)
    bar_w = min(56.0, 0.6 * slot)
    for i, c in enumerate(conditions):
        n = c["condition"]
        cx = x0 + slot * (i + 0.5)
        mean, sd = c["rosettes_per_1000_cells_mean"], c["rosettes_per_1000_cells_sd"]
        if mean is not None:
            cv.rect(cx - bar_w / 2, ypos(mean), cx + bar_w / 2, y1, fill=_rgb(colours[n], 0.55),
                    outline=_rgb(colours[n]))
            if sd:
                cv.line([(cx, ypos(mean - sd if mean - sd > 0 else 0)), (cx, ypos(mean + sd))], width=1.2)
                for v in (mean + sd, max(mean - sd, 0.0)):
                    cv.line([(cx - 7, ypos(v)), (cx + 7, ypos(v))], width=1.2)
        for v in vals[n]:
            cv.dot(cx + jitter.uniform(-0.3, 0.3) * bar_w, ypos(v), 3.6, fill=_rgb(colours[n]), outline="black")
        cv.text(cx, y1 + 14, _fit(cv, n, 11, slot - 4), 11)
        cv.text(cx, y1 + 30, f"n = {c['n_images']} image{'s' if c['n_images'] != 1 else ''}", 9, fill=(90, 90, 90))
    cv.text((x0 + x1) / 2, y1 + 52, "Condition", 12)
    cv.text(x0 - 60, top - 12, "A", 15, anchor="lm")
    cv.text(x0 - 40, top - 12, "Rosette density", 12, anchor="lm")

    # ---- right panel: k distribution (percent of the condition's rosettes per k bin)
    box = (530.0, float(top + 10), float(W - 24), float(H - 78))
    x0, y0, x1, y1 = box
    pct = {c["condition"]: [c[f"pct_k_{b[0]}"] for b in K_BINS] for c in conditions}
    img_pct: dict[str, list[list[float]]] = {n: [] for n in names}
    for n in names:
        for s in per_image[n]:
            counts = _k_bins(s["k_histogram"])
            if sum(counts):
                img_pct[n].append([100.0 * v / sum(counts) for v in counts])
    highs = [v for n in names for v in pct[n] if v is not None] + [v for n in names for p in img_pct[n] for v in p]
    ticks = _nice_ticks(min(100.0, max(highs, default=10.0) * 1.05))
    ypos = cv.yaxis(box, ticks, "Rosettes (% of condition)")
    group = (x1 - x0) / len(K_BINS)
    bw = min(30.0, 0.8 * group / len(names))
    for j, (_, label, _, _) in enumerate(K_BINS):
        gx = x0 + group * (j + 0.5)
        for i, n in enumerate(names):
            bx = gx + (i - (len(names) - 1) / 2) * bw
            v = pct[n][j]
            if v:
                cv.rect(bx - bw / 2 + 1, ypos(v), bx + bw / 2 - 1, y1, fill=_rgb(colours[n], 0.55),
                        outline=_rgb(colours[n]))
            for p in img_pct[n]:
                cv.dot(bx + jitter.uniform(-0.25, 0.25) * bw, ypos(p[j]), 2.4, fill=_rgb(colours[n]),
                       outline="black")
        cv.text(gx, y1 + 14, label, 11)
    cv.text((x0 + x1) / 2, y1 + 36, "Cells meeting at the rosette (k)", 12)
    cv.text(x0 - 60, top - 12, "B", 15, anchor="lm")
    cv.text(x0 - 40, top - 12, "Cells per rosette", 12, anchor="lm")
    # legend, top right of panel B
    lx = x1 - 8 - max(cv.text_size(n, 10)[0] for n in names) - 18
    for i, n in enumerate(names):
        ly = y0 + 10 + 16 * i
        cv.rect(lx, ly - 5, lx + 10, ly + 5, fill=_rgb(colours[n], 0.55), outline=_rgb(colours[n]))
        cv.text(lx + 16, ly, n, 10, anchor="lm")
    cv.text(x1, H - 12, "bars: mean (A) or pooled (B) per condition; dots: single images; whiskers: ± sd", 9,
            anchor="rm", fill=(90, 90, 90))

    path = Path(path)
    with atomic_path(path) as tmp:
        cv.img.save(tmp, format="PNG")
    return path
