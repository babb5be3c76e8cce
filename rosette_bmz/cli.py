"""``rosette-bmz`` command line: parses arguments and calls the library.

The top layer: nothing in the library imports it. Heavy imports (torch, onnxruntime,
bioimageio) happen inside each command, so ``rosette-bmz --help`` is instant. Each
``_cmd_*`` function translates the parsed arguments into library calls and prints the
result. Errors the user can fix (:class:`~rosette_bmz.errors.RosetteError`, a missing
file, an existing output) are printed as one line (``error: ...``) with exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from .constants import BACKENDS, DASK_CHUNK, EVAL_TRUTHS, GROUPINGS, INPUT_KINDS, PAD_MODES, PRECISIONS, SYNTH_TRUTHS
from .errors import RosetteError

#: Errors a user can fix besides :class:`~rosette_bmz.errors.RosetteError`: printed as one line.
_USER_OS_ERRORS = (FileNotFoundError, FileExistsError)


# ----------------------------------------------------------------------------- commands
def _cmd_synth(args: argparse.Namespace) -> int:
    from .synth import write_dataset

    written = write_dataset(args.out, n=args.n, size=args.size, seed=args.seed, noise=args.noise,
                            cell_diameter=args.cell_diameter, world=args.world, progress=True, truth=args.truth)
    print(f"wrote {len(written)} synthetic image(s) to {args.out} "
          f"(synth_NNNN_labels.tif, _outlines.tif, _rosettes.tif, .json)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import PACKAGE_DIR, export_package

    authors = [{"name": a.strip()} for a in (args.author or []) if a.strip()] or None
    rdf = export_package(args.checkpoint, args.out, force=args.force, zip_path=args.zip,
                         input_kind=args.input_kind, run_test=not args.skip_test, name=args.name, authors=authors)
    print(f"wrote {rdf} and {rdf.parent / PACKAGE_DIR}/" + (f" and {args.zip}" if args.zip else ""))
    print("warning: bioimageio.core test_model was skipped" if args.skip_test else "bioimageio.core test_model: passed")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    def report(r) -> None:
        if not r.ok:
            from tqdm.auto import tqdm   # not before the model loads: start-up (issue 18)

            tqdm.write(f"error: {r.error}", file=sys.stderr)

    from .runner.images import check_options

    check_options(not args.no_quantities, args.check)   # before the model loads
    if args.dask:
        from .distributed import predict_files_dask

        if not args.verbose:   # the scheduler of a local cluster logs every worker start and stop
            logging.getLogger("distributed").setLevel(logging.ERROR)
        results = predict_files_dask(args.inputs, args.model, args.dask, args.backend, args.input_kind, args.out,
                                     mode=args.mode, tile=args.tile, batch=args.batch, threads=args.threads,
                                     threshold=args.threshold, min_size=args.min_size, overlay=args.overlay,
                                     quantities=not args.no_quantities, pixel_size=args.pixel_size, pad=args.pad,
                                     border=args.border, chunk=args.chunk, progress=True, tta=args.tta,
                                     check=args.check, on_result=report)
    else:
        from .runner import load_predictor, predict_files

        predictor = load_predictor(args.model, args.backend, args.threads, pad=args.pad, tile=args.tile,
                                   border=args.border)
        try:
            results = predict_files(args.inputs, predictor, args.backend, args.input_kind, args.out,
                                    mode=args.mode, tile=args.tile, batch=args.batch, threshold=args.threshold,
                                    min_size=args.min_size, overlay=args.overlay, progress=True,
                                    quantities=not args.no_quantities, pixel_size=args.pixel_size,
                                    tta=args.tta, check=args.check, on_result=report)
        finally:
            predictor.close()
    ok = [r for r in results if r.ok]
    where = f" on dask ({args.dask})" if args.dask else ""
    line = (f"predicted {len(ok)}/{len(results)} image(s) with the {args.backend} backend{where} into {args.out}: "
            f"{sum(r.n_proposals for r in ok)} rosette proposal(s)"
            + (" checked against the vertex graph" if args.check else ""))
    if len(ok) < len(results):
        line += f"; {len(results) - len(ok)} failed"
    print(line)
    return 0 if ok and len(ok) == len(results) else 1


def _cmd_summarize(args: argparse.Namespace) -> int:
    from .summary import summarize_runs

    res = summarize_runs(args.run_dirs, by=args.by, out=args.out, title=args.title)
    for c in res["conditions"]:
        mean = c.get("rosettes_per_1000_cells_mean")
        print(f"{c['condition']}: {c['n_images']} image(s), "
              + (f"{mean:.1f} rosettes per 1000 cells" if mean is not None else "no cells"))
    print("wrote " + ", ".join(str(p) for p in res["files"].values()))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .training.train import resolve_config, train

    cfg, resume = resolve_config(args.config, init=args.init, out=args.out, resume=args.resume, epochs=args.epochs,
                                 max_minutes=args.max_minutes, seed=args.seed, device=args.device,
                                 images=args.images, masks=args.masks, synth_dir=args.synth_dir,
                                 input_kind=args.input_kind, precision=args.precision)
    cols = ("train_loss", "val_loss", "val_dice", "val_event_recall", "val_event_precision", "val_decoy_hit_rate")

    def show(row: dict) -> None:
        vals = " ".join(f"{c.replace('val_event_', '').replace('val_', 'val ')}="
                        f"{row[c]:.4f}" for c in cols if isinstance(row.get(c), float))
        print(f"epoch {row['epoch']:3d}  {vals}  lr={row['lr']:.2g}  ({row['seconds']:.0f} s)", flush=True)

    print(f"training {cfg.name}: data {cfg.data.source}, crops {cfg.data.crop_size}, batch {cfg.optim.batch_size}, "
          f"up to {cfg.optim.epochs} epochs -> {cfg.out}", flush=True)
    res = train(cfg, resume=resume, progress=sys.stderr.isatty(), on_epoch=show)
    best = next((r for r in res.history if r["epoch"] == res.best_epoch), None)
    print(f"stopped: {res.stopped}; best epoch {res.best_epoch}"
          + (f" (val loss {best['val_loss']:.4f}, dice {best['val_dice']:.3f})" if best else ""))
    print(f"wrote {res.best}, {res.last} and {res.out / 'log.csv'}")
    print(f"next: rosette-bmz export --checkpoint {res.best}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import calibrate, format_sweep

    report = calibrate(args.model, args.data, args.out, min_precision=args.min_precision, backend=args.backend,
                       mode=args.mode, threads=args.threads, force=args.force)
    print(format_sweep(report))
    print(f"\nthreshold {report['chosen']:.2f} ({report['reason']}) baked into {args.out}: its output at 0.5 "
          f"is {args.model} at {report['chosen']:.2f}"
          + (f" (with the {report['previous']:.2f} it carried: {report['threshold']:.3f} of the uncalibrated weights)"
             if report["previous"] is not None else ""))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .errors import EvaluationError
    from .evaluate import evaluate_dataset, write_report

    if args.out is not None:  # fail before the (long) evaluation, not after it
        p = Path(args.out)
        if p.is_dir() or not p.parent.is_dir():
            raise EvaluationError(f"{p}: cannot write the report there (a directory, or its folder does not exist)")
    report = evaluate_dataset(args.model, args.data, args.backend, mode=args.mode, threads=args.threads,
                              baseline=not args.no_baseline, baseline_input=args.baseline_input, progress=True,
                              truth=args.truth, tta=args.tta, check=args.check)
    print(report["table_markdown"])
    if args.out is not None:
        write_report(report, args.out)
        print(f"\nwrote {args.out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    s = run_demo(args.out)
    print(f"package:   {s['rdf']}  (passed bioimageio.core test_model)")
    for key, path in s["outputs"].items():
        print(f"{key + ':':10} {path}")
    print(f"sample: {s['n_proposals']} proposal(s) in {s['seconds']:.1f} s; "
          f"{s['n_detected']}/{s['n_rosettes']} known rosettes found, "
          f"{s['n_proposals_matched']}/{s['n_proposals']} proposals on a rosette, "
          f"{s['n_decoys_hit']}/{s['n_decoys']} 4-cell decoys hit")
    print("review in napari: open the outlines image, then the *_rosettes.tif as labels and the CSV as points")
    return 0


# ----------------------------------------------------------------------------- parser
def _add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="state dict (.pt/.pth) to export")
    p.add_argument("--out", default=None,
                   help="directory for rdf.yaml + model_package/ (default: the current directory)")
    p.add_argument("--force", action="store_true", help="overwrite an existing package")
    p.add_argument("--zip", default=None, help="also write the package as a zip archive here")
    p.add_argument("--input-kind", default="channels", choices=INPUT_KINDS,
                   help="what the exported model reads: the 2-channel input (default), or a 1-channel "
                        "outline / label image turned into the 2 channels inside the graph")
    p.add_argument("--skip-test", action="store_true",
                   help="do not run bioimageio.core's test_model (not recommended)")
    p.add_argument("--author", action="append", default=None, metavar="NAME",
                   help="author of the weights for the rdf (repeat for several; default: rosette-bmz developers)")
    p.add_argument("--name", default=None, help="model name for the rdf (default: the rosette detector's)")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "rosette-bmz",
        description="Nematostella rosette detector: synthetic data, training, BioImage Model Zoo export "
                    "and tiled prediction.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="export the shipped demo weights and predict on a bundled sample")
    p.add_argument("--out", default="out/demo", help="output directory (default: out/demo)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("synth", help="generate synthetic epithelium images with known rosettes")
    p.add_argument("--n", type=int, default=4, help="number of images")
    p.add_argument("--size", type=int, default=1024, help="image height and width in pixels")
    p.add_argument("--seed", type=int, default=0, help="random seed (image i uses seed + i)")
    p.add_argument("--noise", type=float, default=None,
                   help="segmentation-noise strength in [0, 1], 0 = perfect outlines (default 0.5; "
                        "with --world: drawn per image)")
    p.add_argument("--cell-diameter", type=float, default=None,
                   help="mean cell diameter in pixels (default 24: ~3 um cells at 0.134 um/px; with --world: "
                        "drawn per image)")
    p.add_argument("--world", default=None,
                   help="draw each image's settings from a named world: train (the randomised training "
                        "distribution), train_wide (the same with cells of 12-48 px), heldout (train, other "
                        "seeds), default (generate()'s defaults), or an 'other world' outside the training "
                        "ranges: small_cells, large_cells, wide_lines, wider_lines, noise1, poisson, hexjitter")
    p.add_argument("--truth", default=SYNTH_TRUTHS[0], choices=SYNTH_TRUTHS,
                   help="where the rosette rule reads the ground truth: the final cell label image with its gaps "
                        "closed, as `evaluate --truth labels` does (default), or the clean tiling before "
                        "segmentation noise; the images are the same either way")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("train", help="train or fine-tune the Attention U-Net")
    p.add_argument("--config", default=None,
                   help="training config: a YAML file, or the name of a shipped one "
                        "(rosette_bmz/training/configs/: published, finetune, review, demo, demo_stage1, world, "
                        "world_near, world_wide, world_seg, world_ext, world_err, world_anneal, world_lines, "
                        "world_cos, world_w24)")
    p.add_argument("--init", default=None, help="start from these weights (checkpoint or rdf.yaml)")
    p.add_argument("--images", default=None, help="folder of outline/label TIFFs to fine-tune on")
    p.add_argument("--masks", default=None, help="folder of rosette masks matching --images by name")
    p.add_argument("--input-kind", default=None, choices=INPUT_KINDS,
                   help="what the --images are (default from the config: outlines)")
    p.add_argument("--synth-dir", default=None, help="train on a folder written by `rosette-bmz synth`")
    p.add_argument("--out", default=None, help="run directory (default from the config)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--epochs", type=int, default=None, help="override the config's epoch count")
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget; stops after that epoch")
    p.add_argument("--seed", type=int, default=None, help="override the config's seed")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cuda, mps or cpu")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="training arithmetic: fp32, bf16 (about 1.7x faster where the CPU has native bf16) or "
                        "auto (bf16 where native); default from the config")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("export", help="write a BioImage Model Zoo package (rdf.yaml + model_package/)")
    _add_export_arguments(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("predict", help="tiled prediction and rosette proposals for napari")
    p.add_argument("inputs", nargs="+", help="image files or folders (TIFF, NPY, PNG, zarr / OME-Zarr)")
    p.add_argument("--model", required=True, help="rdf.yaml or a checkpoint (.pt)")
    p.add_argument("--backend", default="onnx", choices=BACKENDS)
    p.add_argument("--input-kind", default="outlines", choices=INPUT_KINDS)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--mode", default="halo", choices=("halo", "published"),
                   help="stitching: 'halo' (fast, default) or 'published' (512 window, 128 overlap, averaging)")
    p.add_argument("--tile", type=int, default=None,
                   help="largest tile side in halo mode (multiple of 16; default from the model width)")
    p.add_argument("--batch", type=int, default=None,
                   help="tiles per forward pass (default: what fits the activation budget)")
    p.add_argument("--threads", type=int, default=None,
                   help="onnxruntime / torch intra-op threads (default: all cores)")
    p.add_argument("--pad", default=None, choices=PAD_MODES,
                   help="image-border padding in halo mode (default: the package's, else constant = zeros)")
    p.add_argument("--border", type=int, default=None,
                   help="pixels of --pad padding added at the image border in halo mode (default: 0 for zeros, "
                        "the package's halo for mirroring; the halo, 112, reproduces bioimageio.core's padding)")
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold for proposals")
    p.add_argument("--min-size", type=int, default=10, help="drop proposals smaller than this (pixels)")
    p.add_argument("--overlay", action="store_true", help="also write an overlay PNG per image")
    p.add_argument("--pixel-size", type=float, default=None, metavar="UM",
                   help="pixel size in µm: summaries also give rosettes per 1000 µm² of tissue")
    p.add_argument("--no-quantities", action="store_true",
                   help="skip the rosette topology (k, kind, cells) and the per-image summaries")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the 8 rotations / flips of each image (8x the time; "
                        "fewer false proposals on ambiguous junctions)")
    p.add_argument("--check", action="store_true",
                   help="check the proposals against the cells' vertex graph: keep those with a junction of >= 5 "
                        "cells (or p > 0.9), add junctions of >= 5 cells the network half-saw (p > 0.2); "
                        "fewer false proposals (docs/metrics.md, 'Checked proposals')")
    p.add_argument("--dask", default=None, metavar="CLUSTER",
                   help="run on dask.distributed: local:N (N worker processes on this machine) or "
                        "tcp://HOST:PORT (a running scheduler); one task per image, images over 4096² chunked "
                        "into <stem>_prob.ome.zarr (needs the [dask] extra)")
    p.add_argument("--chunk", type=int, default=DASK_CHUNK,
                   help=f"with --dask: chunk side for large images (multiple of 16; default {DASK_CHUNK})")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("summarize", help="rosette numbers per condition: table and figure from predict runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="output folders of `rosette-bmz predict`")
    p.add_argument("--by", default="folder", choices=GROUPINGS,
                   help="condition = each folder holding summaries (default) or each RUN_DIR given")
    p.add_argument("--out", default=".", help="folder for conditions.csv, images.csv, conditions.png")
    p.add_argument("--title", default=None, help="figure title")
    p.set_defaults(func=_cmd_summarize)

    p = sub.add_parser("calibrate", help="choose a checkpoint's threshold on validation images and bake it in "
                       "(its output at 0.5 is the old one at that threshold)")
    p.add_argument("--model", required=True, help="a checkpoint (.pt)")
    p.add_argument("--data", required=True, help="validation images with ground truth, as `rosette-bmz synth` "
                   "writes them (not your test images)")
    p.add_argument("--out", required=True, help="the calibrated checkpoint to write (with its .json sidecar)")
    p.add_argument("--min-precision", type=float, default=None,
                   help="take the lowest threshold with at least this event precision (default: highest event F1)")
    p.add_argument("--backend", default="onnx", choices=BACKENDS)
    p.add_argument("--mode", default="published", choices=("published", "halo"), help="tiling (as evaluate)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime / torch intra-op threads")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("evaluate", help="model-card table: the model and the classical baseline side by side")
    p.add_argument("--model", required=True, help="rdf.yaml or a checkpoint (.pt)")
    p.add_argument("--data", required=True, help="folder written by `rosette-bmz synth` (or same layout)")
    p.add_argument("--backend", default="onnx", choices=BACKENDS)
    p.add_argument("--mode", default="published", choices=("published", "halo"),
                   help="tiling: 'published' (512 window, 128 overlap, as the model card; default) or 'halo'")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime / torch intra-op threads")
    p.add_argument("--baseline-input", default="outlines", choices=("outlines", "labels"),
                   help="what the classical baseline reads: the model's outlines (default) or <name>_labels.tif")
    p.add_argument("--no-baseline", action="store_true", help="skip the classical baseline column")
    p.add_argument("--tta", action="store_true", help="score the model with test-time augmentation (8 views)")
    p.add_argument("--check", action="store_true",
                   help="also score the proposals checked against the vertex graph (as `predict --check`)")
    p.add_argument("--truth", default="files", choices=EVAL_TRUTHS,
                   help="ground truth: the <name>_rosettes.tif annotations (default), or read off each "
                        "<name>_labels.tif by the rosette definition (docs/metrics.md)")
    p.add_argument("--out", default=None,
                   help="write the JSON report here (<checkpoint stem>.eval.json beside a checkpoint: "
                        "`rosette-bmz export` puts the table in the package README)")
    p.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run one ``rosette-bmz`` command; user errors print one line and return 2."""
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RosetteError, *_USER_OS_ERRORS) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
