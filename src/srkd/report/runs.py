"""Reading run directories and evaluating their weights once.

A run directory is what :func:`srkd.engine.train` leaves: ``config.yaml`` (resolved), ``log.jsonl``,
``last.safetensors`` / ``best.safetensors`` and, for data-free runs, ``samples/*.png``. The config is read as
plain YAML rather than validated, so a report still works on runs made by an older srkd.

Benchmark results are cached in ``results.json`` next to the weights, keyed by the weights' size and mtime: a
report or ``srkd reproduce`` evaluates each (scale, set) of each checkpoint once, and re-evaluates by itself when
the weights change (a run that trained further). The file also keeps per-image PSNR/SSIM, which picks the image
of the visual comparison.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from srkd import evaluation  # by module, so that a test can replace evaluation.evaluate_model
from srkd.checkpoint.io import load_model, read_metadata
from srkd.data.benchmark import resolve_dataset
from srkd.device import resolve_device
from srkd.engine.config import resolved_config
from srkd.errors import DataError, SrkdError
from srkd.io import write_json
from srkd.models import get_class

RESULTS_FILE = "results.json"
WEIGHTS = "last.safetensors"

METHOD_LABELS = {
    "scratch": "Scratch",
    "kd": "KD",
    "fakd": "FAKD",
    "csd": "CSD",
    "dukd": "DUKD",
    "datafree": "Data-free",
}
Results = dict[int, dict[str, dict[str, Any]]]  # scale -> set name -> {"psnr_y", "ssim_y", "n", "images"}


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    label: str = ""

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.path.name)

    @property
    def method_config(self) -> dict[str, Any]:
        m = self.config.get("method") or {}
        return {"name": m} if isinstance(m, str) else dict(m)

    @property
    def method(self) -> str:
        return str(self.method_config.get("name", "?"))

    @property
    def scale(self) -> int:
        return int(self.config.get("scale", 0))

    @property
    def student(self) -> tuple[str, dict[str, Any]]:
        s = self.config.get("student") or {}
        return str(s.get("arch", "?")).lower(), dict(s.get("kwargs") or {})

    @property
    def teacher_checkpoint(self) -> Path | None:
        t = self.config.get("teacher") or {}
        return Path(t["checkpoint"]) if t.get("checkpoint") else None

    @property
    def iterations(self) -> int:
        return int((self.config.get("train") or {}).get("iterations", 0))

    @property
    def log_path(self) -> Path | None:
        p = self.path / "log.jsonl"
        return p if p.is_file() else None

    @property
    def weights(self) -> Path | None:
        p = self.path / WEIGHTS
        return p if p.is_file() else None

    @cached_property
    def weights_meta(self) -> dict[str, Any]:
        if self.weights is None:
            return {}
        try:
            return read_metadata(self.weights)
        except SrkdError:
            return {}

    @property
    def trained_iterations(self) -> int:
        return int(self.weights_meta.get("iteration", 0) or 0)

    @property
    def finished(self) -> bool:
        return self.weights is not None and self.iterations > 0 and self.trained_iterations >= self.iterations

    @property
    def eval_scales(self) -> list[int]:
        """A pre-upsampling student distilled on several scales (DFSR's VDSR) is measured at each of them."""
        scales = self.method_config.get("scales")
        if scales and self.student[0] == "vdsr":
            return sorted({int(s) for s in scales})
        return [self.scale]

    @property
    def samples(self) -> list[Path]:
        """Synthetic-sample grids a data-free run saved (DFSR Fig. 3), oldest first."""
        return sorted((self.path / "samples").glob("*.png"))


def load_run(path: str | Path, label: str = "") -> Run:
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a run folder (no such folder)")
    cfg_file = path / "config.yaml"
    if not cfg_file.is_file():
        raise DataError(f"{path}: not a run folder (no config.yaml; `srkd train` writes one in every run folder)")
    try:
        config = yaml.safe_load(cfg_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{cfg_file}: cannot read ({exc})") from None
    if not isinstance(config, dict):
        raise DataError(f"{cfg_file}: not a mapping")
    return Run(path, resolved_config(config), label)  # runs from before a setting existed group with today's


def default_label(run: Run) -> str:
    m = run.method_config
    if run.method == "datafree" and m.get("inputs") == "noise":
        return "Noise"
    return METHOD_LABELS.get(run.method, run.method)


def assign_labels(runs: Sequence[Run]) -> None:
    """Give every run a distinct label: its own, else its method's name, with the run's name where two clash."""
    base = [r.label or default_label(r) for r in runs]
    for r, b in zip(runs, base):
        r.label = b if base.count(b) == 1 or r.label else f"{b} ({r.name})"
    seen: dict[str, int] = {}
    for r in runs:  # two runs with the same name (e.g. the same config under two out folders)
        seen[r.label] = seen.get(r.label, 0) + 1
        if seen[r.label] > 1:
            r.label = f"{r.label} [{r.path.name}]"


# -- evaluation, cached ----------------------------------------------------------------------------------
def resolve_sets(specs: Sequence[str], data_root: str | None = None) -> list[Any]:
    """Benchmark sets (:class:`srkd.data.benchmark.BenchmarkSet`) for ``--data`` values; fails on the first bad one."""
    out = []
    for spec in specs:
        bset = resolve_dataset(spec, data_root)
        if not bset.hr_paths:
            raise DataError(f"{spec}: no images")
        out.append(bset)
    return out


def load_for_scale(path: str | Path, scale: int) -> Any:
    """The network of an srkd checkpoint, set up to super-resolve by ``scale``.

    A pre-upsampling network (VDSR) serves every scale, even one its file does not list: a data-free student
    distilled on x2/x3/x4 is saved with the run's validation scale only.
    """
    meta = read_metadata(path)
    if int(scale) not in meta["scales"] and getattr(get_class(meta["arch"]), "upsample_input", False):
        model, _ = load_model(path)
        model.scale = int(scale)  # type: ignore[assignment]  # torch types module attributes as Tensor | Module
        return model
    return load_model(path, scale=scale)[0]


def _stamp(model: str | Path) -> dict[str, Any] | None:
    if str(model).lower() == "bicubic":
        return None
    st = Path(model).stat()
    return {"file": Path(model).name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_results(cache_file: str | Path, model: str | Path) -> Results:
    """Cached results of ``model`` (a checkpoint or "bicubic"), or {} when absent or made from other weights."""
    try:
        data = json.loads(Path(cache_file).read_text(encoding="utf-8"))
        if data.get("stamp") != _stamp(model):
            return {}
        return {int(s): dict(v) for s, v in data.get("results", {}).items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def missing(results: Results, set_names: Sequence[str], scales: Sequence[int]) -> list[tuple[int, str]]:
    return [(s, n) for s in scales for n in set_names if n not in results.get(int(s), {})]


def evaluate_cached(
    model: str | Path,
    cache_file: str | Path,
    sets: Sequence[Any],
    scales: Sequence[int],
    *,
    device: str = "cpu",
    data_root: str | None = None,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> Results:
    """PSNR/SSIM of ``model`` on every (scale, set), computing only what ``cache_file`` does not hold yet.

    Returns ``{scale: {set name: {"psnr_y", "ssim_y", "n", "images"}}}`` for the requested pairs. The cache is
    rewritten atomically; a read-only folder only costs the caching (a warning), never the report.
    """
    results = read_results(cache_file, model)
    names = [b.name for b in sets]
    todo = missing(results, names, scales)
    for scale in sorted({s for s, _ in todo}):
        wanted = [b for b in sets if (scale, b.name) in todo]
        net = "bicubic" if str(model).lower() == "bicubic" else load_for_scale(model, scale)
        got = evaluation.evaluate_model(net, wanted, scale, device=resolve_device(device), data_root=data_root, progress=progress)
        for b, (_key, r) in zip(wanted, got.items()):
            results.setdefault(int(scale), {})[b.name] = r
    if todo:
        payload = {
            "model": str(model),
            "stamp": _stamp(model),
            **(extra or {}),
            "results": {str(s): v for s, v in sorted(results.items())},
        }
        try:
            write_json(cache_file, payload)
        except SrkdError as exc:
            warnings.warn(f"results not cached: {exc}", stacklevel=2)
    return {int(s): {n: results[int(s)][n] for n in names if n in results.get(int(s), {})} for s in scales}


__all__ = [
    "METHOD_LABELS",
    "RESULTS_FILE",
    "Results",
    "Run",
    "assign_labels",
    "default_label",
    "evaluate_cached",
    "load_for_scale",
    "load_run",
    "missing",
    "read_results",
    "resolve_sets",
]
