"""Reading and writing images, with one clear error for every kind of bad file.

Images live in memory as ``torch.uint8`` tensors of shape ``(C, H, W)``, RGB channel order. Conversions to float
happen at the last moment (``to_float``) so caches stay 4x smaller than float32 ones.

Policy for unusual files (each case is tested):
- grayscale (``L``, ``1``): replicated to 3 channels in ``"rgb"`` mode, as OpenCV's IMREAD_COLOR (and hence
  BasicSR's test pipeline) does; kept as 1 channel in ``"unchanged"`` mode;
- palette (``P``) and ``CMYK``: converted to RGB;
- alpha (``RGBA``, ``LA``, palette with transparency): the alpha channel is dropped, colours kept (IMREAD_COLOR
  does the same); a warning is emitted once per file when the alpha is not fully opaque;
- 16-bit or float images (``I;16``, ``I``, ``F``, and 16-bit-per-channel colour files, which Pillow would
  otherwise decode to 8 bits by keeping the high byte): rejected, because rescaling them to 8 bits silently
  would change PSNR; convert them explicitly first;
- truncated or corrupt files, non-images, missing files: :class:`~srkd.errors.DataError` naming the file;
- EXIF orientation (a phone photo stored sideways with a "rotate 90" tag) is applied, so the image reads the way
  viewers show it, as OpenCV's ``imread`` (and hence BasicSR) does; an unreadable EXIF block is ignored.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from srkd.errors import DataError
from srkd.io import replacing

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# Refuse absurd images (decompression bombs) with a clear message rather than PIL's warning/exception.
MAX_PIXELS = 300_000_000
Image.MAX_IMAGE_PIXELS = None


def check_output_pixels(height: int, width: int, what: Any) -> None:
    """Refuse, before its buffer is allocated, an output larger than the largest image srkd reads: a small file
    of a large image times a scale (a 281 KB PNG x4 asked for a 13.9 GB buffer) is one line, not an OOM kill."""
    if height * width > MAX_PIXELS:
        raise DataError(f"{what}: the output would be {width}x{height} pixels, more than srkd's limit of "
                        f"{MAX_PIXELS}; use a smaller scale or crop the input")


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name; a clear error for a missing or empty folder."""
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
    if not files:
        raise DataError(f"{folder}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files


def read_image(path: str | Path, mode: str = "rgb") -> torch.Tensor:
    """Decode ``path`` to a ``uint8`` tensor ``(C, H, W)``.

    ``mode="rgb"`` always returns 3 channels; ``mode="unchanged"`` keeps grayscale images at 1 channel.
    """
    if mode not in ("rgb", "unchanged"):
        raise ValueError(f"mode must be 'rgb' or 'unchanged', not {mode!r}")
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected an image file")
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise DataError(f"{path}: {img.width}x{img.height} is too large (limit {MAX_PIXELS} pixels)")
            if _sixteen_bit_colour(img):
                raise DataError(
                    f"{path}: 16-bit-per-channel colour images are not supported (Pillow would keep only the high "
                    "byte of each sample); convert to 8-bit first, e.g. with OpenCV: "
                    "cv2.imwrite(out, (cv2.imread(path, cv2.IMREAD_UNCHANGED) / 257).round().astype('uint8'))"
                )
            img.load()
            array = _to_array(_upright(img), path, mode)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (unknown or corrupt format)") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated data, bad chunks, CRC errors...
        raise DataError(f"{path}: corrupt or truncated image ({exc})") from None
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _upright(img: Image.Image) -> Image.Image:
    """``img`` turned the way its EXIF orientation tag says (values 2-8); damaged EXIF leaves it as stored."""
    try:
        orientation = img.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - a damaged EXIF block: Pillow raises anything from SyntaxError to struct.error
        return img
    if orientation not in (2, 3, 4, 5, 6, 7, 8):
        return img
    return ImageOps.exif_transpose(img)


def _sixteen_bit_colour(img: Image.Image) -> bool:
    """Whether Pillow is about to decode 16-bit colour samples into 8-bit ``RGB``/``RGBA`` (raw modes such as
    ``RGB;16B`` of a 16-bit PNG or TIFF): read from the decoder tiles, before ``load()`` discards them."""
    if img.mode not in ("RGB", "RGBA"):
        return False
    for tile in getattr(img, "tile", None) or ():
        rawmode = tile[3] if len(tile) > 3 else None
        if isinstance(rawmode, tuple):
            rawmode = rawmode[0] if rawmode else None
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True
    return False


def _to_array(img: Image.Image, path: Path, mode: str) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        raise DataError(
            f"{path}: {img.mode} ({'16-bit' if img.mode.startswith('I;16') else '32-bit'}) images are not "
            "supported; convert to 8-bit PNG first (e.g. with PIL: img.point(lambda v: v / 257).convert('L'))"
        )
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = np.asarray(img.getchannel("A"))
        if alpha.min() < 255:
            warnings.warn(f"{path}: alpha channel dropped (image has transparency)", stacklevel=3)
        img = img.convert("RGB" if img.mode.startswith("RGB") or img.mode == "PA" else "L")
    if img.mode == "1":
        img = img.convert("L")
    if img.mode not in ("RGB", "L"):
        try:
            img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: unsupported image mode {img.mode} ({exc})") from None
    array = np.array(img, dtype=np.uint8)  # a writable copy: torch.from_numpy must own mutable memory
    if mode == "rgb" and array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return array


def to_float(img: torch.Tensor) -> torch.Tensor:
    """``uint8`` [0, 255] -> ``float32`` [0, 1]."""
    return img.to(torch.float32).div_(255.0)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Float [0, 1] -> ``uint8``, rounding half away from zero as MATLAB's ``im2uint8`` (not torch's half-to-even)."""
    return x.mul(255.0).add_(0.5).floor_().clamp_(0, 255).to(torch.uint8)


def write_image(path: str | Path, img: torch.Tensor) -> None:
    """Write a ``(C, H, W)`` uint8 tensor (or float in [0, 1], quantised) atomically; format from the suffix."""
    path = Path(path)
    if img.is_floating_point():
        img = quantize(img)
    array = img.detach().cpu().numpy()
    array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown image format '{path.suffix}' (use .png, .jpg, .bmp, .tif or .webp)")
    try:
        with replacing(path) as tmp, open(tmp, "wb") as fh:
            Image.fromarray(array).save(fh, format=fmt)
    except OSError as exc:
        raise DataError(f"{path}: cannot write image ({exc.strerror or exc})") from None
