"""Convert official SR checkpoints to srkd's self-describing safetensors format.

Conversion = read the file into a flat ``{name: tensor}`` dict (torch pickles only through the restricted
unpickler of :mod:`srkd.checkpoint.unpickle`), recognise the layout from its key names, infer the architecture's
keyword arguments from tensor shapes (``--arch/--scale/--set`` pin or override them), rename the keys to srkd's,
and load them strictly into a freshly built model, so a mismatch is an error, never a silently half-loaded
network. What each layout looks like lives beside its architecture (``LAYOUTS`` in ``srkd/models/*_arch.py``,
records of :class:`srkd.models.layout.Layout`); this module only reads files and tries those records.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import yaml
from safetensors.torch import load_file

from srkd.checkpoint.io import check_model_fits_file, load_state_dict_strict, require_file, save_model
from srkd.checkpoint.unpickle import InertObject, module_state_dict, read_torch_pickle
from srkd.errors import CheckpointError, SrkdError
from srkd.models import all_layouts, build_model, model_scale
from srkd.models.layout import Layout

# ---------------------------------------------------------------------------------------------------------------
# Reading any supported file into a flat {name: tensor} dict
# ---------------------------------------------------------------------------------------------------------------


def read_matconvnet_vdsr(path: str | Path) -> dict[str, torch.Tensor]:
    """The VDSR authors' MatConvNet release: ``model.weight{i}`` (H, W, in, out) and ``model.bias{i}``.

    MatConvNet's ``vl_nnconv`` is a cross-correlation like ``torch.conv2d``, so the filters only need their axes
    permuted to (out, in, H, W); the last layer's trailing singleton ``out`` axis was squeezed by MATLAB.
    The result uses the pytorch-vdsr key names, so one mapping serves both files.
    """
    import scipy.io  # inside: optional dependency (the matconvnet extra), only for this one file format

    path = require_file(path)
    try:
        mat = scipy.io.loadmat(str(path))
    except NotImplementedError:
        raise CheckpointError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; re-save with -v7") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable MATLAB file ({type(exc).__name__}: {exc})") from None
    model = mat.get("model")
    try:
        weights = [np.asarray(w, dtype=np.float32) for w in model["weight"][0, 0].ravel()]
        biases = [np.asarray(b, dtype=np.float32).ravel() for b in model["bias"][0, 0].ravel()]
    except (TypeError, KeyError, ValueError, IndexError):
        raise CheckpointError(f"{path}: not a MatConvNet VDSR model (expected a struct 'model' with weight/bias)") from None
    if len(weights) < 2 or len(weights) != len(biases):
        raise CheckpointError(f"{path}: not a MatConvNet VDSR model ({len(weights)} weights, {len(biases)} biases)")
    state: dict[str, torch.Tensor] = {}
    n = len(weights)
    for i, (w, b) in enumerate(zip(weights, biases)):
        if w.ndim == 3:
            w = w[..., None]
        if w.ndim != 4 or w.shape[3] != b.size:
            raise CheckpointError(f"{path}: layer {i + 1} has filters {w.shape} and {b.size} biases")
        name = "input" if i == 0 else "output" if i == n - 1 else f"residual_layer.{i - 1}.conv"
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
        state[f"{name}.bias"] = torch.from_numpy(b.copy())
    return state


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(obj: Any, source: Any, key: str | None = None) -> dict[str, torch.Tensor]:
    """The weights inside a loaded checkpoint object, whatever the wrapper.

    Handles BasicSR's ``{"params": ..., "params_ema": ...}`` (EMA weights preferred, as BasicSR's test configs
    do for released models), ``{"state_dict"|"model"|"model_state_dict": ...}``, a whole pickled module, and
    DataParallel's ``module.`` prefix. ``key`` picks the entry explicitly.
    """
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            keys = ", ".join(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
            raise CheckpointError(f"{source}: no entry '{key}' in the checkpoint (it has: {keys})")
        obj = obj[key]
    else:
        for _ in range(3):
            if isinstance(obj, dict) and not _is_tensor_dict(obj):
                for candidate in ("params_ema", "params", "state_dict", "model_state_dict", "model", "net", "generator"):
                    if candidate in obj and obj[candidate] is not None:
                        obj = obj[candidate]
                        break
                else:
                    break
    if isinstance(obj, InertObject):
        try:
            obj = module_state_dict(obj)
        except ValueError as exc:
            raise CheckpointError(f"{source}: {exc}") from None
    if not _is_tensor_dict(obj):
        hint = f" (entries: {', '.join(map(str, obj))[:200]})" if isinstance(obj, dict) else ""
        raise CheckpointError(f"{source}: no weights found in the checkpoint{hint}; pick an entry with --key")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def read_official(path: str | Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """Flat ``{name: tensor}`` of an official checkpoint: MatConvNet ``.mat``, safetensors or a torch pickle."""
    path = require_file(path)
    with open(path, "rb") as fh:
        head = fh.read(128)
    if not head:
        raise CheckpointError(f"{path}: empty file")
    if head.startswith(b"MATLAB"):
        return read_matconvnet_vdsr(path)
    if _looks_like_safetensors(head):
        try:
            return extract_state_dict(load_file(str(path)), path, key)
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({exc})") from None
    return extract_state_dict(read_torch_pickle(path), path, key)


def _looks_like_safetensors(head: bytes) -> bool:
    return len(head) > 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < 100_000_000


# ---------------------------------------------------------------------------------------------------------------
# Finding the layout among the architectures' own records (srkd.models.layout)
# ---------------------------------------------------------------------------------------------------------------


def formats() -> tuple[str, ...]:
    """``--format`` names: ``auto``, the MatConvNet VDSR release, and every layout an architecture declares."""
    names = ["auto", "matconvnet-vdsr"]
    for layout in all_layouts():
        if layout.format not in names:
            names.append(layout.format)
    return tuple(names)


def find_layout(state: dict[str, torch.Tensor], fmt: str, arch: str | None, source: Any) -> Layout:
    """The layout of ``state``; ``fmt``/``arch`` restrict the candidates (and must then match)."""
    known = formats()
    if fmt not in known:
        raise CheckpointError(f"unknown format '{fmt}' (known: {', '.join(known)})")
    want = "pytorch-vdsr" if fmt == "matconvnet-vdsr" else fmt
    candidates = [lay for lay in all_layouts() if want in ("auto", lay.format) and arch in (None, lay.arch)]
    for layout in candidates:
        if layout.matches(state):
            return layout
    keys = ", ".join(list(state)[:4])
    what = f"a checkpoint in the {fmt} layout" if fmt != "auto" else "any supported official layout"
    if arch is not None:
        what += f" of {arch}"
    raise CheckpointError(
        f"{source}: does not look like {what} (first keys: {keys}); supported: {', '.join(known[1:])}"
    )


# ---------------------------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------------------------


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["res_scale=0.1", "depths=[6,6,6,6]"]`` -> typed dict (values parsed as YAML scalars/lists)."""
    out: dict[str, Any] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CheckpointError(f"--set {item!r}: expected key=value")
        try:
            out[name.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            raise CheckpointError(f"--set {item!r}: cannot parse the value") from None
    return out


def convert(
    src: str | Path,
    dst: str | Path | None = None,
    *,
    fmt: str = "auto",
    arch: str | None = None,
    scale: int | None = None,
    overrides: dict[str, Any] | None = None,
    key: str | None = None,
    dtype: torch.dtype | None = None,
    meta: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Convert the official checkpoint ``src`` to an srkd model (and write it to ``dst`` when given).

    Returns the loaded model and a summary: ``layout``, ``arch``, ``kwargs``, ``scales``, ``notes`` (assumptions
    made because the weights do not record them, e.g. EDSR's ``res_scale``). ``meta`` adds entries to the
    written file's metadata (the zoo records its name, source and licence). Every problem is a one-line
    :class:`CheckpointError` naming ``src``.
    """
    src = require_file(src)
    if fmt not in formats():
        raise CheckpointError(f"unknown format '{fmt}' (known: {', '.join(formats())})")
    if fmt == "matconvnet-vdsr" and not _is_mat(src):
        raise CheckpointError(f"{src}: not a MATLAB .mat file (expected with --format matconvnet-vdsr)")
    state = read_official(src, key)
    layout = find_layout(state, fmt, arch.lower() if arch else None, src)
    layout_name = "matconvnet-vdsr" if _is_mat(src) else layout.name
    try:
        kwargs, notes = layout.infer(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{src}: cannot convert: {exc}") from None
    except (KeyError, IndexError, ValueError, ZeroDivisionError) as exc:
        raise CheckpointError(f"{src}: incomplete {layout_name} checkpoint (cannot infer the architecture: {exc})") from None
    overrides = dict(overrides or {})
    if "res_scale" in overrides:
        notes = [n for n in notes if not n.startswith("res_scale")]
    kwargs.update(overrides)
    if scale is not None:
        if not layout.multi_scale and int(kwargs.get("scale", scale)) != int(scale):
            raise CheckpointError(
                f"{src}: its upsampler is x{kwargs['scale']}, so it cannot be converted as x{scale}"
            )
        kwargs["scale"] = int(scale)
    if not layout.multi_scale and kwargs.get("scale") not in (2, 3, 4, 8):
        raise CheckpointError(f"{src}: cannot tell the scale from the upsampler; give it with --scale")
    check_model_fits_file(layout.arch, kwargs, src.stat().st_size, src)  # before anything is allocated
    try:
        model = build_model(layout.arch, **kwargs)
    except SrkdError as exc:
        raise CheckpointError(f"{src}: {exc}") from None
    mapped: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        new = layout.rename(name)
        if new is not None:
            mapped[new] = tensor.to(torch.float32) if tensor.is_floating_point() else tensor
    what = f"{layout.arch}({', '.join(f'{k}={v}' for k, v in kwargs.items())}) [{layout_name} layout]"
    load_state_dict_strict(model, mapped, source=src, what=what)
    model.eval()
    scales = [2, 3, 4] if layout.multi_scale else [model_scale(model)]
    info = {"layout": layout_name, "arch": layout.arch, "kwargs": kwargs, "scales": scales, "notes": notes}
    if dst is not None:
        as_folder = str(dst).endswith(("/", os.sep)) or Path(dst).is_dir()
        dst = Path(dst) / f"{src.stem}.safetensors" if as_folder else Path(dst)
        if dst.resolve() == src.resolve():
            raise CheckpointError(f"{dst}: the output would overwrite the input")
        record: dict[str, Any] = {"converted_from": src.name, "source_format": layout_name, "source_sha256": _sha256(src)}
        if notes:
            record["conversion_notes"] = notes
        save_model(dst, model, scales=scales, meta={**record, **(meta or {})}, dtype=dtype)
        info["path"] = str(dst)
    return model, info


def _is_mat(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(6) == b"MATLAB"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = [
    "InertObject",
    "Layout",
    "convert",
    "extract_state_dict",
    "find_layout",
    "formats",
    "module_state_dict",
    "parse_overrides",
    "read_matconvnet_vdsr",
    "read_official",
    "read_torch_pickle",
]
