"""An offline sample set: the real colour photographs bundled inside scikit-image.

Only files shipped in scikit-image's wheel are used (never its ``pooch`` downloads), so the demo and the tests
run without a network. Names are the file stems (``ihc`` is ``skimage.data.immunohistochemistry()``,
``motorcycle_left`` the left view of ``skimage.data.stereo_motorcycle()``).

Fixed split, chosen so validation has a face-and-texture portrait and a fur close-up, the two classic
SR stress cases, while training keeps the widest variety of content:

- val:   astronaut (512x512), chelsea (451x300)
- train: coffee, hubble_deep_field, ihc, motorcycle_left, retina, rocket
"""

from __future__ import annotations

from pathlib import Path

import torch

from srkd.data.images import read_image, write_image
from srkd.errors import DataError

SPLITS: dict[str, tuple[str, ...]] = {
    "train": (
        "coffee.png",
        "hubble_deep_field.jpg",
        "ihc.png",
        "motorcycle_left.png",
        "retina.jpg",
        "rocket.jpg",
    ),
    "val": ("astronaut.png", "chelsea.png"),
}
# Names accepted by --data for the two splits.
SPLIT_NAMES = {"samples-train": "train", "samples-val": "val"}


def _data_dir() -> Path:
    """scikit-image's data folder; scikit-image is the optional ``demo`` extra, not a core dependency (it is only
    ever used for these photos), so its absence is one line saying what to install."""
    try:
        import skimage.data  # inside: optional dependency (the demo extra), only for these photos
    except ImportError:
        raise DataError("the sample photos (samples-train, samples-val, srkd demo) come with scikit-image, which "
                        "is not installed: pip install 'srkd[demo]' (or scikit-image)") from None
    return Path(skimage.data.__file__).parent


def _files(split: str) -> tuple[str, ...]:
    if split == "all":
        return SPLITS["train"] + SPLITS["val"]
    try:
        return SPLITS[split]
    except KeyError:
        raise DataError(f"unknown sample split '{split}' (use train, val or all)") from None


def sample_paths(split: str) -> list[Path]:
    """The bundled files of ``split`` (``train``, ``val`` or ``all``), sorted by name."""
    folder = _data_dir()
    paths = sorted((folder / f for f in _files(split)), key=lambda p: p.stem)
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{folder}: scikit-image is missing its bundled {', '.join(missing)} (reinstall it)")
    return paths


def sample_images(split: str) -> list[tuple[str, torch.Tensor]]:
    """``[(name, uint8 (3, H, W))]`` for ``split``, decoded from scikit-image's bundled files."""
    return [(p.stem, read_image(p)) for p in sample_paths(split)]


def export_samples(folder: Path, split: str) -> list[Path]:
    """Write ``split`` as ``<folder>/<name>.png`` (lossless), e.g. to evaluate on it as an HR folder."""
    folder = Path(folder)
    written = []
    for name, img in sample_images(split):
        path = folder / f"{name}.png"
        write_image(path, img)
        written.append(path)
    return written
