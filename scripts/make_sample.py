"""Write the bundled demo sample rosette_bmz/data/sample_* (1024 x 1024 synthetic outlines).

Seed 9000 is disjoint from the demo training (1000-1039) and evaluation (5000+) seeds.
    .venv/bin/python scripts/make_sample.py
"""

from pathlib import Path

from rosette_bmz.synth import generate, write_image

SEED = 9000

if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "rosette_bmz" / "data"
    out.mkdir(parents=True, exist_ok=True)
    img = generate(1024, seed=SEED)
    for p in write_image(img, out, "sample"):
        print(p, p.stat().st_size)
