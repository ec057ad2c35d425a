"""``srkd.distill``: distil a super-resolution network from Python, with the engine ``srkd train`` runs.

    import srkd
    result = srkd.distill(teacher, student, method="kd", train="T91", val="Set5", iterations=2000)
    result.student, result.metrics, result.run_dir

``teacher`` and ``student`` are each an ``nn.Module`` or a string naming one: ``zoo:NAME`` or an srkd checkpoint
(a checkpoint student is warm-started from its weights), or an architecture spec ``arch[:key=value,...]`` (e.g.
``"edsr:n_feats=32,n_resblocks=16"``). The call builds a :class:`~srkd.engine.config.TrainConfig`, exactly what a
YAML file gives ``srkd train``, and runs the engine on it (:func:`srkd.engine.prebuilt.train_modules` for the
modules), so the run folder holds the same ``config.yaml``, ``log.jsonl``, checkpoints and weights, and a run
interrupted or re-run with the same ``out`` continues where it stopped.

A module srkd did not build is used as it is, provided it maps ``(N, C, h, w)`` images in [0, 1] to
``(N, C, s*h, s*w)``; for the run it is given ``scale``, ``colour`` ("rgb") and ``spec`` attributes when it lacks
them (taken away again afterwards), so ``last.safetensors`` holds its ``state_dict`` under its own key names
(read it with ``safetensors.torch.load_file``; srkd's own commands cannot rebuild such a module). Methods that
need srkd's architecture (FAKD's feature taps, CSD's slimmable network, progressive growth of the body) refuse such
a module; growth (``progressive``) is off unless asked for.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file

from srkd.checkpoint.io import load_model, read_metadata
from srkd.config_base import validate
from srkd.distill import get_method
from srkd.distill.base import MethodConfig
from srkd.engine.config import TrainConfig
from srkd.engine.prebuilt import train_modules
from srkd.errors import ConfigError
from srkd.models import ARCHITECTURES, ModelSpec
from srkd.models.base import find_spec, upsamples_input
from srkd.models.spec import parse_spec
from srkd.models.taps import unwrap_model

ModelArg = nn.Module | str | Path
SECTIONS = ("data", "optim", "sched", "train")  # config sections whose keys ``**overrides`` may name


@dataclass
class Result:
    """What :func:`distill` returns.

    ``student``: the trained network (the caller's module, trained in place, or one srkd built), in eval mode,
    holding the weights of ``run_dir/last.safetensors`` (the EMA average when ``ema`` is on).
    ``metrics``: the last validation, ``{set: {"psnr_y": dB, "ssim_y": ...}}`` (empty without ``val``).
    ``run_dir``: the run folder (``config.yaml``, ``log.jsonl``, ``last.safetensors``, ``best.safetensors``).
    """

    student: nn.Module
    metrics: dict[str, dict[str, float]]
    run_dir: Path


def _is_checkpoint(text: str) -> bool:
    return text.startswith("zoo:") or Path(text).is_file() or text.endswith(".safetensors")


def _section(model: ModelArg, role: str) -> dict[str, Any]:
    """The config section (``student:`` / ``teacher:``) of a string; a module's is a label (see module doc)."""
    if isinstance(model, nn.Module):
        net = unwrap_model(model)
        spec = find_spec(net)
        if spec is not None and spec.arch in ARCHITECTURES:
            return {"arch": spec.arch, "kwargs": dict(spec.kwargs)}
        return {"arch": _label(net)}
    text = str(model)
    if _is_checkpoint(text):
        if role == "teacher":
            return {"checkpoint": text}
        meta = read_metadata(text)
        return {"arch": meta["arch"], "kwargs": dict(meta["kwargs"]), "init": text}
    arch, kwargs = parse_spec(text)
    if arch.lower() not in ARCHITECTURES:
        raise ConfigError(
            f"{role} {text!r}: neither a checkpoint (a file, zoo:NAME) nor an architecture spec arch[:key=value,...] "
            f"(architectures: {', '.join(sorted(ARCHITECTURES))})"
        )
    return {"arch": arch.lower(), "kwargs": kwargs}


def _label(net: nn.Module) -> str:
    """How a module srkd did not build is named in the run's config.yaml and weights file."""
    return f"module:{type(net).__module__}.{type(net).__qualname__}"


def _scale_of(model: ModelArg | None, section: dict[str, Any] | None) -> int | None:
    if isinstance(model, nn.Module):
        value = getattr(unwrap_model(model), "scale", None)
        return int(value) if isinstance(value, int) else None
    if section is None:
        return None
    if "checkpoint" in section:
        return int(read_metadata(section["checkpoint"])["scale"])
    value = section.get("kwargs", {}).get("scale")
    return int(value) if isinstance(value, int) else None


def _resolve_scale(scale: int | None, pairs: Sequence[tuple[str, ModelArg | None, dict[str, Any] | None]]) -> int:
    """``scale`` when given, else the one the networks carry; the networks may not disagree with it."""
    found = {role: s for role, model, sec in pairs if (s := _scale_of(model, sec)) is not None}
    for role, model, _sec in pairs:
        if isinstance(model, nn.Module) and upsamples_input(model):
            found.pop(role, None)  # pre-upsampling networks (VDSR) serve any scale
    if scale is None:
        if not found:
            raise ConfigError("give scale=: neither the teacher nor the student carries a `scale` attribute")
        scale = next(iter(found.values()))
    for role, value in found.items():
        if value != scale:
            raise ConfigError(f"the {role} upscales x{value} but the run's scale is x{scale}")
    return int(scale)


def _config_path(name: str, method_config: type[MethodConfig]) -> list[str]:
    """Where a ``distill(..., name=value)`` override goes in the config: ``section__key`` spells it out; a plain
    key is looked up in the sections (data, optim, sched, train) and the method's own config, and must be
    found in exactly one."""
    if "__" in name:
        return name.split("__")
    hits = [[name]] if name in ("seed", "name") else []
    for section in SECTIONS:
        model = TrainConfig.model_fields[section].annotation
        if name in getattr(model, "model_fields", {}):
            hits.append([section, name])
    if name in method_config.model_fields and name != "name":
        hits.append(["method", name])
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise ConfigError(f"distill(): unknown setting {name!r}: give a config key as section__key, e.g. "
                          "train__ema=0.999, data__batch_size=8, method__pix_weight=5")
    raise ConfigError(f"distill(): {name!r} is ambiguous: write one of {', '.join('__'.join(h) for h in hits)}")


@contextlib.contextmanager
def _adopted(model: nn.Module | None, scale: int) -> Iterator[None]:
    """Give a module the attributes the engine reads (``scale``, ``colour``, ``spec``) for the run, and put
    the module back as it was afterwards (those attributes, and the teacher's ``requires_grad`` flags and mode,
    which the engine freezes)."""
    if model is None:
        yield
        return
    net = unwrap_model(model)
    added = []
    for attr, value in (("scale", scale), ("colour", "rgb"), ("spec", ModelSpec(_label(net), {}))):
        if not hasattr(net, attr):
            setattr(net, attr, value)
            added.append(attr)
    flags, mode = [p.requires_grad for p in net.parameters()], net.training
    try:
        yield
    finally:
        for attr in added:
            delattr(net, attr)
        for p, flag in zip(net.parameters(), flags):
            p.requires_grad_(flag)
        net.train(mode)


def _last_validation(run_dir: Path) -> dict[str, dict[str, float]]:
    records = []
    log = run_dir / "log.jsonl"
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                rec = json.loads(line)
                if isinstance(rec, dict) and rec.get("type") == "val":
                    records.append(rec)
    if not records:
        return {}
    last = max(r["step"] for r in records)
    return {r["set"]: {"psnr_y": r["psnr_y"], "ssim_y": r["ssim_y"]} for r in records if r["step"] == last}


def _trained_student(module: nn.Module | None, weights: Path) -> nn.Module:
    """The run's shipped weights in the caller's module; srkd rebuilds them when there is none, or when the
    method ships another network than it trains (CSD: the slim part of its slimmable network)."""
    if module is not None:
        net = unwrap_model(module)
        own = net.state_dict()
        state = load_file(str(weights))
        if state.keys() == own.keys():
            device = next(iter(own.values())).device if own else torch.device("cpu")
            net.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)
            return module
    model, _meta = load_model(weights)
    return model


def _as_list(value: str | Path | Sequence[str | Path] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [str(value)]
    return [str(v) for v in value]


def distill(
    teacher: ModelArg | None,
    student: ModelArg,
    method: str = "kd",
    *,
    scale: int | None = None,
    train: str | Path | Sequence[str | Path] | None = None,
    val: str | Path | Sequence[str | Path] | None = None,
    iterations: int = 1000,
    out: str | Path | None = None,
    resume: str | None = "auto",
    **overrides: Any,
) -> Result:
    """Distil ``teacher`` into ``student`` with ``method`` and return the trained student.

    ``method``: ``scratch`` (no teacher), ``kd``, ``fakd``, ``csd``, ``dukd`` or ``datafree`` (no ``train``).
    ``scale``: needed only when neither network carries a ``scale`` attribute (or spec/checkpoint scale).
    ``train``/``val``: folders of HR images or dataset names (``T91``, ``Set5``, ``samples-train``...).
    ``out``: the run folder (default ``runs/distill-<method>-x<scale>``); ``resume="auto"`` continues the run
    found there, ``None`` refuses to start where one exists. ``**overrides``: any config key, by its name when
    that is unique (``batch_size=8``, ``lr=2e-4``, ``ema=0.999``, ``pix_weight=5``) or as ``section__key``
    (``train__val_every=500``). Errors are :class:`~srkd.errors.SrkdError` subclasses with one-line messages.
    """
    method_module = get_method(method)  # ConfigError naming the known methods
    method = method.lower()
    if teacher is None and method_module.Method.needs_teacher:
        raise ConfigError(f"method {method!r} needs a teacher")
    t_section = _section(teacher, "teacher") if teacher is not None else None
    s_section = _section(student, "student")
    scale = _resolve_scale(scale, [("teacher", teacher, t_section), ("student", student, s_section)])
    train_sets = _as_list(train)
    if not train_sets and not method_module.Method.provides_batches:
        raise ConfigError(f"method {method!r} trains on images: give train= (a folder of HR images, or a dataset "
                          "name such as 'T91' or 'samples-train')")

    data: dict[str, Any] = {
        "name": f"distill-{method}-x{scale}",
        "scale": scale,
        "student": s_section,
        "method": {"name": method},
        "data": {"train": train_sets, "val": _as_list(val)},
        "train": {"iterations": iterations},
    }
    if t_section is not None:
        data["teacher"] = t_section
    if out is not None:
        data["out_dir"] = str(out)
    for name, value in overrides.items():
        node, path = data, _config_path(name, method_module.Config)
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"distill(): {name!r}: {part!r} is a value, not a section")
        node[path[-1]] = value
    cfg = validate(TrainConfig, data, "srkd.distill")

    s_module = student if isinstance(student, nn.Module) else None
    t_module = teacher if isinstance(teacher, nn.Module) else None
    with _adopted(s_module, scale), _adopted(t_module, scale):
        run_dir = train_modules(cfg, s_module, t_module, resume=resume)
        weights = run_dir / "last.safetensors"
        trained = _trained_student(s_module, weights)
    return Result(trained.eval(), _last_validation(run_dir), run_dir)


__all__ = ["Result", "distill"]
