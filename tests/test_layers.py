"""The package's structure, checked by parsing its source (no import runs):

- layers: ``models``/``ops``/``data`` (and the helpers beside them) -> ``distill`` -> ``engine`` ->
  ``report``/``reproduce`` -> ``cli``, with no import pointing up (a module may import its own layer or below);
- no private name (``_x``) imported from another package;
- no function in ``engine/`` or ``distill/`` longer than 80 lines: the training loop and the methods read on a
  screen;
- imports sit at the top of their module, outside ``cli/`` (whose commands load the library lazily so that
  ``srkd --help`` does not import torch): an import inside a function is allowed only for the pairs listed in
  :data:`INSIDE_ALLOWED`, each with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "srkd"

# Lowest first. A top-level module (srkd/io.py) or package (srkd/models/) is named by its first path component.
LAYERS: list[set[str]] = [
    {"errors", "io", "device", "config_base", "optim_base", "precision", "recipes"},
    {"ops"},
    {"models", "data", "metrics", "checkpoint", "evaluation", "export"},
    {"distill"},
    {"engine"},
    {"report", "reproduce", "bench", "demo"},
    {"cli", "api", "__init__", "__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
# The one import that points up, and why: `srkd.distill` is both the methods' package and the API's entry point
# `srkd.distill(teacher, student, ...)`; the package answers the call by importing srkd.api when it is called.
UPWARD_ALLOWED: set[tuple[str, str]] = {("distill/__init__.py", "srkd.api")}

# Functions allowed past MAX_LINES: only in files another change owns right now (the data-free split).
MAX_LINES = 80
LONG_ALLOWED: set[tuple[str, str]] = set()


def unit(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def srkd_imports(tree: ast.AST) -> list[tuple[int, str, list[str]]]:
    """(line, module, imported names) of every ``srkd.*`` import, including those inside functions."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("srkd."):
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.startswith("srkd.")]
    return found


def sources() -> list[tuple[Path, ast.AST]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(SRC.rglob("*.py"))]


def test_every_module_has_a_layer() -> None:
    assert not {unit(p) for p, _ in sources()} - set(RANK)


def test_no_import_points_up_a_layer() -> None:
    upward = []
    for path, tree in sources():
        own = RANK[unit(path)]
        for line, module, _names in srkd_imports(tree):
            target = module.split(".")[1]
            if RANK.get(target, 0) > own and (path.relative_to(SRC).as_posix(), module) not in UPWARD_ALLOWED:
                upward.append(f"{path.relative_to(SRC)}:{line} imports {module}")
    assert not upward, "\n".join(upward)


def test_no_private_name_is_imported_from_another_package() -> None:
    private = []
    for path, tree in sources():
        for line, module, names in srkd_imports(tree):
            if module.split(".")[1] != unit(path):
                private += [f"{path.relative_to(SRC)}:{line} {module}.{n}" for n in names if n.startswith("_")]
    assert not private, "\n".join(private)


def test_engine_and_method_functions_fit_on_a_screen() -> None:
    long = []
    for path, tree in sources():
        if unit(path) not in ("engine", "distill"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_LINES and (path.name, node.name) not in LONG_ALLOWED:
                    long.append(f"{path.relative_to(SRC)}: {node.name} is {lines} lines")
    assert not long, "\n".join(long)


# (module under src/srkd, imported name) pairs that may be imported inside a function outside cli/, and why.
INSIDE_ALLOWED: set[tuple[str, str]] = {
    # optional dependencies (pyproject extras): a missing one costs only the feature that needs it, in one line
    ("checkpoint/convert.py", "scipy.io"),  # matconvnet extra: the VDSR authors' .mat file
    ("data/samples.py", "skimage.data"),  # demo extra: the bundled sample photos
    ("export.py", "onnx"),  # onnx extra: metadata_props of an exported graph
    ("export.py", "onnxruntime"),  # onnx extra: checking an exported graph
    ("engine/logging.py", "torch.utils.tensorboard.SummaryWriter"),  # tensorboard extra
    ("bench/common.py", "cv2"),  # dev extra: the BasicSR baselines of `srkd bench`
    ("bench/evaluation.py", "cv2"),  # dev extra: the BasicSR-style evaluation baseline
    # platform: POSIX only (Windows has no fcntl; the download lock is a no-op there)
    ("data/download.py", "fcntl"),
    # the API's entry point answered by the methods' package (see UPWARD_ALLOWED): srkd.api imports this package
    ("distill/__init__.py", "srkd.api.distill"),
    # matplotlib (~0.4 s to import) is paid only when a figure is drawn, not by every user of srkd.report
    ("report/figures.py", "matplotlib.figure.Figure"),
    ("report/figures.py", "matplotlib.patches.Rectangle"),
    ("report/figures.py", "matplotlib.colormaps"),
    ("report/figures.py", "matplotlib.lines.Line2D"),
}


def imports_inside_functions(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted imported name) of every import inside a function (nested ones once)."""
    found: dict[tuple[int, str], None] = {}
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    found.update(((node.lineno, a.name), None) for a in node.names)
                elif isinstance(node, ast.ImportFrom):
                    base = "." * node.level + (f"{node.module}." if node.module else "")
                    found.update(((node.lineno, base + a.name), None) for a in node.names)
    return sorted(found)


def test_imports_inside_functions_only_in_cli_or_allowed() -> None:
    seen: set[tuple[str, str]] = set()
    inside = []
    for path, tree in sources():
        if unit(path) == "cli":
            continue
        rel = path.relative_to(SRC).as_posix()
        for line, name in imports_inside_functions(tree):
            seen.add((rel, name))
            if (rel, name) not in INSIDE_ALLOWED:
                inside.append(f"{rel}:{line} imports {name} inside a function")
    assert not inside, (
        "move these imports to the top of their module (or, for an optional dependency, add the pair to "
        "INSIDE_ALLOWED with its reason):\n" + "\n".join(inside)
    )
    assert not INSIDE_ALLOWED - seen, f"INSIDE_ALLOWED lists imports that are gone: {sorted(INSIDE_ALLOWED - seen)}"
