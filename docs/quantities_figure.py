"""Draw docs/rosette_quantities.png: the ``summarize`` figure for two synthetic conditions.

    .venv/bin/python docs/quantities_figure.py [--out docs/rosette_quantities.png] [--work DIR]

numpy + scipy + Pillow only (no network, no matplotlib). Two synthetic "conditions" differ in
rosette density (``generate(rosette_density=...)``: 1.5 vs 3 rosettes per 100 cells, five
768 x 768 label images each, noise 0.5, 0.134 µm/px). Each image goes through what
``rosette-bmz predict --input-kind labels --pixel-size 0.134`` does after the network: the
proposals (here the classical baseline's mask, which stands in for the network's probability
map), :func:`rosette_bmz.quantities.describe_proposals`, the per-image summary JSON and the
run's ``summary.csv``; then :func:`rosette_bmz.summary.summarize_runs` groups the two run
folders into conditions and draws the figure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rosette_bmz.baseline import baseline_probability  # noqa: E402
from rosette_bmz.proposals import find_proposals  # noqa: E402
from rosette_bmz.quantities import cells_for, describe_proposals, image_summary, write_rosette_csv  # noqa: E402
from rosette_bmz.summary import summarize_runs, write_image_summary, write_summary_csv  # noqa: E402
from rosette_bmz.synth import generate  # noqa: E402

CONDITIONS = {"control": 1.5, "high density": 3.0}
PIXEL_SIZE = 0.134


def run(work: Path, n: int = 5, size: int = 768) -> list[Path]:
    runs = []
    for c, (name, density) in enumerate(CONDITIONS.items()):
        run_dir = work / name
        run_dir.mkdir(parents=True, exist_ok=True)
        summaries = []
        for i in range(n):
            img = generate(size, seed=500 + 100 * c + i, noise=0.5, rosette_density=density)
            labels, rows = find_proposals(baseline_probability(img.labels, "labels"))
            cells = cells_for(img.labels, "labels")
            described = describe_proposals(labels, rows, cells)
            stem = f"image_{i:02d}"
            write_rosette_csv(run_dir / f"{stem}_rosettes.csv", described)
            summary = image_summary(cells, described, PIXEL_SIZE, name=stem)
            write_image_summary(run_dir / f"{stem}_summary.json", summary)
            summaries.append(summary)
        write_summary_csv(run_dir / "summary.csv", summaries)
        runs.append(run_dir)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).with_name("rosette_quantities.png")))
    ap.add_argument("--work", default=None, help="keep the run folders here (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        result = summarize_runs(run(work), by="folder", out=work / "summary",
                                title="Synthetic tissue: 1.5 vs 3 rosettes per 100 cells (noise 0.5)")
        Path(args.out).write_bytes(result["files"]["figure"].read_bytes())
        print((work / "summary" / "conditions.csv").read_text())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
