"""Convert official SR checkpoints to srkd's self-describing safetensors format.

This module is the only place in srkd that reads a pickle, and it never lets the pickle choose what runs:
:class:`_RestrictedUnpickler` resolves only the names the supported formats need (tensor rebuild functions,
``OrderedDict``, storage types) and maps pickled module classes (``torch.nn.modules.*`` and the ``vdsr.Net``
of pytorch-vdsr, which pickled the whole network) to inert placeholders that only collect their state. Any other
global (``os.system``, ``builtins.eval``, ...) is refused before it is resolved. ``torch.load`` is not used: both
torch container formats (the zip one of torch >= 1.6 and the legacy magic-number stream) are parsed here, so the
rules are the same for every file and do not depend on torch's own (changing) ``weights_only`` allow-list.

Conversion = read the file into a flat ``{name: tensor}`` dict, recognise the layout from its key names, infer
the architecture's keyword arguments from tensor shapes (``--arch/--scale/--set`` pin or override them), rename
the keys to srkd's, and load them strictly into a freshly built model, so a mismatch is an error, never a
silently half-loaded network.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from srkd.checkpoint.io import require_file
from srkd.errors import CheckpointError, SrkdError

FORMATS = ("auto", "pytorch-vdsr", "matconvnet-vdsr", "edsr", "basicsr", "rcan", "swinir")

# ---------------------------------------------------------------------------------------------------------------
# Restricted reading of torch pickles
# ---------------------------------------------------------------------------------------------------------------

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
# Module classes pickled whole by official checkpoints (besides torch.nn.modules.*).
_ALLOWED_MODULE_CLASSES = {("vdsr", "Net"), ("vdsr", "Conv_ReLU_Block")}


class _Refused(Exception):
    """A pickle asked for something outside the allow-list."""


class _StorageType:
    """Stands for ``torch.FloatStorage`` & co. inside a pickle; only its dtype is used."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class InertObject:
    """Placeholder for a pickled class: never runs the original code, only keeps the state it was given."""

    _args: tuple[Any, ...]

    origin = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> InertObject:
        obj = object.__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # REDUCE calls cls(*args); nothing to do
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)
        elif isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            self.__dict__.update(state[0])  # (dict, slots) form
        else:
            self.__dict__["_state"] = state

    def __repr__(self) -> str:
        return f"<inert {self.origin}>"


class _InertParameter(InertObject):
    """Old torch pickled a parameter as ``Parameter(tensor)`` plus a state tuple; keep the tensor."""

    origin = "torch.nn.parameter.Parameter"

    @property
    def data(self) -> torch.Tensor:
        return self._args[0]


_placeholder_classes: dict[tuple[str, str], type[InertObject]] = {}


def _placeholder(module: str, name: str) -> type[InertObject]:
    key = (module, name)
    if key not in _placeholder_classes:
        _placeholder_classes[key] = type(name, (InertObject,), {"origin": f"{module}.{name}", "__module__": __name__})
    return _placeholder_classes[key]


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *_: Any) -> torch.Tensor:
    if not isinstance(storage, torch.Tensor):
        raise _Refused("a tensor whose storage is not a storage record")
    if len(size) != len(stride) or any(s < 0 for s in size):
        raise _Refused("a tensor with an invalid shape")
    extent = offset + sum((n - 1) * st for n, st in zip(size, stride) if n > 0) + 1 if all(size) else 0
    if offset < 0 or extent > storage.numel():
        raise _Refused("a tensor that points outside its storage")
    return storage.as_strided(tuple(size), tuple(stride), offset)


def _rebuild_parameter(data: torch.Tensor, *_: Any) -> torch.Tensor:
    return data


def _no_backend(*_: Any) -> None:  # torch < 0.4 pickled the THNN backend object of every module
    return None


_ALLOWED_FUNCTIONS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.nn.parameter", "Parameter"): _InertParameter,
    ("torch.nn.backends.thnn", "_get_thnn_function_backend"): _no_backend,
    ("torch", "Size"): tuple,
    ("builtins", "set"): set,  # modules pickled by newer torch keep a set of non-persistent buffer names
    ("__builtin__", "set"): set,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allow-listed globals; storages come from ``load_storage(key, dtype, numel)``."""

    def __init__(self, file: io.BufferedIOBase, load_storage: Callable[..., torch.Tensor]) -> None:
        super().__init__(file, encoding="utf-8")
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_FUNCTIONS:
            return _ALLOWED_FUNCTIONS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module.startswith("torch.nn.modules.") and name[:1].isupper()) or (module, name) in _ALLOWED_MODULE_CLASSES:
            return _placeholder(module, name)
        raise _Refused(f"the global '{module}.{name}'")

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise _Refused("an unknown persistent record")
        if pid[0] == "module":  # legacy: (tag, class, source file, source) of a pickled nn.Module
            return pid[1]
        if pid[0] == "storage" and len(pid) >= 5 and isinstance(pid[1], _StorageType):
            view = pid[5] if len(pid) > 5 else None
            return self._load_storage(str(pid[2]), pid[1].dtype, int(pid[4]), view)
        raise _Refused(f"the persistent record {str(pid[0])[:40]!r}")


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _read_zip_pickle(path: Path) -> Any:
    """torch >= 1.6 container: ``<root>/data.pkl`` plus one raw little-endian file per storage."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if not pkl:
            raise CheckpointError(f"{path}: a zip file but not a PyTorch checkpoint (no data.pkl)")
        root = pkl[0].rsplit("/", 1)[0]
        if f"{root}/byteorder" in names and archive.read(f"{root}/byteorder").strip() not in (b"little", b""):
            raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
        storages: dict[str, torch.Tensor] = {}

        def load_storage(key: str, dtype: torch.dtype, numel: int, _view: Any) -> torch.Tensor:
            if key not in storages:
                name = f"{root}/data/{key}"
                try:
                    info = archive.getinfo(name)
                except KeyError:
                    raise _Refused(f"a missing storage record {key!r}") from None
                nbytes = numel * _element_size(dtype)
                if info.compress_type != zipfile.ZIP_STORED and info.file_size > 1000 * (info.compress_size + 1):
                    raise _Refused(f"storage {key!r} compressed {info.compress_size} -> {info.file_size} bytes")
                if info.file_size != nbytes:
                    raise _Refused(f"storage {key!r} of {info.file_size} bytes where {nbytes} were declared")
                data = bytearray(archive.read(name))
                storages[key] = torch.frombuffer(data, dtype=dtype) if nbytes else torch.empty(0, dtype=dtype)
            return storages[key]

        with archive.open(pkl[0]) as fh:
            return _RestrictedUnpickler(io.BufferedReader(fh), load_storage).load()  # type: ignore[type-var]


def _read_legacy_pickle(path: Path, fh: io.BufferedReader) -> Any:
    """torch < 1.6 stream: magic, protocol, sys info, the object pickle, storage keys, then raw storages.

    Storages are allocated while the object pickle is read (tensors are views of them) and filled afterwards
    from the raw records, each an int64 element count followed by the little-endian data.
    """
    size = path.stat().st_size
    header = _RestrictedUnpickler(fh, _no_storage)
    if header.load() != _LEGACY_MAGIC:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (bad magic number)")
    protocol = _RestrictedUnpickler(fh, _no_storage).load()
    sys_info = _RestrictedUnpickler(fh, _no_storage).load()
    if protocol != 1001 or not isinstance(sys_info, dict):
        raise CheckpointError(f"{path}: unsupported legacy PyTorch format (protocol {protocol})")
    if not sys_info.get("little_endian", True):
        raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
    storages: dict[str, torch.Tensor] = {}

    def load_storage(key: str, dtype: torch.dtype, numel: int, view: Any) -> torch.Tensor:
        if key not in storages:
            if numel < 0 or numel * _element_size(dtype) > size:
                raise _Refused(f"storage {key!r} larger than the file")
            storages[key] = torch.empty(numel, dtype=dtype)
        base = storages[key]
        if view is not None:  # (view key, offset, size): a slice of the root storage
            view_key, offset, view_size = view
            if offset < 0 or offset + view_size > base.numel():
                raise _Refused("a storage view outside its storage")
            storages.setdefault(str(view_key), base[offset : offset + view_size])
            return storages[str(view_key)]
        return base

    result = _RestrictedUnpickler(fh, load_storage).load()
    keys = _RestrictedUnpickler(fh, _no_storage).load()
    if not isinstance(keys, list):
        raise CheckpointError(f"{path}: corrupt legacy PyTorch checkpoint (no storage table)")
    for key in keys:
        base = storages.get(str(key))
        if base is None:
            raise CheckpointError(f"{path}: corrupt legacy PyTorch checkpoint (unknown storage {key!r})")
        count = fh.read(8)
        if len(count) != 8:
            raise CheckpointError(f"{path}: truncated file (storage {key} missing)")
        (numel,) = struct.unpack("<q", count)
        nbytes = numel * base.element_size()
        if numel != base.numel():
            raise CheckpointError(f"{path}: corrupt legacy PyTorch checkpoint (storage {key} has the wrong size)")
        data = fh.read(nbytes)
        if len(data) != nbytes:
            raise CheckpointError(f"{path}: truncated file (storage {key} incomplete)")
        if nbytes:
            base.copy_(torch.frombuffer(bytearray(data), dtype=base.dtype))
    return result


def _no_storage(*_: Any) -> torch.Tensor:
    raise _Refused("a storage record in a header")


def read_torch_pickle(path: str | Path) -> Any:
    """Read a ``torch.save`` file (zip or legacy) with the restricted unpickler; refuse anything else.

    Pickled modules come back as :class:`InertObject` trees (see :func:`module_state_dict`).
    """
    path = Path(path)
    require_file(path)
    try:
        if zipfile.is_zipfile(path):
            return _read_zip_pickle(path)
        with open(path, "rb") as fh:
            if fh.peek(1)[:1] != b"\x80":
                raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip nor a pickle stream)")
            return _read_legacy_pickle(path, fh)
    except _Refused as exc:
        raise CheckpointError(
            f"{path}: refused to unpickle {exc} (only tensors, state dicts and the classes of the supported "
            "official formats are allowed)"
        ) from None
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, TypeError, IndexError, KeyError,
            AttributeError, UnicodeDecodeError, RuntimeError, struct.error, OverflowError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated PyTorch checkpoint ({type(exc).__name__}: {exc})") from None


def module_state_dict(module: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """``state_dict()`` of a pickled module tree of :class:`InertObject` placeholders."""
    out: dict[str, torch.Tensor] = {}
    state = module.__dict__
    for group in ("_parameters", "_buffers"):
        skip = state.get("_non_persistent_buffers_set", set()) if group == "_buffers" else set()
        for name, value in (state.get(group) or {}).items():
            if value is None or name in skip:
                continue
            tensor = value.data if isinstance(value, _InertParameter) else value
            if not isinstance(tensor, torch.Tensor):
                raise ValueError(f"the pickled module's '{prefix}{name}' is not a tensor")
            out[prefix + name] = tensor
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(module_state_dict(child, f"{prefix}{name}."))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Reading any supported file into a flat {name: tensor} dict
# ---------------------------------------------------------------------------------------------------------------


def read_matconvnet_vdsr(path: str | Path) -> dict[str, torch.Tensor]:
    """The VDSR authors' MatConvNet release: ``model.weight{i}`` (H, W, in, out) and ``model.bias{i}``.

    MatConvNet's ``vl_nnconv`` is a cross-correlation like ``torch.conv2d``, so the filters only need their axes
    permuted to (out, in, H, W); the last layer's trailing singleton ``out`` axis was squeezed by MATLAB.
    The result uses the pytorch-vdsr key names, so one mapping serves both files.
    """
    import numpy as np
    import scipy.io

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
        from safetensors.torch import load_file

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
# Official layouts: recognise, infer the architecture, rename keys
# ---------------------------------------------------------------------------------------------------------------

Rule = tuple[str, Any]  # (regex on the official key, replacement template or None to drop the tensor)


@dataclass(frozen=True)
class Layout:
    """One official key layout of one architecture."""

    format: str  # the --format name
    arch: str  # srkd registry name
    marker: str  # regex that only this layout's keys match
    infer: Callable[[dict[str, torch.Tensor]], tuple[dict[str, Any], list[str]]]  # kwargs, notes
    rules: tuple[Rule, ...]
    multi_scale: bool = False  # one network for x2/x3/x4 (VDSR)

    @property
    def name(self) -> str:
        return self.format if self.format != "basicsr" else f"basicsr-{self.arch}"

    def rename(self, key: str) -> str | None:
        for pattern, repl in self.rules:
            if re.fullmatch(pattern, key):
                return None if repl is None else re.sub(pattern, repl, key)
        return key


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    return sum(1 for k in state if re.fullmatch(pattern, k))


def _upsampler_scale(state: dict[str, torch.Tensor], prefix: str, n_feats: int) -> int:
    """Scale of a pixel-shuffle upsampler: one conv per factor 2 (x2/x4/x8), or a single 9x conv for x3."""
    steps = _count(state, re.escape(prefix) + r"\d+\.weight")
    if steps > 1:
        return 2**steps
    ratio = state[f"{prefix}0.weight"].shape[0] // max(n_feats, 1)
    return {4: 2, 9: 3}.get(ratio, 0)


def _edsr_res_scale(n_feats: int, notes: list[str]) -> float:
    # Not stored in the weights. The EDSR paper uses 0.1 for its 256-feature model and 1 for the baseline.
    res_scale = 0.1 if n_feats >= 256 else 1.0
    notes.append(f"res_scale={res_scale} assumed (not stored in the weights; override with --set res_scale=...)")
    return res_scale


def _mean_from_shift(state: dict[str, torch.Tensor], img_range: float = 255.0) -> list[float] | None:
    """RGB mean of an EDSR-PyTorch ``sub_mean`` 1x1 conv (identity weight, bias = -range * mean); None if absent."""
    weight, bias = state.get("sub_mean.weight"), state.get("sub_mean.bias")
    if weight is None or bias is None:
        return None
    eye = torch.eye(weight.shape[0]).view_as(weight)
    if not torch.allclose(weight.float(), eye, atol=1e-6):
        raise CheckpointError("its sub_mean layer divides by a standard deviation, which srkd's models do not support")
    return [round(v, 6) for v in (-bias.double() / img_range).tolist()]


def _infer_vdsr(state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], list[str]]:
    first = state["input.weight"]
    kwargs = {
        "scale": 2,
        "n_feats": int(first.shape[0]),
        "n_layers": 2 + _count(state, r"residual_layer\.\d+\.conv\.weight"),
        "in_channels": int(first.shape[1]),
        "bias": "input.bias" in state,
    }
    return kwargs, []


def _infer_edsr(state: dict[str, torch.Tensor], head: str, up: str, block: str) -> tuple[dict[str, Any], list[str]]:
    notes: list[str] = []
    first = state[f"{head}.weight"]
    n_feats = int(first.shape[0])
    kwargs: dict[str, Any] = {
        "scale": _upsampler_scale(state, up, n_feats),
        "n_feats": n_feats,
        "n_resblocks": _count(state, block),
        "res_scale": _edsr_res_scale(n_feats, notes),
        "in_channels": int(first.shape[1]),
    }
    mean = _mean_from_shift(state)
    if mean is not None:
        kwargs["rgb_mean"] = mean
    return kwargs, notes


def _infer_rcan(state: dict[str, torch.Tensor], head: str, up: str, official: bool) -> tuple[dict[str, Any], list[str]]:
    first = state[f"{head}.weight"]
    n_feats = int(first.shape[0])
    if official:
        groups, blocks = r"body\.\d+\.body\.0\.body\.0\.weight", r"body\.0\.body\.\d+\.body\.0\.weight"
        squeeze = state["body.0.body.0.body.3.conv_du.0.weight"]
    else:
        groups, blocks = r"body\.\d+\.residual_group\.0\.rcab\.0\.weight", r"body\.0\.residual_group\.\d+\.rcab\.0\.weight"
        squeeze = state["body.0.residual_group.0.rcab.3.attention.1.weight"]
    kwargs: dict[str, Any] = {
        "scale": _upsampler_scale(state, up, n_feats),
        "n_feats": n_feats,
        "n_resgroups": _count(state, groups),
        "n_resblocks": _count(state, blocks),
        "reduction": n_feats // int(squeeze.shape[0]),
        "in_channels": int(first.shape[1]),
    }
    mean = _mean_from_shift(state)
    if mean is not None:
        kwargs["rgb_mean"] = mean
    return kwargs, []


def _infer_swinir(state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], list[str]]:
    if "conv_up1.weight" in state:
        raise CheckpointError("it is a real-world SwinIR (nearest+conv upsampler), which srkd does not implement")
    first = state["conv_first.weight"]
    embed_dim, in_channels = int(first.shape[0]), int(first.shape[1])
    n_stages = _count(state, r"layers\.\d+\.residual_group\.blocks\.0\.attn\.qkv\.weight")
    depths = [_count(state, rf"layers\.{i}\.residual_group\.blocks\.\d+\.attn\.qkv\.weight") for i in range(n_stages)]
    tables = [state[f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table"] for i in range(n_stages)]
    window_size = (math.isqrt(int(tables[0].shape[0])) + 1) // 2
    hidden = state["layers.0.residual_group.blocks.0.mlp.fc1.weight"].shape[0]
    kwargs: dict[str, Any] = {
        "in_channels": in_channels,
        "embed_dim": embed_dim,
        "depths": depths,
        "num_heads": [int(t.shape[1]) for t in tables],
        "window_size": window_size,
        "mlp_ratio": hidden / embed_dim,
        "resi_connection": "3conv" if "layers.0.conv.0.weight" in state else "1conv",
    }
    if "conv_before_upsample.0.weight" in state:
        kwargs["upsampler"] = "pixelshuffle"
        kwargs["scale"] = _upsampler_scale(state, "upsample.", int(state["conv_before_upsample.0.weight"].shape[0]))
    else:
        kwargs["upsampler"] = "pixelshuffledirect"
        kwargs["scale"] = math.isqrt(int(state["upsample.0.weight"].shape[0]) // in_channels)
    masks = [v for k, v in state.items() if k.endswith("attn_mask")]
    if masks:  # (windows, N, N) for the training patch size; informative only, the model works at any size
        kwargs["img_size"] = window_size * math.isqrt(int(masks[0].shape[0]))
    return kwargs, []


_SWINIR_RULES: tuple[Rule, ...] = (
    (r".*\.attn\.relative_position_index", None),  # derived from the window size; srkd recomputes it
    (r".*\.attn_mask", None),  # depends on the training patch size; srkd builds masks per input size
    (r"conv_first\.(.*)", r"head.\1"),
    (r"layers\.(\d+)\.(.*)", r"body.\1.\2"),
    (r"conv_before_upsample\.(.*)", r"tail.conv_before_upsample.\1"),
    (r"upsample\.(.*)", r"tail.upsample.\1"),
    (r"conv_last\.(.*)", r"tail.conv_last.\1"),
)
_SWINIR_MARKER = r"layers\.0\.residual_group\.blocks\.0\.attn\.qkv\.weight"

_DROP_MEANS: tuple[Rule, ...] = ((r"(sub|add)_mean\.(weight|bias)", None),)
_BASICSR_ENDS: tuple[Rule, ...] = (
    (r"conv_first\.(.*)", r"head.\1"),
    (r"upsample\.(.*)", r"tail.upsample.\1"),
    (r"conv_last\.(.*)", r"tail.conv_last.\1"),
)
_OFFICIAL_ENDS: tuple[Rule, ...] = (
    (r"head\.0\.(.*)", r"head.\1"),
    (r"tail\.0\.(.*)", r"tail.upsample.\1"),
    (r"tail\.1\.(.*)", r"tail.conv_last.\1"),
    *_DROP_MEANS,
)

LAYOUTS: list[Layout] = [
    Layout("swinir", "swinir", _SWINIR_MARKER, _infer_swinir, _SWINIR_RULES),
    Layout("basicsr", "swinir", _SWINIR_MARKER, _infer_swinir, _SWINIR_RULES),  # BasicSR kept the official keys
    Layout(
        "pytorch-vdsr", "vdsr", r"residual_layer\.0\.conv\.weight", _infer_vdsr,
        ((r"input\.(.*)", r"head.conv.\1"), (r"residual_layer\.(\d+)\.conv\.(.*)", r"body.\1.conv.\2"),
         (r"output\.(.*)", r"tail.\1")),
        multi_scale=True,
    ),
    Layout(
        "rcan", "rcan", r"body\.0\.body\.0\.body\.3\.conv_du\.0\.weight",
        lambda s: _infer_rcan(s, "head.0", "tail.0.", official=True),
        (*_OFFICIAL_ENDS,
         (r"body\.(\d+)\.body\.(\d+)\.body\.([02])\.(.*)", r"body.\1.residual_group.\2.rcab.\3.\4"),
         (r"body\.(\d+)\.body\.(\d+)\.body\.3\.conv_du\.0\.(.*)", r"body.\1.residual_group.\2.rcab.3.attention.1.\3"),
         (r"body\.(\d+)\.body\.(\d+)\.body\.3\.conv_du\.2\.(.*)", r"body.\1.residual_group.\2.rcab.3.attention.3.\3"),
         (r"body\.(\d+)\.body\.\d+\.(weight|bias)", r"body.\1.conv.\2"),
         (r"body\.\d+\.(weight|bias)", r"conv_after_body.\1")),
    ),
    Layout(
        "edsr", "edsr", r"body\.0\.body\.0\.weight",
        lambda s: _infer_edsr(s, "head.0", "tail.0.", r"body\.\d+\.body\.0\.weight"),
        (*_OFFICIAL_ENDS,
         (r"body\.(\d+)\.body\.0\.(.*)", r"body.\1.conv1.\2"),
         (r"body\.(\d+)\.body\.2\.(.*)", r"body.\1.conv2.\2"),
         (r"body\.\d+\.(weight|bias)", r"conv_after_body.\1")),
    ),
    Layout(
        "basicsr", "rcan", r"body\.0\.residual_group\.0\.rcab\.0\.weight",
        lambda s: _infer_rcan(s, "conv_first", "upsample.", official=False),
        _BASICSR_ENDS,
    ),
    Layout(
        "basicsr", "edsr", r"body\.0\.conv1\.weight",
        lambda s: _infer_edsr(s, "conv_first", "upsample.", r"body\.\d+\.conv1\.weight"),
        _BASICSR_ENDS,
    ),
]


def find_layout(state: dict[str, torch.Tensor], fmt: str, arch: str | None, source: Any) -> Layout:
    """The layout of ``state``; ``fmt``/``arch`` restrict the candidates (and must then match)."""
    if fmt not in FORMATS:
        raise CheckpointError(f"unknown format '{fmt}' (known: {', '.join(FORMATS)})")
    want = "pytorch-vdsr" if fmt == "matconvnet-vdsr" else fmt
    candidates = [lay for lay in LAYOUTS if want in ("auto", lay.format) and arch in (None, lay.arch)]
    for layout in candidates:
        if any(re.fullmatch(layout.marker, k) for k in state):
            return layout
    keys = ", ".join(list(state)[:4])
    what = f"a checkpoint in the {fmt} layout" if fmt != "auto" else "any supported official layout"
    if arch is not None:
        what += f" of {arch}"
    raise CheckpointError(
        f"{source}: does not look like {what} (first keys: {keys}); supported: {', '.join(FORMATS[1:])}"
    )


# ---------------------------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------------------------


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["res_scale=0.1", "depths=[6,6,6,6]"]`` -> typed dict (values parsed as YAML scalars/lists)."""
    import yaml

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
) -> tuple[nn.Module, dict[str, Any]]:
    """Convert the official checkpoint ``src`` to an srkd model (and write it to ``dst`` when given).

    Returns the loaded model and a summary: ``layout``, ``arch``, ``kwargs``, ``scales``, ``notes`` (assumptions
    made because the weights do not record them, e.g. EDSR's ``res_scale``). Every problem is a one-line
    :class:`CheckpointError` naming ``src``.
    """
    from srkd.checkpoint.io import load_state_dict_strict, save_model
    from srkd.models import build_model, model_scale

    src = require_file(src)
    if fmt not in FORMATS:
        raise CheckpointError(f"unknown format '{fmt}' (known: {', '.join(FORMATS)})")
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
        meta: dict[str, Any] = {"converted_from": src.name, "source_format": layout_name, "source_sha256": _sha256(src)}
        if notes:
            meta["conversion_notes"] = notes
        save_model(dst, model, scales=scales, meta=meta, dtype=dtype)
        info["path"] = str(dst)
    return model, info


def _is_mat(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(6) == b"MATLAB"


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = [
    "FORMATS",
    "LAYOUTS",
    "InertObject",
    "Layout",
    "convert",
    "extract_state_dict",
    "find_layout",
    "module_state_dict",
    "parse_overrides",
    "read_matconvnet_vdsr",
    "read_official",
    "read_torch_pickle",
]
