"""srkd model -> a published key layout (BasicSR's, or the authors' own), so a student can leave srkd.

The rename tables exist once, as the ``rules`` of each architecture's ``LAYOUTS`` (published key -> srkd key,
see :mod:`srkd.models.layout`); this module runs them backwards instead of keeping a second table:

- a rule ``(pattern, template)`` is inverted by reading the template as the pattern to look for in srkd's keys
  (each ``\\N`` standing for group N of the published pattern) and the pattern as the template to write. A
  published index the pattern does not capture (EDSR-PyTorch's ``body\\.\\d+\\.(weight|bias)``: the conv after the
  blocks) is the next free index of that ``nn.Sequential``: the official code appends that conv after the blocks;
- every key produced is run forward through the same rules and must come back unchanged, so an inverse that
  drifts from the layout is an error here, not a file that half-loads elsewhere;
- keys the layout *drops* on the way in (tensors the published code stores but srkd computes: SwinIR's
  ``relative_position_index`` and ``attn_mask``, the frozen ``sub_mean``/``add_mean`` convs of EDSR-PyTorch,
  RCAN and CARN-M) are written back, because the published classes load with ``strict=True``: the non-persistent
  buffers srkd keeps under those names, and the mean-shift convs and shifted-window masks built here. Each of
  them must again be a key the layout drops.

:func:`to_layout` returns the state dict; :func:`export_checkpoint` writes it the way the target tool reads it
(``torch.save({"params": sd})`` for BasicSR, a plain state dict for the official code).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from srkd.checkpoint.io import load_model
from srkd.errors import CheckpointError
from srkd.models import all_layouts, model_spec
from srkd.models.layout import Layout
from srkd.models.swinir_arch import SwinLayer, shifted_window_mask
from srkd.models.taps import unwrap_model

TARGETS = ("basicsr", "official")


# ---------------------------------------------------------------------------------------------------------------
# Inverting one rule
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Inverse:
    """A rename rule read backwards: ``find`` matches srkd keys; ``parts`` rebuild the published key."""

    find: re.Pattern[str]
    parts: tuple[tuple[str, str], ...]  # ("text", s) | ("group", "gN") | ("index", "") (a free \d+)

    @property
    def has_free_index(self) -> bool:
        return any(kind == "index" for kind, _ in self.parts)

    def fill(self, match: re.Match[str], index: int | None = None) -> str:
        out = []
        for kind, value in self.parts:
            out.append(value if kind == "text" else match.group(value) if kind == "group" else str(index))
        return "".join(out)

    def prefix(self, match: re.Match[str]) -> str:
        """The published key up to its free index (where the sibling indices are counted)."""
        out = []
        for kind, value in self.parts:
            if kind == "index":
                break
            out.append(value if kind == "text" else match.group(value))
        return "".join(out)


_LITERAL_ESCAPES = set(".[](){}*+?|^$\\-/_")


def _split_pattern(pattern: str) -> list[tuple[str, str]]:
    """A published-key regex as literal text, capturing groups (their regex) and free ``\\d+`` indices.

    Only what layout rules use is understood; anything else raises ValueError (caught by the layout tests)."""
    parts: list[tuple[str, str]] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1]
            if nxt in _LITERAL_ESCAPES:
                parts.append(("text", nxt))
                i += 2
            elif pattern.startswith("\\d+", i):
                parts.append(("index", ""))
                i += 3
            else:
                raise ValueError(f"cannot invert {pattern!r}: escape \\{nxt}")
        elif c == "(":
            depth, j = 0, i
            while True:
                if pattern[j] == "\\":
                    j += 2
                    continue
                depth += {"(": 1, ")": -1}.get(pattern[j], 0)
                if depth == 0:
                    break
                j += 1
            body = pattern[i + 1 : j]
            if body.startswith("?"):
                raise ValueError(f"cannot invert {pattern!r}: non-capturing group")
            parts.append(("group", body))
            i = j + 1
        elif c in ".*+?|[]{}^$":
            raise ValueError(f"cannot invert {pattern!r}: bare {c!r} outside a group")
        else:
            parts.append(("text", c))
            i += 1
    return parts


def invert_rule(pattern: str, template: str) -> _Inverse:
    """The inverse of the rename ``re.sub(pattern, template, key)`` (see the module docstring)."""
    split = _split_pattern(pattern)
    groups = [body for kind, body in split if kind == "group"]
    used: set[int] = set()
    find = []
    for piece in re.split(r"(\\\d)", template):
        if re.fullmatch(r"\\\d", piece):
            n = int(piece[1])
            find.append(f"(?P=g{n})" if n in used else f"(?P<g{n}>{groups[n - 1]})")
            used.add(n)
        else:
            find.append(re.escape(piece))
    parts: list[tuple[str, str]] = []
    n = 0
    for kind, body in split:
        if kind == "group":
            n += 1
            if n not in used:
                raise ValueError(f"cannot invert {pattern!r} -> {template!r}: group {n} is not kept")
            parts.append(("group", f"g{n}"))
        else:
            parts.append((kind, body))
    return _Inverse(re.compile("".join(find)), tuple(parts))


# ---------------------------------------------------------------------------------------------------------------
# Constants the published code stores and srkd computes
# ---------------------------------------------------------------------------------------------------------------


def _mean_shift_convs(prefix: str, fixed_range: float) -> Callable[[nn.Module], dict[str, torch.Tensor]]:
    """The frozen 1x1 ``sub_mean``/``add_mean`` convs of EDSR-PyTorch, RCAN and CARN-M: identity weights and
    bias ``-/+ range * mean``; their code has no img_range argument, so the model must use theirs."""

    def build(model: nn.Module) -> dict[str, torch.Tensor]:
        shift = getattr(model, "shift")  # noqa: B009 - srkd's MeanShift (models.blocks)
        if float(shift.img_range) != fixed_range:
            raise CheckpointError(
                f"the published code works on images in [0, {fixed_range:g}] but this model has img_range "
                f"{shift.img_range:g}; convert it --to basicsr, or train with img_range {fixed_range:g}"
            )
        mean = shift.mean.detach().float().cpu().flatten()
        eye = torch.eye(mean.numel()).view(mean.numel(), mean.numel(), 1, 1)
        out = {}
        for name, sign in (("sub_mean", -1.0), ("add_mean", 1.0)):
            out[f"{name}{prefix}.weight"] = eye.clone()
            out[f"{name}{prefix}.bias"] = sign * fixed_range * mean
        return out

    return build


def _swinir_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """``attn_mask`` of every shifted Swin layer for the ``img_size`` the published SwinIR precomputes it for
    (it computes masks for other sizes at run time, as srkd does for every size)."""
    size = int(model_spec(model).kwargs.get("img_size", 64))
    out = {}
    for name, layer in model.named_modules():
        if isinstance(layer, SwinLayer) and layer.shift:
            if size <= layer.window_size:
                raise CheckpointError(
                    f"img_size {size} is not larger than window_size {layer.window_size}: the published SwinIR "
                    "then shrinks its windows and would not compute what this model does; rebuild with a larger "
                    "img_size (it changes no weight)"
                )
            mask = shifted_window_mask(size, size, layer.window_size, layer.shift, torch.device("cpu"))
            out[f"{name}.attn_mask"] = mask.clone() + 0.0  # -0.0 -> 0.0, as the published code fills it
    return out


# (layout name) -> builder of the dropped constants, named as srkd would name them (mapped like any key)
_CONSTANTS: dict[str, Callable[[nn.Module], dict[str, torch.Tensor]]] = {
    "edsr": _mean_shift_convs("", 255.0),
    "rcan": _mean_shift_convs("", 255.0),
    "carn_m": _mean_shift_convs(".shifter", 1.0),
    "swinir": _swinir_masks,
    "basicsr-swinir": _swinir_masks,
}


# ---------------------------------------------------------------------------------------------------------------
# The conversion
# ---------------------------------------------------------------------------------------------------------------


def target_layout(arch: str, target: str) -> Layout:
    """The layout ``srkd convert --to TARGET`` writes for ``arch``.

    ``official``: the authors' layout (EDSR-PyTorch, RCAN, SwinIR, pytorch-vdsr, or the published names of BSRN,
    SMFANet, IMDN, RFDN, CARN-M, PAN). ``basicsr``: BasicSR's own layout (EDSR, RCAN, SwinIR), or for the
    architectures whose srkd keys are the published ones, those keys (their authors' code is BasicSR-based).
    """
    if target not in TARGETS:
        raise CheckpointError(f"unknown target '{target}' (known: {', '.join(TARGETS)})")
    mine = [lay for lay in all_layouts() if lay.arch == arch]
    if not mine:
        raise CheckpointError(f"{arch}: no published layout to convert to (srkd-only architecture)")
    basicsr = [lay for lay in mine if lay.format == "basicsr"]
    official = [lay for lay in mine if lay.format != "basicsr"]
    if target == "official" and official:
        return official[0]
    if target == "basicsr":
        if basicsr:
            return basicsr[0]
        if official and all(repl is None for _, repl in official[0].rules):  # published names kept
            return official[0]
    raise CheckpointError(f"{arch}: srkd has no {target} layout for it (known: {', '.join(lay.name for lay in mine)})")


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu").clone()


def to_layout(model: nn.Module, layout: Layout) -> dict[str, torch.Tensor]:
    """``model``'s weights under ``layout``'s published key names, dropped constants included.

    Every key is checked by running it forward through ``layout.rename``: a weight must come back as the srkd
    key it came from, a constant must be one the layout drops. CheckpointError when a key has no published name.
    """
    net = unwrap_model(model)
    spec = model_spec(net)
    if spec.arch != layout.arch:
        raise CheckpointError(f"a {spec.arch} model cannot be written in the {layout.name} layout")
    inverses = [(invert_rule(p, r), p) for p, r in layout.rules if r is not None]
    state = {k: _cpu(v) for k, v in net.state_dict().items()}
    persistent = set(state)
    constants = {k: _cpu(b) for k, b in net.named_buffers() if k not in persistent}
    build = _CONSTANTS.get(layout.name)
    built = build(net) if build is not None else {}
    constants.update(built)

    def accepts(key: str, candidate: str, constant: bool) -> bool:
        back = layout.rename(candidate)
        return back is None if constant else back == key

    out: dict[str, torch.Tensor] = {}
    deferred: list[tuple[str, _Inverse, re.Match[str], bool]] = []
    for items, constant in ((state, False), (constants, True)):
        for key in items:
            for inverse, _pattern in inverses:
                match = inverse.find.fullmatch(key)
                if match is None:
                    continue
                if inverse.has_free_index:
                    deferred.append((key, inverse, match, constant))
                    break
                candidate = inverse.fill(match)
                if accepts(key, candidate, constant):
                    out[candidate] = items[key]
                    break
            else:
                if accepts(key, key, constant):
                    out[key] = items[key]
                elif not constant:
                    raise CheckpointError(f"{key}: no name for it in the {layout.name} layout")
                elif key in built:
                    raise CheckpointError(f"{key}: built for the {layout.name} layout but not a key it drops")
    taken = list(out)
    for key, inverse, match, constant in deferred:
        prefix = inverse.prefix(match)
        siblings = [int(m.group(1)) for k in taken if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))]
        candidate = inverse.fill(match, max(siblings, default=-1) + 1)
        if not accepts(key, candidate, constant):
            raise CheckpointError(f"{key}: no name for it in the {layout.name} layout")
        out[candidate] = (state if not constant else constants)[key]
    return out


def _save_atomic(payload: Any, dst: Path) -> None:
    """``torch.save`` to a temporary twin renamed over ``dst``: an interrupted write leaves no half file."""
    tmp = None
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
        os.close(fd)
        torch.save(payload, tmp)
        os.replace(tmp, dst)
        tmp = None
    except OSError as exc:
        raise CheckpointError(f"{dst}: cannot write ({exc.strerror or exc})") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def export_checkpoint(
    src: str | Path, dst: str | Path, target: str, *, dtype: torch.dtype | None = None
) -> dict[str, Any]:
    """Write the srkd checkpoint ``src`` as a ``target`` (``basicsr`` | ``official``) PyTorch file ``dst``.

    BasicSR reads ``{"params": state_dict}`` (``torch.save``); the official repositories read a plain state
    dict. Returns a summary: ``layout``, ``arch``, ``kwargs``, ``keys``, ``path``, ``wrapper``.
    """
    if target not in TARGETS:
        raise CheckpointError(f"unknown target '{target}' (known: {', '.join(TARGETS)})")
    model, meta = load_model(src)
    layout = target_layout(meta["arch"], target)
    try:
        state = to_layout(model, layout)
    except CheckpointError as exc:
        raise CheckpointError(f"{src}: cannot write the {layout.name} layout: {exc}") from None
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    dst = Path(dst)
    if dst.exists() and dst.resolve() == Path(src).resolve():
        raise CheckpointError(f"{dst}: the output would overwrite the input")
    payload: Any = {"params": state} if target == "basicsr" else state
    _save_atomic(payload, dst)
    return {
        "layout": layout.name,
        "arch": meta["arch"],
        "kwargs": meta["kwargs"],
        "scales": meta["scales"],
        "keys": len(state),
        "path": str(dst),
        "wrapper": "params" if target == "basicsr" else None,
    }


__all__ = ["TARGETS", "export_checkpoint", "invert_rule", "target_layout", "to_layout"]
