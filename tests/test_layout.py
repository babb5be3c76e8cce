"""The shape of the house: one-way layers, the front door, and an installable wheel."""

from __future__ import annotations

import ast
import importlib
import os
import pkgutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import rosette_bmz

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "rosette_bmz"

#: Layers from the bottom; a module may import only from its own layer or below
#: (docs/design.md). Keys are module names relative to ``rosette_bmz`` or package prefixes.
LAYERS = [
    ("", "errors", "constants", "files", "model", "inputs"),
    ("checkpoint", "convert", "proposals", "metrics", "baseline", "definition", "worlds", "synth", "quantities",
     "summary"),
    ("export",),
    ("runner",),
    ("training", "evaluate", "calibrate", "demo", "distributed", "napari"),
    ("cli",),
]


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> int:
    rel = module[len("rosette_bmz"):].lstrip(".")
    if rel.endswith("__main__"):
        return len(LAYERS) - 1          # ``python -m`` entry points belong to the CLI
    head = rel.split(".")[0]
    for i, names in enumerate(LAYERS):
        if head in names:
            return i
    raise AssertionError(f"module {module} is in no layer: add it to LAYERS in tests/test_layout.py")


def _imports(path: Path) -> set[str]:
    """Every rosette_bmz module ``path`` imports, at module level or deferred inside functions."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "rosette_bmz")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "rosette_bmz":
                continue
            # ``from pkg import submodule`` imports the submodule
            for a in node.names:
                sub = f"{target}.{a.name}"
                found.add(sub if (ROOT / Path(*sub.split("."))).with_suffix(".py").exists()
                          or (ROOT / Path(*sub.split("."))).is_dir() else target)
    found.discard(module)
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PKG.rglob("*.py"))}


def test_imports_point_down_and_nothing_imports_the_cli():
    bad = []
    for module, targets in _graph().items():
        for t in targets:
            if t == "rosette_bmz.cli" and not (module.endswith("__main__") or module == "rosette_bmz.cli"):
                bad.append(f"{module} imports the CLI")
            elif _layer(t) > _layer(module):
                bad.append(f"{module} (layer {_layer(module)}) imports {t} (layer {_layer(t)})")
    assert not bad, "\n".join(bad)


def test_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if t not in graph:
                continue
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_layer_test_catches_an_upward_import(tmp_path):
    """The walker sees deferred, relative imports (the way the old cycle was built)."""
    src = tmp_path / "x.py"
    src.write_text("def f():\n    from .cli import main\n    from ..export import build\n")
    fake = PKG / "runner" / "_probe_layout.py"
    fake.write_text(src.read_text())
    try:
        found = _imports(fake)
    finally:
        fake.unlink()
    assert {"rosette_bmz.runner.cli", "rosette_bmz.export.build"} <= found


def test_architecture_file_agrees_with_the_constants():
    from rosette_bmz import constants, model

    assert model.DIVISOR == constants.DIVISOR


def test_front_door_names_are_the_documented_objects_whatever_was_imported_before():
    for m in pkgutil.walk_packages(rosette_bmz.__path__, "rosette_bmz."):
        if not m.name.endswith("__main__"):
            importlib.import_module(m.name)
    modules = [n for n in rosette_bmz.__all__ if type(getattr(rosette_bmz, n)).__name__ == "module"]
    assert not modules, f"rosette_bmz.{modules} resolve to modules, not the documented functions"
    assert callable(rosette_bmz.predict) and rosette_bmz.predict.__module__ == "rosette_bmz.runner.engine"


def test_readme_python_example_runs_after_importing_every_submodule():
    import rosette_bmz as rb
    from rosette_bmz.synth import generate

    for m in pkgutil.walk_packages(rb.__path__, "rosette_bmz."):
        if not m.name.endswith("__main__"):
            importlib.import_module(m.name)
    outlines = generate(256, seed=4, noise=0.0).outlines
    pred = rb.load_predictor(ROOT / "rdf.yaml", backend="onnx")
    prob = rb.predict(rb.from_outlines(outlines), pred)
    labels, rows = rb.find_proposals(prob, threshold=0.5, min_size=10)
    assert prob.shape == outlines.shape and prob.dtype == np.float32
    assert labels.shape == outlines.shape and len(rows) == int(labels.max())


def test_cli_help_is_instant_and_imports_nothing_heavy():
    code = ("import sys; from rosette_bmz.cli import build_parser; build_parser(); "
            "heavy = [m for m in ('torch', 'onnxruntime', 'bioimageio.core', 'scipy', 'skimage') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_predict_imports_nothing_it_can_defer_before_the_model_loads():
    """What `rosette-bmz predict` imports before the model loads (issue 18's start-up): besides the
    heavy libraries, neither the progress bars (tqdm: importlib.metadata, asyncio) nor the rosette
    quantities (+ baseline); they come in background threads or after the network."""
    code = ("import sys; import rosette_bmz.cli, rosette_bmz.runner; "
            "late = [m for m in ('torch', 'onnxruntime', 'bioimageio.core', 'scipy', 'skimage', 'tqdm', "
            "'rosette_bmz.quantities', 'rosette_bmz.baseline') if m in sys.modules]; print(late)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_wheel_holds_one_package_and_exports_from_outside_the_repo(tmp_path):
    """`pip wheel .` -> one top-level package with every file the code opens; installed (not
    editable) into a temporary target, it exports the demo checkpoint from a folder outside the
    repo into the current directory (the exporter's default)."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(ROOT)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = wheels.glob("rosette_bmz-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"rosette_bmz"}, tops
    for needed in ("rosette_bmz/export/package_docs/README.md.template", "rosette_bmz/data/rosette_demo.pt",
                   "rosette_bmz/data/sample_outlines.tif", "rosette_bmz/training/configs/published.yaml",
                   "rosette_bmz/training/configs/finetune.yaml", "rosette_bmz/training/configs/review.yaml",
                   "rosette_bmz/napari/napari.yaml"):
        assert needed in names, f"{needed} missing from the wheel"

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import rosette_bmz, sys; print(rosette_bmz.__file__)"],
                           capture_output=True, text=True, cwd=work, env=env, check=True).stdout.strip()
    assert Path(where).is_relative_to(target), where
    ckpt = target / "rosette_bmz" / "data" / "rosette_demo.pt"
    r = subprocess.run([sys.executable, "-m", "rosette_bmz.export", "--checkpoint", str(ckpt), "--skip-test"],
                       capture_output=True, text=True, cwd=work, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (work / "rdf.yaml").is_file() and (work / "model_package" / "README.md").is_file()
    assert "Validation" in (work / "model_package" / "README.md").read_text()
