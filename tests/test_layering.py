"""The import layering of DESIGN.md §2: a module imports only from layers above it.

Within one package (e.g. crossrec.data.*) modules may import each other. `search` and `serve`
are siblings that exchange files and never import each other.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "crossrec"

LAYERS = {
    "errors": 0, "config": 0,
    "data": 1, "hardware.spec": 1,
    "models": 2,
    "train": 3, "hardware": 3, "runtime": 3,
    "compress": 4,
    "artifact": 4.5,  # loads compressed variants, so it rebuilds their structure through compress
    "search": 5, "serve": 5,
    "simulate": 6, "report": 6, "demo": 6,
    "cli": 7,
}


def _unit(module: str) -> str:
    """'crossrec.data.criteo' -> 'data'; 'crossrec.hardware.spec' -> 'hardware.spec'."""
    parts = module.split(".")[1:]
    for n in (2, 1):
        if ".".join(parts[:n]) in LAYERS:
            return ".".join(parts[:n])
    raise AssertionError(f"{module} is in no layer of DESIGN.md §2: add it to LAYERS and the design")


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        if name != "crossrec":
            yield name, path


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


@pytest.mark.parametrize("module,path", list(_modules()), ids=lambda x: str(x).split("/")[-1])
def test_imports_respect_layers(module, path):
    unit = _unit(module)
    for imported in _imports(path):
        if not imported.startswith("crossrec."):
            continue
        other = _unit(imported)
        if other == "errors" or other == unit or other.split(".")[0] == unit.split(".")[0]:
            continue
        assert LAYERS[other] < LAYERS[unit], (
            f"{module} (layer {LAYERS[unit]}) imports {imported} (layer {LAYERS[other]}): "
            "a module may only import from layers above it (DESIGN.md §2)")


def test_import_crossrec_stays_lean():
    code = ("import sys, crossrec; heavy = [m for m in ('torch', 'fastapi', 'ray', 'onnxruntime', 'uvicorn') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, f"`import crossrec` loaded {proc.stdout.strip()}"
