"""Export an srkd model to ONNX or TorchScript, and check the exported file against PyTorch.

ONNX uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): it exports EDSR, RCAN, VDSR
and SwinIR with dynamic height/width (PixelShuffle becomes ``DepthToSpace``, SwinIR's pad-to-window and
shifted-window masks are traced from the input shape), whereas the ``torch.export``-based exporter of torch 2.13
refuses SwinIR's data-dependent shapes; ``dynamo=True`` is kept as an option. TorchScript uses ``torch.jit.trace``.

What the exported graph computes is the network itself, ``model(x)``: float images in [0, 1], ``(N, C, h, w)`` ->
``(N, C, s*h, s*w)``, not clamped. A pre-upsampling network (VDSR) takes the bicubic-upscaled Y channel, as its
forward does; srkd's bicubic resize is not part of the graph. SwinIR graphs need inputs of at least one window
(8 pixels) per side: smaller ones take a padding branch that the traced graph does not contain.

After writing, :func:`check_export` runs the file (onnxruntime / ``torch.jit.load``) on random inputs of the
example size and, for dynamic exports, of a second size, and compares with PyTorch.

``fp16=True`` exports a half-precision graph: float16 weights, and a float16 input and output (half the file and
the memory traffic, what GPU and NPU runtimes want). It is checked against the float32 network, so the tolerance
is that of float16 arithmetic, :data:`FP16_TOLERANCE` (one 8-bit level, 1/255): float16 resolves [0, 1] outputs
to 2^-11 and rounds again at every layer (the bundled EDSR 64f/16b teacher differs by 7e-4 at most on the sample
photos), whereas the float32 graph must agree within :data:`TOLERANCE`.

Every ONNX file carries what a consumer needs to feed it in its ``metadata_props`` (:func:`onnx_metadata`):
scale, colour mode, channel count, the value range of input and output (``[0, 1]`` for every srkd graph), the
network's internal ``img_range`` (1 when it has none), whether the input must be upscaled first (VDSR), the
weight precision, the architecture with its constructor arguments and the srkd version that wrote it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.export import Dim

from srkd import __version__
from srkd.checkpoint.io import load_model
from srkd.data.images import to_float
from srkd.data.samples import sample_images
from srkd.errors import CheckpointError, SrkdError
from srkd.models.base import (
    find_spec,
    model_colour,
    model_img_range,
    model_scale,
    unwrap_model,
    upsamples_input,
)
from srkd.ops.color import rgb_to_y

DEFAULT_OPSET = 17
TOLERANCE = 1e-4  # max |exported - PyTorch| accepted by check_export on [0, 1] inputs
FP16_TOLERANCE = 1 / 255  # the same for a float16 graph against the float32 network: one 8-bit level


def _net(model: nn.Module) -> nn.Module:
    return unwrap_model(model)


def example_input(model: nn.Module, size: tuple[int, int] = (64, 64), batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A random ``(batch, C, H, W)`` network input in [0, 1].

    ``size`` is what the network itself sees: the LR size, or for VDSR the already upscaled size.
    """
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, int(getattr(_net(model), "in_channels", 3)), *size, generator=gen)


def trace_size(model: nn.Module, size: tuple[int, int], dynamic: bool) -> tuple[int, int]:
    """The example size to trace with. A windowed network (SwinIR) pads its input to a multiple of the window
    only when it is not one already; that branch is taken once while tracing, so a graph meant for every size
    must be traced on a size that needs the padding."""
    ws = getattr(_net(model), "window_size", None)
    if not dynamic or not ws:
        return size
    return tuple(v + 1 if v % ws == 0 else v for v in size)  # type: ignore[return-value]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide torch's deprecation notices about the exporters themselves (not about the model)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*deprecated.*", category=Warning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    dynamic: bool = False,
    opset: int = DEFAULT_OPSET,
    size: tuple[int, int] = (64, 64),
    dynamo: bool = False,
    fp16: bool = False,
) -> Path:
    """Write ``model`` as ONNX (input ``lr``, output ``sr``), with :func:`onnx_metadata` in the file.

    ``dynamic``: batch, height and width are free (otherwise the graph is fixed to ``size`` and batch 1).
    ``fp16``: float16 weights, input and output (``model`` itself is left in its precision).
    """
    path = Path(path)
    net = _net(model).eval()
    metadata = onnx_metadata(net, fp16=fp16)
    x = example_input(net, trace_size(net, size, dynamic))
    if fp16:
        net, x = copy.deepcopy(net).half(), x.half()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet(), torch.no_grad():
            if dynamo:
                kwargs: dict[str, Any] = {}
                if dynamic:
                    kwargs["dynamic_shapes"] = {"x": {
                        0: Dim("batch", max=1024), 2: Dim("height", min=2, max=16384), 3: Dim("width", min=2, max=16384)
                    }}
                torch.onnx.export(net, (x,), str(path), dynamo=True, opset_version=max(opset, 18),
                                  input_names=["lr"], output_names=["sr"], **kwargs)
            else:
                axes_in = {0: "batch", 2: "height", 3: "width"}
                axes_out = {0: "batch", 2: "out_height", 3: "out_width"}
                torch.onnx.export(
                    net, (x,), str(path), dynamo=False, opset_version=opset, input_names=["lr"], output_names=["sr"],
                    dynamic_axes={"lr": axes_in, "sr": axes_out} if dynamic else None,
                )
    except OSError as exc:
        raise SrkdError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except Exception as exc:  # exporter failures carry long multi-line messages: keep the first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SrkdError(f"{path}: ONNX export of {type(net).__name__} failed: {first[:300]}") from None
    write_onnx_metadata(path, metadata)
    return path


def onnx_metadata(model: nn.Module, *, fp16: bool = False) -> dict[str, str]:
    """What an exported graph needs next to it to be used right, as ONNX ``metadata_props`` (strings).

    ``value_range`` is the range of the graph's input and output, ``[0, 1]`` for every srkd network;
    ``img_range`` is the scaling the network applies inside (reported, never needed to run the graph).
    """
    net = _net(model)
    spec = find_spec(net)
    meta = {
        "srkd_version": __version__,
        "scale": str(model_scale(net, default=1)),
        "colour": model_colour(net),
        "channels": str(int(getattr(net, "in_channels", 3))),
        "value_range": "[0, 1]",
        "img_range": f"{model_img_range(net):g}",  # EDSR/RCAN 255, most others 1
        "layout": "NCHW",
        "upsample_input": "true" if upsamples_input(net) else "false",
        "dtype": "float16" if fp16 else "float32",
    }
    if spec is not None:
        meta["arch"] = str(spec.arch)
        meta["kwargs"] = json.dumps(spec.kwargs, sort_keys=True, default=str)
    return meta


def write_onnx_metadata(path: str | Path, metadata: dict[str, str]) -> bool:
    """Put ``metadata`` into the ONNX file's ``metadata_props``; False (file unchanged) without the onnx package."""
    try:
        import onnx  # inside: optional dependency (the onnx extra)
    except ImportError:
        return False
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, **metadata})
    try:
        onnx.save(proto, str(path))
    except OSError as exc:
        raise SrkdError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return True


def export_torchscript(model: nn.Module, path: str | Path, *, size: tuple[int, int] = (64, 64)) -> Path:
    """Write ``model`` traced with ``torch.jit.trace`` on a ``size`` example; any input size runs afterwards."""
    path = Path(path)
    net = _net(model).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(net, example_input(net, trace_size(net, size, dynamic=True)))
    try:
        traced.save(str(path))
    except (OSError, RuntimeError) as exc:
        raise SrkdError(f"{path}: cannot write ({exc})") from None
    return path


def _run_exported(path: Path, fmt: str, x: torch.Tensor) -> np.ndarray:
    if fmt == "onnx":
        import onnxruntime as ort  # inside: optional dependency (the onnx extra)

        session = _ORT_SESSIONS.get(str(path))
        if session is None:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            _ORT_SESSIONS[str(path)] = session
        graph_input = session.get_inputs()[0]
        if graph_input.type == "tensor(float16)":  # an fp16 export: fed the same values, rounded to float16
            x = x.half()
        return session.run(None, {graph_input.name: x.numpy()})[0]
    module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return module(x).numpy()


_ORT_SESSIONS: dict[str, Any] = {}


def check_export(
    model: nn.Module,
    path: str | Path,
    fmt: str,
    inputs: Sequence[torch.Tensor],
    tolerance: float = TOLERANCE,
) -> list[dict[str, Any]]:
    """Run the exported file on each input; return ``[{"shape", "max_abs_diff"}]``; SrkdError past ``tolerance``.

    ``model`` is the float32 network: a float16 export gets the inputs rounded to float16 and is held to
    :data:`FP16_TOLERANCE` by its caller."""
    path = Path(path)
    net = _net(model).eval()
    rows = []
    try:
        for x in inputs:
            with torch.no_grad():
                expected = net(x).numpy()
            try:
                got = _run_exported(path, fmt, x)
            except Exception as exc:  # onnxruntime / TorchScript runtime errors are long and multi-line
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise SrkdError(f"{path}: the exported model fails on input {tuple(x.shape)}: {first[:300]}") from None
            if got.shape != expected.shape:
                raise SrkdError(
                    f"{path}: exported model gives shape {tuple(got.shape)} for input {tuple(x.shape)}, "
                    f"PyTorch {tuple(expected.shape)}"
                )
            diff = float(np.abs(got.astype(np.float64) - expected).max())
            rows.append({"shape": list(x.shape), "max_abs_diff": diff})
            if not diff <= tolerance:
                raise SrkdError(
                    f"{path}: exported model differs from PyTorch by {diff:.2e} (> {tolerance:g}) "
                    f"on input {tuple(x.shape)}"
                )
    finally:
        _ORT_SESSIONS.pop(str(path), None)
    return rows


def real_input(model: nn.Module, size: tuple[int, int], batch: int = 1) -> torch.Tensor:
    """Crops of the bundled sample photos (astronaut, chelsea) as a network input; luma for 1-channel nets."""
    h, w = size
    crops = []
    for k in range(batch):
        _, img = sample_images("val")[k % 2]
        img = to_float(img)
        reps = (-(-h // img.shape[1]), -(-w // img.shape[2]))  # tile small photos up to big export sizes
        crops.append(img.repeat(1, *reps)[:, :h, :w])
    x = torch.stack(crops)
    if int(getattr(_net(model), "in_channels", 3)) == 1:
        x = rgb_to_y(x)
    return x.contiguous()


def check_inputs(model: nn.Module, size: tuple[int, int], dynamic: bool) -> list[torch.Tensor]:
    """Inputs for :func:`check_export`: random and real (sample photos) at the example size, and for dynamic
    exports at a second, odd size with batch 2 as well."""
    inputs = [example_input(model, size, batch=1, seed=1), real_input(model, size)]
    if dynamic:
        other = (size[0] + 13, size[1] + 7)  # odd sizes: nothing divides by the scale or a window by accident
        inputs += [example_input(model, other, batch=2, seed=2), real_input(model, other, batch=2)]
    return inputs


def load_for_export(checkpoint: str | Path, scale: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """An srkd checkpoint as a float32 eval-mode model; anything else is a one-line CheckpointError."""
    model, meta = load_model(checkpoint, scale=scale)
    if not isinstance(model, nn.Module):  # defensive: load_model's contract
        raise CheckpointError(f"{checkpoint}: not a model checkpoint")
    return model.float().eval(), meta


__all__ = [
    "DEFAULT_OPSET",
    "FP16_TOLERANCE",
    "TOLERANCE",
    "check_export",
    "check_inputs",
    "example_input",
    "export_onnx",
    "export_torchscript",
    "load_for_export",
    "onnx_metadata",
    "trace_size",
    "real_input",
    "write_onnx_metadata",
]
