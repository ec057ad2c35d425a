"""Reading ``torch.save`` files without letting the pickle choose what runs.

This module is the only place in srkd that unpickles. :class:`_RestrictedUnpickler` resolves only the names the
supported official formats need (tensor rebuild functions, ``OrderedDict``, storage types) and maps pickled module
classes (``torch.nn.modules.*`` and the ``vdsr.Net`` of pytorch-vdsr, which pickled the whole network) to inert
placeholders that only collect their state. Any other global (``os.system``, ``builtins.eval``, ...) is refused
before it is resolved. ``torch.load`` is not used: both torch container formats (the zip one of torch >= 1.6 and
the legacy magic-number stream) are parsed here, so the rules are the same for every file and do not depend on
torch's own (changing) ``weights_only`` allow-list.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from srkd.checkpoint.io import require_file
from srkd.errors import CheckpointError

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
    if math.prod(size) > storage.numel():  # stride-0 views: a 1-value storage could stand for any size
        raise _Refused("a tensor with more elements than its storage (an expanded view)")
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


__all__ = ["InertObject", "module_state_dict", "read_torch_pickle"]
