"""The review loop on every "other world" (issue 14, item 4), one table and one figure.

    nice -n 5 .venv/bin/python benchmarks/review_loop_worlds.py [--worlds poisson,hexjitter,...]
        [--table-only]

For each named world of :data:`rosette_bmz.worlds.OTHER_WORLDS` (one setting outside the
training ranges of the shipped weights' world), ``benchmarks/review_loop.py --world NAME`` plays
the perfect reviewer: one ``review.yaml`` round from the shipped weights on 1, 2, 4, 8 corrected
512² images of that world and the 24-image "full dataset" round, scored on 18 held-out images of
the world (seeds 7000-7017) and, for forgetting, on the 12 ``train_wide`` images the
16 px / noise 1 loop uses. Each world's rounds go to ``benchmarks/results/review_loop_<NAME>.json``
(``--table-only``: read those instead of running); this script then writes
``benchmarks/results/review_loop_worlds.md`` (per world: the shipped weights, the rounds on 2 and
on 24 images, the worst forgetting, the round times and the issue's four targets) and
``docs/review_loop_worlds.png`` (each world's curve, as ``docs/review_loop.png``).

Targets (issue 14, item 4), each checked on the network's own proposals and, where the issue's
last one is concerned, with ``predict --check`` as well: the 2-image round within 0.05 of the
24-image round on recall and precision; a round <= 15 min; forgetting (old-world recall and
precision lost) <= 0.02 in every round; >= 0.90 recall and >= 0.85 precision on the new world
after the 2-image round.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rosette_bmz.files import atomic_path  # noqa: E402
from rosette_bmz.worlds import OTHER_WORLDS, get_world  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FIGURE = ROOT / "docs" / "review_loop_worlds.png"
#: Issue 14, item 4.
WITHIN, ROUND_S, FORGET, RECALL, PRECISION = 0.05, 15 * 60, 0.02, 0.90, 0.85


def world_json(name: str, folder: Path = RESULTS) -> Path:
    return folder / f"review_loop_{name}.json"


def summarise(res: dict) -> dict:
    """One world's row: shipped, 2 images, 24 images, worst forgetting, round times, targets met."""
    rounds = {r["n_images"]: r for r in res["rounds"]}
    two, full = rounds[2], rounds[max(rounds)]
    forget = max(max(r["forgetting"].values()) for r in res["rounds"])
    seconds = [r["seconds"] for r in res["rounds"]]

    def pair(m: dict) -> tuple[float, float]:
        return m["recall"], m["precision"]

    near = all(abs(a - b) <= WITHIN for a, b in zip(pair(two["new_world"]), pair(full["new_world"])))
    return {
        "world": res["world"], "rosettes": res["shipped"]["new_world"]["rosettes"],
        "shipped": pair(res["shipped"]["new_world"]), "shipped_checked": pair(res["shipped"]["new_world"]["checked"]),
        "two": pair(two["new_world"]), "two_checked": pair(two["new_world"]["checked"]),
        "full": pair(full["new_world"]), "full_images": full["n_images"],
        "worst_forgetting": round(forget, 4), "seconds": (min(seconds), max(seconds)),
        "targets": {
            "2 images within 0.05 of the full line": near,
            "round <= 15 min": max(seconds) <= ROUND_S,
            "forgetting <= 0.02": forget <= FORGET,
            ">= 0.90 / 0.85 after 2 images": two["new_world"]["recall"] >= RECALL
            and two["new_world"]["precision"] >= PRECISION,
            ">= 0.90 / 0.85 after 2 images, checked": two["new_world"]["checked"]["recall"] >= RECALL
            and two["new_world"]["checked"]["precision"] >= PRECISION,
        },
    }


def table(rows: list[dict]) -> str:
    f = lambda p: f"{p[0]:.2f} / {p[1]:.2f}"                                      # noqa: E731
    names = list(rows[0]["targets"])
    lines = [
        "# The review loop on the other worlds",
        "",
        f"`benchmarks/review_loop_worlds.py` ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC): per world one "
        "`review.yaml` round from the shipped weights on 1, 2, 4, 8 and 24 corrected 512² images (a perfect "
        "reviewer: the true masks), scored on 18 held-out images of the world; old world: 12 `train_wide` images "
        "(forgetting = old-world recall or precision lost, worst of the five rounds). Each cell reads recall / "
        "precision at p 0.5; *checked*: the same proposals with `predict --check`. Targets (issue 14, item 4): "
        + "; ".join(f"({i + 1}) {n}" for i, n in enumerate(names)) + ".",
        "",
        "| world | rosettes | shipped | shipped, checked | 2 images | 2 images, checked | 24 images | worst "
        "forgetting | round (s) | targets met |",
        "|---|---:|---|---|---|---|---|---:|---|---|",
    ]
    for r in rows:
        met = ", ".join(str(i + 1) for i, ok in enumerate(r["targets"].values()) if ok) or "none"
        lines.append(f"| `{r['world']}` | {r['rosettes']} | {f(r['shipped'])} | {f(r['shipped_checked'])} | "
                     f"{f(r['two'])} | {f(r['two_checked'])} | {f(r['full'])} | {r['worst_forgetting']:.3f} | "
                     f"{r['seconds'][0]:.0f}-{r['seconds'][1]:.0f} | {met} |")
    return "\n".join(lines) + "\n"


def figure(results: list[dict], path: Path) -> None:
    """Each world's curve (review_loop.draw, y axis 0.6-1), two per row."""
    from PIL import Image
    from review_loop import draw

    with tempfile.TemporaryDirectory() as tmp:
        panels = []
        for i, res in enumerate(results):
            p = Path(tmp) / f"{i}.png"
            draw(res, p, ylim=(0.6, 1.0))
            panels.append(Image.open(p).convert("RGB"))
        w, h = panels[0].size
        cols = 2
        grid = Image.new("RGB", (cols * w, -(-len(panels) // cols) * h), "white")
        for i, im in enumerate(panels):
            grid.paste(im, ((i % cols) * w, (i // cols) * h))
        with atomic_path(path) as out:
            grid.save(out, format="PNG", optimize=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worlds", default=",".join(OTHER_WORLDS), help="comma-separated world names")
    ap.add_argument("--table-only", action="store_true", help="read the worlds' JSON files instead of running")
    ap.add_argument("--figure", type=Path, default=FIGURE)
    ap.add_argument("--results", type=Path, default=RESULTS,
                    help="folder of the worlds' JSON files and of review_loop_worlds.md (default benchmarks/results)")
    args = ap.parse_args(argv)
    names = [w.strip() for w in args.worlds.split(",") if w.strip()]
    for name in names:
        get_world(name)             # an unknown name fails before any training
    if not args.table_only:
        import review_loop

        for name in names:
            with tempfile.TemporaryDirectory() as tmp:
                review_loop.main(["--world", name, "--out", str(world_json(name, args.results)),
                                  "--figure", str(Path(tmp) / "curve.png")])
    missing = [n for n in names if not world_json(n, args.results).exists()]
    if missing:
        ap.error(f"no results for {', '.join(missing)}: run without --table-only first")
    results = [json.loads(world_json(n, args.results).read_text()) for n in names]
    md = table([summarise(r) for r in results])
    with atomic_path(args.results / "review_loop_worlds.md") as out:
        out.write_text(md)
    figure(results, args.figure)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
