"""What ``--data`` means: a registered dataset name, a folder of HR images, or an EDSR-style paired folder.

Resolution order for a spec:

1. an existing folder
   - with images directly inside: HR-only (LR made by :func:`srkd.data.degrade.make_lr`); the set is named after
     the folder, or after its parent when the folder is called ``HR``/``GT``/``HR_x4``/``GTmod12``/``Set5_HR``...
     (so ``…/Set5/HR`` is keyed ``Set5``);
   - with an ``HR/`` sub-folder: paired; ``LR_bicubic/X{s}/<name>x{s}.png`` beside it is used as given for
     every scale it has;
2. ``samples-train`` / ``samples-val``: the bundled scikit-image photos (:mod:`srkd.data.samples`);
3. a registry name (``Set5``, ``Urban100``...): looked up under the data root. Nothing is downloaded unless
   ``download=True`` (``srkd data download NAME`` does it explicitly), so an offline run gets one clear line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from srkd.data import registry, samples
from srkd.data.download import install
from srkd.data.images import is_image_file, list_images
from srkd.errors import DataError

# Folder names that describe a role rather than a data set: the set's name is then the parent folder's.
_GENERIC = re.compile(r"^(hr|gt|ground[_-]?truth|original|images?|imgs?)([_-]?(x\d+|mod\d+|sub))*$", re.I)
_HR_SUFFIX = re.compile(r"[_-](hr|gt)$", re.I)


@dataclass
class BenchmarkSet:
    """A named list of HR images and, for paired sets, the ``LR_bicubic`` folder holding ``X{s}`` sub-folders."""

    name: str
    hr_paths: list[Path]
    lr_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.hr_paths)


def set_name(folder: Path) -> str:
    """``…/Set5/HR`` -> ``Set5``; ``…/Set5_HR`` -> ``Set5``; ``…/myset`` -> ``myset``."""
    folder = Path(os.path.abspath(folder))
    if _GENERIC.match(folder.name) and folder.parent.name:
        return folder.parent.name
    stripped = _HR_SUFFIX.sub("", folder.name)
    return stripped or folder.name


def _has_images(folder: Path) -> bool:
    try:
        return any(p.is_file() and is_image_file(p) for p in folder.iterdir())
    except OSError:
        return False


def _from_folder(folder: Path) -> BenchmarkSet:
    if (folder / registry.HR_DIR).is_dir() and not _has_images(folder):
        lr_dir = folder / registry.LR_DIR
        return BenchmarkSet(
            folder.name or set_name(folder), list_images(folder / registry.HR_DIR),
            lr_dir if lr_dir.is_dir() else None,
        )
    return BenchmarkSet(set_name(folder), list_images(folder), None)


def resolve_dataset(
    spec: str | os.PathLike[str], data_root: str | os.PathLike[str] | None = None, download: bool = False
) -> BenchmarkSet:
    """Turn a ``--data`` value into a :class:`BenchmarkSet` (see the module docstring for the rules)."""
    text = os.fspath(spec).strip()
    if not text:
        raise DataError("empty dataset name")
    path = Path(text).expanduser()
    if path.is_dir():
        return _from_folder(path)
    if path.exists():
        raise DataError(f"{path}: is a file; --data takes a folder of HR images or a dataset name")

    if text.lower() in samples.SPLIT_NAMES:
        split = samples.SPLIT_NAMES[text.lower()]
        return BenchmarkSet(text.lower(), samples.sample_paths(split), None)

    info = registry.lookup(text)
    if info is None:
        looks_like_path = os.sep in text or "/" in text or text.startswith(".") or text.startswith("~")
        if looks_like_path:
            raise DataError(f"{path}: no such folder")
        raise DataError(
            f"unknown dataset '{text}': not a folder and not a registered dataset "
            f"(known: {', '.join(registry.DATASETS)}, {', '.join(samples.SPLIT_NAMES)})"
        )
    root = registry.data_root(data_root)
    if not registry.is_present(info.name, data_root):
        if not download:
            hint = info.manual.format(root=root) if info.url is None else f"run `srkd data download {info.name}`"
            raise DataError(f"dataset '{info.name}' is not in {root}: {hint} (or pass a folder of HR images)")
        install(info.name, data_root)
    folder = root / info.name
    lr_dir = folder / registry.LR_DIR
    return BenchmarkSet(info.name, list_images(folder / registry.HR_DIR), lr_dir if lr_dir.is_dir() else None)


def data_key(spec: str) -> str:
    """The registered set a ``data.train`` entry names, for comparing configs; other specs as written.

    Recipes used to name their data by folder (``../shared/data/train/T91``) and now by registry name (``T91``);
    a run folder written by the old recipe is still a run of the new one, so both spellings compare equal here. A
    folder counts as a registered set when its set name (``…/Set5/HR`` -> ``Set5``) is that set's name.
    """
    text = str(spec).strip()
    looks_like_path = "/" in text or os.sep in text
    info = registry.lookup(set_name(Path(text)) if looks_like_path else text)
    return info.name if info is not None else text


def with_data_keys(config: object) -> object:
    """A resolved config (JSON-like dict) with its dataset lists (``data.train``, ``method.images``) mapped
    through :func:`data_key`; anything else is returned unchanged."""
    if not isinstance(config, dict):
        return config
    out = dict(config)
    for section, key in (("data", "train"), ("method", "images")):
        part = out.get(section)
        if isinstance(part, dict) and isinstance(part.get(key), list):
            out[section] = {**part, key: [data_key(s) if isinstance(s, str) else s for s in part[key]]}
    return out
