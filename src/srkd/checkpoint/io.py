"""srkd model checkpoints: safetensors weights plus string metadata that say how to rebuild the network.

A checkpoint is self-describing (``--model FILE`` needs no architecture flags): the metadata hold the registry
name, the constructor keyword arguments (JSON), the scale(s) the weights serve and the colour mode. safetensors
cannot execute code when read, unlike pickles, so loading a file from the internet is safe. Writes go through
:func:`srkd.io.replacing` (a temporary twin, fsync'ed, given the umask's mode and renamed over the target), so a
crash or a kill never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import safetensors.torch  # by module, so that a test can replace safetensors.torch.save_file
import torch
import torch.nn as nn
from safetensors import safe_open

from srkd import __version__
from srkd.checkpoint import zoo
from srkd.errors import CheckpointError, SrkdError
from srkd.io import replacing
from srkd.models import ModelSpec, build_model, model_scale, model_spec
from srkd.models.base import find_spec, model_colour

FORMAT = "srkd-model"
FORMAT_VERSION = 1
MAX_SCALE = 16  # the largest upscaling factor a checkpoint may declare (papers stop at x8)
# Keys written by srkd itself; user metadata may not shadow them.
RESERVED_KEYS = ("format", "format_version", "srkd_version", "arch", "kwargs", "scale", "scales", "colour", "dtype")


def require_file(path: str | Path) -> Path:
    """``path`` as a Path if it is an existing regular file, else a one-line :class:`CheckpointError`."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a checkpoint file")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: not readable (permission denied)")
    return path


def save_model(
    path: str | Path,
    model: nn.Module,
    *,
    scales: list[int] | None = None,
    meta: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model`` (built by :func:`srkd.models.build_model`) to ``path`` atomically.

    ``scales`` lists every scale the weights serve (VDSR: one network for x2/x3/x4); default ``[model.scale]``.
    ``meta`` values (config name, PSNR...) are stored as JSON strings and come back decoded from
    :func:`read_metadata`. ``dtype=torch.float16`` halves the file; :func:`load_model` restores float32.
    """
    target = getattr(model, "module", model)
    target = getattr(target, "_orig_mod", target)  # torch.compile wrapper
    spec = find_spec(target)
    if spec is None:
        raise ValueError("save_model needs a model built by srkd.models.build_model (it has no .spec)")
    scale = model_scale(target)
    scales = sorted({int(s) for s in (scales or [scale])} | {scale})
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "srkd_version": __version__,
        "arch": spec.arch,
        "kwargs": json.dumps(spec.kwargs, sort_keys=True),
        "scale": str(scale),
        "scales": json.dumps(scales),
        "colour": model_colour(target),
        "dtype": str(dtype or torch.float32).replace("torch.", ""),
    }
    for key, value in (meta or {}).items():
        if key in RESERVED_KEYS:
            raise ValueError(f"metadata key '{key}' is reserved by srkd")
        metadata[str(key)] = json.dumps(value, default=str)

    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in target.state_dict().items():
        t = tensor.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        t = t.contiguous()
        if t.data_ptr() in seen or t.data_ptr() == tensor.data_ptr():
            t = t.clone()  # safetensors refuses shared storage; never alias the live parameters either
        seen.add(t.data_ptr())
        tensors[name] = t
    _atomic_save(Path(path), tensors, metadata)
    return Path(path)


def _atomic_save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    try:
        with replacing(path) as tmp:
            safetensors.torch.save_file(tensors, tmp, metadata=metadata)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write checkpoint ({exc.strerror or exc})") from None


def _raw_metadata(path: Path) -> dict[str, str] | None:
    try:
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata()
    except Exception as exc:  # SafetensorError is not exported under a stable name
        with open(path, "rb") as fh:
            head = fh.read(8)
        hint = ""
        if head[:1] == b"\x80" or head[:2] == b"PK":
            hint = "; it looks like a PyTorch pickle: convert it with `srkd convert SRC DST`"
        elif head[:4] == b"MATL":
            hint = "; it looks like a MATLAB file: convert it with `srkd convert SRC DST`"
        raise CheckpointError(f"{path}: not a safetensors file, or truncated ({_short(exc)}){hint}") from None


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Decoded metadata of an srkd checkpoint: ``arch``, ``kwargs`` (dict), ``scale``, ``scales``, ``colour``...

    User metadata given to :func:`save_model` come back with their JSON types.
    """
    path = require_file(zoo.resolve(path))
    raw = _raw_metadata(path)
    if not raw or raw.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an srkd model checkpoint (no srkd metadata); "
            "convert official weights with `srkd convert SRC DST`"
        )
    try:
        version = int(raw.get("format_version", "0"))
    except ValueError:
        version = -1
    if version < 1 or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {raw.get('format_version')} is not supported by this srkd "
            f"(reads 1..{FORMAT_VERSION}); upgrade srkd"
        )
    out: dict[str, Any] = {}
    try:
        for key, value in raw.items():
            if key in ("format", "srkd_version", "arch", "colour", "dtype"):
                out[key] = value
            elif key in ("format_version", "scale"):
                out[key] = int(value)
            elif key in ("kwargs", "scales"):
                out[key] = json.loads(value)
            else:
                try:
                    out[key] = json.loads(value)
                except json.JSONDecodeError:
                    out[key] = value  # written by another tool: keep the string
        if not isinstance(out.get("kwargs"), dict) or not isinstance(out.get("scales"), list) or "arch" not in out:
            raise ValueError("arch/kwargs/scales missing")
        if not 1 <= len(out["scales"]) <= MAX_KWARG_ITEMS or not all(
                type(s) is int and 1 <= s <= MAX_SCALE for s in out["scales"]):
            raise ValueError(f"scales must be a list of integers from 1 to {MAX_SCALE}")
        out.setdefault("scale", out["scales"][0])
        if not 1 <= out["scale"] <= MAX_SCALE:
            raise ValueError(f"scale must be an integer from 1 to {MAX_SCALE}")
        out.setdefault("colour", "rgb")
    except (ValueError, TypeError, IndexError, OverflowError, RecursionError) as exc:
        # RecursionError: JSON nested thousands deep; messages are cut, a crafted value must not flood the terminal
        raise CheckpointError(f"{path}: corrupt srkd metadata ({_short(exc)})") from None
    return out


# Bounds on what a file may ask srkd to build. Every integer argument of srkd's architectures is a positive size
# or count (the largest in a published model: 256 features); the bounds only stop absurd values before they cost.
MAX_KWARG_INT = 1 << 16
MAX_KWARG_ITEMS = 64
MAX_KWARG_DEPTH = 4
MAX_KWARG_TEXT = 64


def check_model_kwargs(kwargs: Any, source: Any) -> None:
    """Refuse (one-line CheckpointError naming ``source`` and the argument) model keyword arguments that no srkd
    architecture takes: a non-positive or huge integer, a non-finite number, a long string, a deep or long list.
    Without it a bad value surfaces as a traceback from deep inside torch, or as a huge allocation."""
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{source}: model arguments must be a mapping, not {type(kwargs).__name__}")

    def check(name: str, value: Any, depth: int) -> None:
        if depth > MAX_KWARG_DEPTH:
            raise CheckpointError(f"{source}: model argument {name} is nested too deeply")
        if value is None or isinstance(value, bool):
            return
        if isinstance(value, int):
            if not 1 <= value <= MAX_KWARG_INT:
                raise CheckpointError(
                    f"{source}: model argument {name} must be a positive integer up to {MAX_KWARG_INT}, "
                    f"not {str(value)[:20]}"
                )
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise CheckpointError(f"{source}: model argument {name} must be a finite number, not {value}")
        elif isinstance(value, str):
            if len(value) > MAX_KWARG_TEXT:
                raise CheckpointError(f"{source}: model argument {name} is a {len(value)}-character string")
        elif isinstance(value, (list, tuple)):
            if len(value) > MAX_KWARG_ITEMS:
                raise CheckpointError(f"{source}: model argument {name} has {len(value)} items (at most "
                                      f"{MAX_KWARG_ITEMS})")
            for i, v in enumerate(value):
                check(f"{name}[{i}]", v, depth + 1)
        else:
            raise CheckpointError(f"{source}: model argument {name} has an unsupported type {type(value).__name__}")

    if len(kwargs) > MAX_KWARG_ITEMS:
        raise CheckpointError(f"{source}: {len(kwargs)} model arguments (at most {MAX_KWARG_ITEMS})")
    for key, value in kwargs.items():
        if not isinstance(key, str) or not key.isidentifier() or len(key) > MAX_KWARG_TEXT:
            raise CheckpointError(f"{source}: {str(key)[:MAX_KWARG_TEXT]!r} is not a model argument name")
        check(key, value, 0)


class _TooBig(Exception):
    """Raised from the parameter-registration hook to stop building a model that cannot fit its file."""


def check_model_fits_file(arch: str, kwargs: dict[str, Any], file_bytes: int, source: Any) -> None:
    """Refuse, before anything is allocated, a model whose parameters cannot be in a file of ``file_bytes``.

    The weights must hold every parameter (loading is strict) at one byte per value at least, so a model with
    more values, or more parameter tensors than the file could list, was described by tampered or mistaken
    metadata (``n_feats`` 3000 in a 2.7 KB file asks for 1.2 GB). The network is built on torch's ``meta``
    device (no memory), and a registration hook stops the build as soon as the count passes the bound, so even
    a block count of 10^5 costs milliseconds, not minutes.
    """
    check_model_kwargs(kwargs, source)
    seen = {"values": 0, "tensors": 0}

    def count(_module: nn.Module, _name: str, param: nn.Parameter | None) -> None:
        if param is None:
            return
        seen["values"] += param.numel()
        seen["tensors"] += 1
        if seen["values"] > file_bytes or seen["tensors"] * _MIN_TENSOR_BYTES > file_bytes:
            raise _TooBig

    handle = torch.nn.modules.module.register_module_parameter_registration_hook(count)
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zero-element meta tensors warn
            build_model(arch, **kwargs)
    except _TooBig:
        raise CheckpointError(
            f"{source}: its metadata describe a {arch}({_kwargs_text(kwargs)[:200]}) with more weights than a "
            f"{file_bytes}-byte file can hold; the file is damaged or its metadata were edited"
        ) from None
    except SrkdError as exc:
        raise CheckpointError(f"{source}: cannot rebuild the model: {str(exc)[:300]}") from None
    except Exception as exc:  # noqa: BLE001 - a value no constructor takes: torch's message, one line
        raise CheckpointError(
            f"{source}: cannot build {arch}({_kwargs_text(kwargs)[:200]}): {_short(exc)}"
        ) from None
    finally:
        handle.remove()


# A safetensors header lists each tensor with its name, dtype, shape and offsets: some 40 bytes at the least.
_MIN_TENSOR_BYTES = 40


def load_model(
    path: str | Path,
    *,
    scale: int | None = None,
    colour: str | None = None,
    device: str | torch.device = "cpu",
    arch: str | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network described by an srkd checkpoint and load its weights (float32, eval mode).

    ``scale``/``colour``/``arch``, when given, must match the checkpoint; a multi-scale checkpoint (VDSR) is set
    to the requested scale. Every refusal is a one-line :class:`CheckpointError` naming the file.
    """
    path = require_file(zoo.resolve(path))  # `zoo:NAME` is a downloaded zoo teacher (srkd teachers download)
    meta = read_metadata(path)
    if arch is not None and arch.lower() != meta["arch"]:
        raise CheckpointError(f"{path}: a {meta['arch']} model, but {arch.lower()} was expected")
    arch, kwargs = meta["arch"], dict(meta["kwargs"])
    if scale is not None and int(scale) not in meta["scales"]:
        served = "/".join(f"x{s}" for s in meta["scales"])
        raise CheckpointError(f"{path}: a {served} {arch} model cannot be used for x{scale}")
    if colour is not None and colour != meta["colour"]:
        raise CheckpointError(
            f"{path}: a {arch} model for {meta['colour'].upper()} images, but {colour.upper()} was requested"
        )
    check_model_fits_file(arch, kwargs, path.stat().st_size, path)
    try:
        model = build_model(arch, **kwargs)
    except SrkdError as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model: {exc}") from None
    try:
        state = safetensors.torch.load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"{path}: not a safetensors file, or truncated ({_short(exc)})") from None
    load_state_dict_strict(model, state, source=path, what=f"{arch}({_kwargs_text(kwargs)})")
    if scale is not None and int(scale) != model_scale(model):
        model.scale = int(scale)  # type: ignore[assignment]  # torch's stubs: attributes are Tensor | Module
        if "scale" in kwargs:
            model.spec = ModelSpec(arch, {**kwargs, "scale": int(scale)})  # type: ignore[assignment]
    meta["scale"] = model_scale(model)
    meta["kwargs"] = dict(model_spec(model).kwargs)
    try:
        model = model.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise CheckpointError(f"{path}: cannot move the model to device '{device}' ({_short(exc)})") from None
    model.eval()
    return model, meta


def _kwargs_text(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items()))


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], *, source: Any, what: str) -> None:
    """``model.load_state_dict(state)`` that reports every kind of mismatch in one line naming ``source``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    problems = []
    if shapes:
        k = shapes[0]
        problems.append(
            f"{len(shapes)} shape mismatch(es), e.g. {k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        )
    if missing:
        problems.append(f"{len(missing)} missing key(s), e.g. {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {', '.join(unexpected[:3])}")
    if problems:
        raise CheckpointError(f"{source}: weights do not fit {what}: {'; '.join(problems)}")
    non_float = [k for k, v in state.items() if own[k].is_floating_point() != v.is_floating_point()]
    if non_float:
        raise CheckpointError(f"{source}: weights do not fit {what}: wrong dtype for {non_float[0]}")
    model.load_state_dict(state, strict=True)  # copies, casting float16 storage to the model's float32
