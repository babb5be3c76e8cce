"""``rosette-bmz`` command line: parses arguments and calls the library.

Heavy imports (torch, onnxruntime, bioimageio) happen inside each command, so
``rosette-bmz --help`` is instant. Each ``_cmd_*`` function only translates the parsed
arguments into one library call. Errors the user can fix are printed as one line
(``error: ...``) with exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

#: Errors a user can fix: printed as one line, no traceback. Filled lazily so that
#: importing the CLI stays cheap (see ``_user_errors``).
_USER_ERROR_NAMES = (
    ("rosette_bmz.inputs", "InputError"),
    ("rosette_bmz.checkpoint", "CheckpointError"),
    ("rosette_bmz.export", "ExportError"),
    ("rosette_bmz.backends", "ModelError"),
    ("rosette_bmz.synth", "SynthError"),
    ("rosette_bmz.evaluate", "EvaluationError"),
    ("training.config", "ConfigError"),
)


def _user_errors() -> tuple[type[BaseException], ...]:
    import importlib

    found: list[type[BaseException]] = [FileNotFoundError, FileExistsError]
    for mod, name in _USER_ERROR_NAMES:
        module = sys.modules.get(mod)
        if module is None:
            try:
                module = importlib.import_module(mod)
            except Exception:
                continue
        found.append(getattr(module, name))
    return tuple(found)


# ----------------------------------------------------------------------------- commands
def _cmd_synth(args: argparse.Namespace) -> int:
    from .synth import write_dataset

    written = write_dataset(args.out, n=args.n, size=args.size, seed=args.seed, noise=args.noise,
                            cell_diameter=args.cell_diameter, progress=True)
    print(f"wrote {len(written)} synthetic image(s) to {args.out} "
          f"(synth_NNNN_labels.tif, _outlines.tif, _rosettes.tif, .json)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_cli

    return export_cli(args)


def _cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict_cli

    return predict_cli(args)


def _cmd_train(args: argparse.Namespace) -> int:
    from training.train import train_cli

    return train_cli(args)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_cli

    return evaluate_cli(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import demo_cli

    return demo_cli(args)


# ----------------------------------------------------------------------------- parser
def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="state dict (.pt/.pth) to export")
    p.add_argument("--out", default=None, help="directory for rdf.yaml + model_package/ (default: repo root)")
    p.add_argument("--force", action="store_true", help="overwrite an existing package")
    p.add_argument("--zip", default=None, help="also write the package as a zip archive here")
    p.add_argument("--input-kind", default="channels", choices=("channels", "outlines", "labels"),
                   help="what the exported model reads: the 2-channel input (default), or a 1-channel "
                        "outline / label image turned into the 2 channels inside the graph")
    p.add_argument("--skip-test", action="store_true",
                   help="do not run bioimageio.core's test_model (not recommended)")
    p.add_argument("--author", action="append", default=None, metavar="NAME",
                   help="author of the weights for the rdf (repeat for several; default: rosette-bmz developers)")
    p.add_argument("--name", default=None, help="model name for the rdf (default: the rosette detector's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rosette-bmz",
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
    p.add_argument("--noise", type=float, default=0.5,
                   help="segmentation-noise strength in [0, 1], 0 = perfect outlines (default 0.5)")
    p.add_argument("--cell-diameter", type=float, default=None,
                   help="mean cell diameter in pixels (default 24: ~3 um cells at 0.134 um/px)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("train", help="train or fine-tune the Attention U-Net")
    p.add_argument("--config", default=None, help="training config YAML (training/configs/*.yaml)")
    p.add_argument("--init", default=None, help="start from these weights (checkpoint or rdf.yaml)")
    p.add_argument("--images", default=None, help="folder of outline/label TIFFs to fine-tune on")
    p.add_argument("--masks", default=None, help="folder of rosette masks matching --images by name")
    p.add_argument("--input-kind", default=None, choices=("channels", "outlines", "labels"),
                   help="what the --images are (default from the config: outlines)")
    p.add_argument("--synth-dir", default=None, help="train on a folder written by `rosette-bmz synth`")
    p.add_argument("--out", default=None, help="run directory (default from the config)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--epochs", type=int, default=None, help="override the config's epoch count")
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget; stops after that epoch")
    p.add_argument("--seed", type=int, default=None, help="override the config's seed")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cuda, mps or cpu")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("export", help="write a BioImage Model Zoo package (rdf.yaml + model_package/)")
    add_export_arguments(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("predict", help="tiled prediction and rosette proposals for napari")
    p.add_argument("inputs", nargs="+", help="image files or folders (TIFF, NPY, PNG)")
    p.add_argument("--model", required=True, help="rdf.yaml or a checkpoint (.pt)")
    p.add_argument("--backend", default="onnx", choices=("onnx", "torch", "torchscript", "bioimageio"))
    p.add_argument("--input-kind", default="outlines", choices=("channels", "outlines", "labels"))
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--mode", default="halo", choices=("halo", "published"),
                   help="stitching: 'halo' (fast, default) or 'published' (512 window, 128 overlap, averaging)")
    p.add_argument("--tile", type=int, default=None,
                   help="largest tile side in halo mode (multiple of 16; default from the model width)")
    p.add_argument("--batch", type=int, default=None, help="tiles per forward pass (default: what fits the activation budget)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime / torch intra-op threads (default: all cores)")
    p.add_argument("--pad", default=None, choices=("symmetric", "reflect", "constant"),
                   help="image-border padding in halo mode (default: the package's, else constant = zeros)")
    p.add_argument("--border", type=int, default=None,
                   help="pixels of --pad padding added at the image border in halo mode (default: 0 for zeros, "
                        "the package's halo for mirroring; the halo, 112, reproduces bioimageio.core's padding)")
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold for proposals")
    p.add_argument("--min-size", type=int, default=10, help="drop proposals smaller than this (pixels)")
    p.add_argument("--overlay", action="store_true", help="also write an overlay PNG per image")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("evaluate", help="model-card table: the model and the classical baseline side by side")
    p.add_argument("--model", required=True, help="rdf.yaml or a checkpoint (.pt)")
    p.add_argument("--data", required=True, help="folder written by `rosette-bmz synth` (or same layout)")
    p.add_argument("--backend", default="onnx", choices=("onnx", "torch", "torchscript", "bioimageio"))
    p.add_argument("--mode", default="published", choices=("published", "halo"),
                   help="tiling: 'published' (512 window, 128 overlap, as the model card; default) or 'halo'")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime / torch intra-op threads")
    p.add_argument("--baseline-input", default="outlines", choices=("outlines", "labels"),
                   help="what the classical baseline reads: the model's outlines (default) or <name>_labels.tif")
    p.add_argument("--no-baseline", action="store_true", help="skip the classical baseline column")
    p.add_argument("--out", default=None,
                   help="write the JSON report here (<checkpoint stem>.eval.json beside a checkpoint: "
                        "`rosette-bmz export` puts the table in the package README)")
    p.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if isinstance(exc, _user_errors()):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
