"""The teacher zoo: published SR checkpoints srkd knows by name, and the ``zoo:NAME`` spelling that finds them.

Users arrive with published models more often than with srkd's own. The catalogue (``zoo.yaml`` beside this
module, data rather than code) pins each file by repository, commit and sha256, so ``srkd teachers download
NAME`` fetches exactly the bytes whose Set5 PSNR srkd measured, and nothing else (see
:mod:`srkd.checkpoint.fetch`). A converted model is cached as ``<data root>/zoo/<name>.safetensors``; every
place that takes a checkpoint path (configs' ``teacher.checkpoint``, ``srkd eval --model``, ``info``,
``upscale``) also takes ``zoo:NAME``, resolved here. Nothing is downloaded implicitly: a name that is not cached
yet is one line saying which command fetches it.
"""

from __future__ import annotations

import difflib
import functools
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from srkd.data.registry import data_root
from srkd.errors import CheckpointError

PREFIX = "zoo:"
RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    arch: str
    scales: tuple[int, ...]
    repo: str
    commit: str
    path: str
    sha256: str
    licence: str
    params: int
    kwargs: dict[str, Any] = field(default_factory=dict)  # constructor arguments (what `srkd convert` infers)
    set5_srkd: dict[int, float] = field(default_factory=dict)  # measured with srkd eval (srkd-made LR)
    set5_paper: dict[int, float | None] = field(default_factory=dict)  # the authors' figure, None if unknown
    notes: str = ""

    @property
    def url(self) -> str:
        return RAW_URL.format(repo=self.repo, commit=self.commit, path=self.path)

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def _entry(raw: dict[str, Any]) -> ZooEntry:
    source, psnr = raw["source"], raw.get("set5_psnr", {})
    return ZooEntry(
        name=str(raw["name"]),
        arch=str(raw["arch"]),
        scales=tuple(int(s) for s in raw["scales"]),
        repo=str(source["repo"]),
        commit=str(source["commit"]),
        path=str(source["path"]),
        sha256=str(raw["sha256"]).lower(),
        licence=str(raw["licence"]),
        params=int(raw["params"]),
        kwargs=dict(raw.get("kwargs") or {}),
        set5_srkd={int(k): float(v) for k, v in (psnr.get("srkd") or {}).items()},
        set5_paper={int(k): (None if v is None else float(v)) for k, v in (psnr.get("paper") or {}).items()},
        notes=str(raw.get("notes", "")),
    )


@functools.cache
def catalog() -> dict[str, ZooEntry]:
    """Every zoo model by name, in the catalogue's order."""
    text = resources.files("srkd.checkpoint").joinpath("zoo.yaml").read_text(encoding="utf-8")
    return {e.name: e for e in map(_entry, yaml.safe_load(text)["models"])}


def get(name: str) -> ZooEntry:
    """The catalogue entry ``name`` (``zoo:`` prefix allowed); an unknown name lists the close ones."""
    name = name.removeprefix(PREFIX).strip().lower()
    models = catalog()
    if name in models:
        return models[name]
    close = difflib.get_close_matches(name, models, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise CheckpointError(f"unknown zoo model '{name[:80]}' ({hint}`srkd teachers list` shows all {len(models)})")


def cache_dir(root: str | os.PathLike[str] | None = None) -> Path:
    return data_root(root) / "zoo"


def cached_path(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    return cache_dir(root) / f"{get(name).name}.safetensors"


def is_zoo_spec(spec: object) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def resolve(spec: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Path:
    """``zoo:NAME`` -> its cached srkd checkpoint (which must have been downloaded); any other spec -> a Path."""
    if not is_zoo_spec(spec):
        return Path(spec)
    entry = get(str(spec))
    path = cached_path(entry.name, root)
    if not path.is_file():
        raise CheckpointError(
            f"zoo:{entry.name} is not downloaded yet (looked in {path.parent}): "
            f"run `srkd teachers download {entry.name}`"
        )
    return path


__all__ = ["PREFIX", "ZooEntry", "cache_dir", "cached_path", "catalog", "get", "is_zoo_spec", "resolve"]
