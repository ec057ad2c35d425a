"""Named intermediate features for feature distillation, read with forward hooks (no model surgery).

Models name their taps in ``feature_taps()`` (tap name -> module path); :class:`FeatureTaps` records the outputs
of modules given by path while it is attached::

    paths = segment_paths(student, 3)                 # FAKD: outputs of 3 equal body segments
    with FeatureTaps(student, paths) as taps:
        sr = student(lr)
    feats = [taps.features[p] for p in paths]         # graph kept: gradients flow through the features

Hooks are registered on the unwrapped model (DDP, DataParallel, EMA ``AveragedModel`` and ``torch.compile``
wrappers are looked through), so the same paths work for every wrapping. Under ``torch.compile`` attach the taps
before the first compiled call: hooks added to an already compiled model are not seen by the compiled graph.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType

import torch
import torch.nn as nn

from srkd.errors import SrkdError
from srkd.models.base import feature_taps as feature_taps  # re-exported: the contract lives in models.base
from srkd.models.base import unwrap_model as unwrap_model


def standard_taps(body: nn.Sequential, body_out: str) -> dict[str, str]:
    """The tap table every SR model exposes: head output, each body block's output, and the body's output.

    ``body_out`` is the module whose output is the whole body's (the conv after the blocks when there is one),
    so a tap named ``"body"`` means the same thing for every architecture.
    """
    taps = {"head": "head"}
    taps.update({f"body.{i}": f"body.{i}" for i in range(len(body))})
    taps["body"] = body_out
    return taps


def _valid_paths_hint(model: nn.Module) -> str:
    if hasattr(model, "feature_taps"):
        names = list(feature_taps(model).values())
    else:
        names = [n for n, _ in model.named_modules() if n]
    shown = names[:4] + (["..."] + names[-2:] if len(names) > 6 else names[4:])
    return ", ".join(shown)


class FeatureTaps:
    """Records ``{path: output}`` of the modules at ``paths`` on every forward while attached.

    Features are stored as produced (not detached): detach the teacher's yourself or run it under no_grad.
    A tuple output is reduced to its first element. Each forward overwrites the previous features.
    """

    def __init__(self, model: nn.Module, paths: Iterable[str]) -> None:
        self.model = unwrap_model(model)
        self.paths = list(paths)
        self.features: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._modules = {p: self._resolve(p) for p in self.paths}

    def _resolve(self, path: str) -> nn.Module:
        try:
            return self.model.get_submodule(path)
        except AttributeError:
            raise SrkdError(
                f"unknown feature tap path '{path}' for {type(self.model).__name__} "
                f"(valid paths include: {_valid_paths_hint(self.model)})"
            ) from None

    def attach(self) -> FeatureTaps:
        if not self._handles:
            for path, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._hook(path)))
        return self

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def clear(self) -> None:
        self.features.clear()

    def _hook(self, path: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor | tuple) -> None:
            self.features[path] = output[0] if isinstance(output, tuple) else output

        return hook

    def __enter__(self) -> FeatureTaps:
        return self.attach()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()


def tap_paths(model: nn.Module, names: Iterable[str]) -> list[str]:
    """Module paths for tap names of ``model.feature_taps()`` (e.g. ``["head", "body"]``), with a clear error."""
    taps = feature_taps(unwrap_model(model))
    try:
        return [taps[n] for n in names]
    except KeyError as exc:
        raise SrkdError(
            f"unknown feature tap name {exc} (known: head, body, body.0 ... body.{len(taps) - 3})"
        ) from None


def model_body(model: nn.Module) -> nn.Sequential:
    """The model's ``body`` (the blocks that feature KD taps and progressive distillation splits)."""
    body = getattr(unwrap_model(model), "body", None)
    if not isinstance(body, nn.Sequential):
        raise SrkdError(f"{type(model).__name__} has no 'body' sequence of blocks to split into segments")
    return body


def body_block_paths(model: nn.Module) -> list[str]:
    """Module paths of the body's blocks in order, from the model's tap table (``body.0``, ``body.1``...).

    Read through the taps rather than a ``body`` attribute, so architectures that keep their authors' module
    names (BSRN's ``B1``..``B8``, IMDN's ``IMDB1``..) split into segments like EDSR's ``body.<i>``.
    """
    taps = feature_taps(unwrap_model(model))
    paths: list[str] = []
    while f"body.{len(paths)}" in taps:
        paths.append(taps[f"body.{len(paths)}"])
    if not paths:
        raise SrkdError(f"{type(unwrap_model(model)).__name__} names no body blocks in feature_taps()")
    return paths


def segment_paths(model: nn.Module, n: int) -> list[str]:
    """Output paths of ``n`` equal segments of the body (FAKD uses 3); the last one ends at the last block.

    With ``B`` blocks, segment ``k`` ends at block ``(k + 1) * B // n - 1``.
    """
    blocks = body_block_paths(model)
    if not 1 <= n <= len(blocks):
        raise SrkdError(f"cannot split a body of {len(blocks)} blocks into {n} segments (need 1 <= n <= {len(blocks)})")
    return [blocks[(k + 1) * len(blocks) // n - 1] for k in range(n)]


__all__ = ["FeatureTaps", "body_block_paths", "feature_taps", "model_body", "segment_paths", "standard_taps", "tap_paths", "unwrap_model"]
