"""The datasets srkd knows by name: where they come from, how to check them and where they live on disk.

Every entry names a public https source. Checksums are only ever ones published by someone else or computed
from the very files the entry points to; where none is known the field is ``None`` *with a comment saying so*,
and ``srkd data download`` then prints the sha256 it computed and refuses to use the file unless the user
passes ``--allow-unverified``. Nothing here is fetched implicitly: training and evaluation only read what
``srkd data download`` installed.

Installed layout (EDSR style, so a registered set and a folder given with ``--data`` look the same)::

    <data root>/<Name>/HR/*.png                  high-resolution images
    <data root>/<Name>/LR_bicubic/X{s}/*x{s}.png  MATLAB-made LR, only where the source ships it
    <data root>/<Name>/.srkd.json                 what was installed, from where, and each file's sha256

The data root is ``--data-root``, else ``$SRKD_DATA``, else ``~/.cache/srkd``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from srkd.data.checksums import file_sha256
from srkd.data.images import is_image_file
from srkd.errors import DataError
from srkd.io import atomic_write_text

MARKER = ".srkd.json"
HR_DIR = "HR"
LR_DIR = "LR_bicubic"

ArchiveFormat = Literal["zip", "tar", "tar.gz", "tar.bz2", "tar.xz", "files"]


@dataclass(frozen=True)
class DatasetInfo:
    """One downloadable dataset.

    ``archive == "files"`` means ``url`` is a base URL and the files listed in :mod:`srkd.data.checksums`
    are fetched one by one below it (each verified by its own sha256). Otherwise ``url`` is one archive whose
    ``hr_subdir`` (and optional ``lr_subdir``, holding ``X2``/``X3``/``X4`` with EDSR naming) are installed.
    """

    name: str
    kind: Literal["benchmark", "train"]
    n_images: int
    url: str | None
    archive: ArchiveFormat | None
    sha256: str | None
    hr_subdir: str
    lr_subdir: str | None = None
    md5: str | None = None
    size_bytes: int | None = None
    source: str = ""
    licence: str = ""
    manual: str = ""  # instructions when there is no public URL (``url is None``)


_SWINIR = "https://raw.githubusercontent.com/JingyunLiang/SwinIR/6545850fbf8df298df73d81f3e8cba638787c8bd"
_DENOISING = (
    "https://raw.githubusercontent.com/majedelhelou/denoising_datasets/58234876fef6f1b56306705c78dfd40cdb837b86"
)
_VDSR_PT = "https://raw.githubusercontent.com/Nhat-Thanh/VDSR-Pytorch/162356ca1dc09f6697db6342a53457876c78129e"
_FSRCNN_PT = "https://raw.githubusercontent.com/Nhat-Thanh/FSRCNN-Pytorch/9d7e83739a5cfdea67da084091bc78c3bcbddce1"
_EDSR_BENCHMARK = "https://cv.snu.ac.kr/research/EDSR/benchmark.tar"
_ACADEMIC = "academic research use; copyright of the images stays with their owners"

DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        # --- benchmarks --------------------------------------------------------------------------------
        DatasetInfo(
            "Set5", "benchmark", 5, f"{_SWINIR}/testsets/Set5/", "files", None,  # per-file sha256 instead
            hr_subdir="HR", lr_subdir="LR_bicubic", size_bytes=1_299_591,
            source="SwinIR testsets (EDSR benchmark copy): HR + MATLAB-made LR_bicubic X2/X3/X4",
            licence=_ACADEMIC,
        ),
        DatasetInfo(
            "Set14", "benchmark", 14, f"{_DENOISING}/CSet14/", "files", None,  # per-file sha256 instead
            hr_subdir="", size_bytes=4_983_382,
            source="majedelhelou/denoising_datasets CSet14 (original uncropped sizes; bridge.png is grayscale)",
            licence=_ACADEMIC,
        ),
        DatasetInfo(
            "B100", "benchmark", 100,
            "https://huggingface.co/datasets/eugenesiow/BSD100/resolve/main/data/BSD100_HR.tar.gz", "tar.gz",
            # sha256 as published by the Hugging Face Hub for this LFS object (its "Git LFS Details").
            "333495ccded04a0db52b33361140821ea7e0d8af8dfb54b58df79a00010858d6",
            hr_subdir="BSD100_HR", size_bytes=27_200_000,
            source="eugenesiow/BSD100 on the Hugging Face Hub (BSDS300 test split)", licence=_ACADEMIC,
        ),
        DatasetInfo(
            "Urban100", "benchmark", 100, _EDSR_BENCHMARK, "tar",
            None,  # no published sha256 for benchmark.tar; its md5 below is the one torchSR pins.
            hr_subdir="benchmark/Urban100/HR", lr_subdir="benchmark/Urban100/LR_bicubic",
            md5="4ace41d33c2384b97e6b320cd0afd6ba",
            source="EDSR benchmark.tar (Set5/Set14/B100/Urban100 with MATLAB-made LR); only Urban100 is installed",
            licence=_ACADEMIC,
        ),
        DatasetInfo(
            "Manga109", "benchmark", 109, None, None,
            None,  # no public mirror with a stable, published checksum is known
            hr_subdir="HR", source="manga109.org (on request)",
            licence="Manga109 licence: academic use, no redistribution",
            manual=(
                "Manga109 is distributed by its authors on request (http://www.manga109.org/en/download.html); "
                "put its 109 HR images in {root}/Manga109/HR, or pass their folder to --data"
            ),
        ),
        # --- training sets -----------------------------------------------------------------------------
        DatasetInfo(
            "DIV2K", "train", 800, "https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip", "zip",
            None,  # the DIV2K site publishes no sha256; the md5 is the one torchSR pins.
            hr_subdir="DIV2K_train_HR", md5="bdc2d9338d4e574fe81bf7d158758658",
            source="DIV2K train HR 0001-0800 (NTIRE 2017)", licence=_ACADEMIC,
        ),
        DatasetInfo(
            "DIV2K_valid", "train", 100, "https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip", "zip",
            None,  # no published sha256; md5 pinned by torchSR.
            hr_subdir="DIV2K_valid_HR", md5="9fcdda83005c5e5997799b69f955ff88",
            source="DIV2K validation HR 0801-0900", licence=_ACADEMIC,
        ),
        DatasetInfo(
            "Flickr2K", "train", 2650, "https://cv.snu.ac.kr/research/EDSR/Flickr2K.tar", "tar",
            None,  # no published sha256; md5 pinned by torchSR. The archive also holds LR sets (large).
            hr_subdir="Flickr2K/Flickr2K_HR", md5="5d3f39443d5e9489bff8963f8f26cb03",
            source="Flickr2K from the EDSR authors (HR only is installed)",
            licence="Flickr images of mixed licences; research use",
        ),
        DatasetInfo(
            "T91", "train", 91, f"{_VDSR_PT}/dataset/train/", "files", None,  # per-file sha256 instead
            hr_subdir="", size_bytes=9_669_753,
            source="Yang et al. 91 images (Nhat-Thanh/VDSR-Pytorch copy)", licence=_ACADEMIC,
        ),
        DatasetInfo(
            "BSD200", "train", 200, f"{_VDSR_PT}/dataset/train/", "files", None,  # per-file sha256 instead
            hr_subdir="", size_bytes=51_895_164,
            source="BSDS300 train split (Nhat-Thanh/VDSR-Pytorch copy); T91 + BSD200 = the VDSR '291' set",
            licence=_ACADEMIC,
        ),
        DatasetInfo(
            "General100", "train", 100, f"{_FSRCNN_PT}/dataset/train/", "files", None,  # per-file sha256
            hr_subdir="", size_bytes=28_957_955,
            source="FSRCNN General-100 (Nhat-Thanh/FSRCNN-Pytorch copy)", licence=_ACADEMIC,
        ),
    ]
}

ALIASES = {"bsd100": "B100", "bsds100": "B100", "div2k_train": "DIV2K", "div2k-valid": "DIV2K_valid",
           "div2k_val": "DIV2K_valid", "bsds200": "BSD200", "manga": "Manga109", "urban": "Urban100"}


def data_root(override: str | os.PathLike[str] | None = None) -> Path:
    """``override`` (``--data-root``), else ``$SRKD_DATA``, else ``~/.cache/srkd``."""
    root = override or os.environ.get("SRKD_DATA") or "~/.cache/srkd"
    return Path(root).expanduser()


def lookup(name: str) -> DatasetInfo | None:
    """Case-insensitive registry lookup (with a few common aliases); ``None`` when unknown."""
    key = name.strip().lower()
    for info in DATASETS.values():
        if info.name.lower() == key:
            return info
    alias = ALIASES.get(key)
    return DATASETS[alias] if alias else None


def get(name: str) -> DatasetInfo:
    info = lookup(name)
    if info is None:
        raise DataError(f"unknown dataset '{name}' (known: {', '.join(DATASETS)})")
    return info


def dataset_dir(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    return data_root(root) / get(name).name


def hr_dir(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    return dataset_dir(name, root) / HR_DIR


RECORDED = "recorded-sha256.json"  # under <data root>/downloads: sha256 of archives whose source publishes md5


def recorded_sha256(info: DatasetInfo, root: Path) -> str | None:
    """The sha256 srkd recorded for ``info``'s archive at its first md5-verified download (None if none yet)."""
    try:
        entry = json.loads((root / "downloads" / RECORDED).read_text()).get(info.url or "", {})
    except (OSError, ValueError, AttributeError):
        return None
    digest = entry.get("sha256") if isinstance(entry, dict) and entry.get("md5") == info.md5 else None
    return digest if isinstance(digest, str) and len(digest) == 64 else None


def record_sha256(info: DatasetInfo, root: Path, sha256: str) -> None:
    """Remember the sha256 of an archive that matched its published md5, so later downloads check sha256."""
    path = root / "downloads" / RECORDED
    try:
        table = json.loads(path.read_text())
        table = table if isinstance(table, dict) else {}
    except (OSError, ValueError):
        table = {}
    table[info.url or info.name] = {"name": info.name, "md5": info.md5, "sha256": sha256}
    try:
        atomic_write_text(path, json.dumps(table, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass  # the install itself succeeded; the next download is then held to md5 again


def checksum_kind(info: DatasetInfo, root: str | os.PathLike[str] | None = None) -> str:
    """What a download of ``info`` is verified by, for ``srkd data list``."""
    if file_sha256(info.name):
        return "sha256 per file (shipped)"
    if info.sha256:
        return "sha256 (published)"
    if info.md5:
        if recorded_sha256(info, data_root(root)):
            return "md5 (published) + sha256 (recorded)"
        return "md5 (published); sha256 recorded at first download"
    return "-"


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The install record of a dataset folder, or ``None`` (not installed by srkd, or unreadable)."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return marker if isinstance(marker, dict) else None


def is_present(name: str, root: str | os.PathLike[str] | None = None) -> bool:
    """True when the HR folder holds images (installed by srkd or placed there by hand)."""
    folder = hr_dir(name, root)
    try:
        return folder.is_dir() and any(is_image_file(p) for p in folder.iterdir())
    except OSError:
        return False


def status(name: str, root: str | os.PathLike[str] | None = None) -> tuple[bool, str]:
    """(present, how it was verified) for ``srkd data list``."""
    if not is_present(name, root):
        return False, "-"
    marker = read_marker(dataset_dir(name, root))
    if marker is None:
        return True, "no (not installed by srkd)"
    return True, str(marker.get("verified_by", "unknown"))
