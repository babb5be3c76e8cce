"""What the benchmarks that score the generalisation sets share: their arguments and their writer."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rosette_bmz.files import atomic_path

ROOT = Path(__file__).resolve().parents[1]


def add_set_arguments(ap: argparse.ArgumentParser, sets: list[str], out: Path) -> None:
    """``--n --size --model --backend --sets --out``, with the generalisation table's defaults."""
    ap.add_argument("--n", type=int, default=8, help="images per set (default 8, as the generalisation table)")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--model", default=str(ROOT / "rdf.yaml"), help="rdf.yaml or checkpoint (default: the package)")
    ap.add_argument("--backend", default="onnx")
    ap.add_argument("--sets", nargs="+", default=sets)
    ap.add_argument("--out", default=str(out))


def write_results(out: str | Path, report: dict, md: str, copy_to: str | Path | None = None) -> None:
    """``<out>.json`` (the report) and ``<out>.md`` (the table), each written atomically, also into ``copy_to``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, text in ((out.with_suffix(".json"), json.dumps(report, indent=1) + "\n"), (out.with_suffix(".md"), md)):
        for dest in [path] + ([Path(copy_to) / path.name] if copy_to else []):
            with atomic_path(dest) as tmp:
                tmp.write_text(text)
