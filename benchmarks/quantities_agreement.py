"""How often the rosette quantities (k, kind) are right, on synthetic tissue with known rosettes.

    .venv/bin/python benchmarks/quantities_agreement.py [--n 6] [--size 1024]

The true rosette masks are the proposals, so this measures ``rosette_bmz.quantities`` (k read
off cells recovered from outlines, or from the label image), not the network. Also counts how
many 4-cell junctions (discs of 4 px radius at each decoy) are read as >= 5 cells. Prints one
line per noise level and input kind; a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse

import numpy as np

from rosette_bmz.proposals import find_proposals
from rosette_bmz.quantities import cells_for, describe_proposals
from rosette_bmz.synth import generate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=2000)
    args = ap.parse_args()
    for noise in (0.0, 0.5):
        images = [generate(args.size, seed=args.seed + i, noise=noise) for i in range(args.n)]
        for kind in ("outlines", "labels"):
            n = k_ok = kind_ok = dec = dec_hi = 0
            for g in images:
                cells = cells_for(g.labels if kind == "labels" else g.outlines, kind)
                labels, rows = find_proposals((g.rosettes > 0).astype(np.float32), 0.5, 10)
                for r in describe_proposals(labels, rows, cells):
                    ids, counts = np.unique(g.rosettes[labels == r["id"]], return_counts=True)
                    true = g.meta["rosettes"][int(ids[np.argmax(counts)]) - 1]
                    n += 1
                    k_ok += r["k"] == true["k"]
                    kind_ok += r["kind"] == true["kind"]
                discs = np.zeros(g.rosettes.shape, np.float32)
                yy, xx = np.ogrid[:discs.shape[0], :discs.shape[1]]
                for d in g.meta["decoys"]:
                    discs[(yy - d["y"]) ** 2 + (xx - d["x"]) ** 2 <= 16] = 1
                labels, rows = find_proposals(discs, 0.5, 10)
                rows = describe_proposals(labels, rows, cells)
                dec += len(rows)
                dec_hi += sum(r["k"] >= 5 for r in rows)
            print(f"noise {noise} from {kind}: k {k_ok}/{n} = {k_ok / n:.1%}, kind {kind_ok}/{n} = "
                  f"{kind_ok / n:.1%}; 4-cell junctions read as >= 5: {dec_hi}/{dec} = {dec_hi / max(dec, 1):.1%}")


if __name__ == "__main__":
    main()
