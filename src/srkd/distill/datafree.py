"""Data-free distillation for SR (DFSR, Zhang et al., CVPR 2021): the student never sees a real image.

A generator ``G`` (supplement Table 1) turns Gaussian codes into low-resolution images. The student learns the
teacher on them (Eq. 1/5, ``L_KD = |T(G(z)) - S(G(z))|``) and every ``gen_every`` student steps the generator
takes one step of its own Adam on (Eq. 4)::

    L_G = L_GEN + w_R * L_R,   L_GEN = -log(L_KD + 1),   L_R = |R(T(G(z))) - G(z)|,   R = bicubic 1/s

``L_GEN`` is adversarial (hard samples: where the student still disagrees with the teacher, DFAD) and keeps the
samples diverse; ``L_R`` asks for images the teacher treats as natural LR images (its output, downscaled again,
gives the input back). The teacher is frozen but *not* under ``no_grad`` there: the generator's gradient flows
through it. Progressive distillation grows the student body segment by segment; the generator survives growth.

Pre-upsampling students (VDSR) are scale-agnostic: one generator per scale, of size ``image_size // s``, and each
batch (and each generator update) picks one scale at random. The scale of a batch is recovered from its size, so
the engine's :class:`~srkd.distill.base.Batch` needs no extra field.

Switches give the paper's baselines and ablations (Table 2): ``inputs: noise`` (M1, no generator is built),
``adversarial``/``reconstruction``/``progressive`` (M2, DFAD, M3, M4, full), ``w_r`` (Fig. 4). ``growth_init:
identity`` (not in the paper) starts each stage's new blocks as identity maps, so growth does not perturb the student.

**Paper or published code** (``fidelity``, the torchdistill way of naming a discrepancy between a paper and its
code). ``paper`` (the default) back-propagates ``L_G`` through the teacher and the student, as Eq. 4 says. The
published code does not: the MATLAB-bicubic module it upsamples generated images with (pre-upsampling networks,
VDSR) ends in ``round(255 x) / 255``, whose gradient is zero, so ``L_GEN`` never reaches the generator and ``L_R``
reaches it only through its direct ``G(z)`` argument, ``R(T(up(G(z))))`` acting as a constant target (see
``../shared/notes/reference-implementations.md``). ``code`` trains on that effective objective:

- pre-upsampling networks (VDSR) are fed ``round(255 * clamp(up(x))) / 255`` in both the student and the generator
  step, and ``R`` rounds to 8 bits too (the published module does after every resize);
- no gradient crosses the rounding: the networks' inputs are detached (equal to what autograd computes through
  ``torch.round``, exact zeros, without back-propagating zeros through both networks), so ``L_GEN`` is logged but
  has no gradient, and ``L_R = crit(G(z), sg(R(T(q(up(G(z)))))))``;
- networks that take the LR directly (EDSR, CARN-M): the published code has no such path. ``code`` then means
  the same effective objective transplanted: the networks see the generated image rounded to 8 bits (what any
  stored LR image is), with the same stop-gradient, so the generator is again trained only towards the fixed point
  of "super-resolve with the teacher, downscale". That is an extrapolation of the published code, not a
  reproduction of it.

What is in the switch and what is in configs: the switch holds only what no other key can express, the gradient
paths (and the rounding that causes them). Everything that already has a key stays a key, so that the ablations of
issue 37 can cross them ("which change bought what"): the published criterion (``gen_criterion: mse``,
``gen_reduction: sum``, and for the student ``criterion: mse``, ``kd_reduction: sum``), ``w_r``, ``gen_every``,
``gen_lr``, the student's SGD (``optim``, ``sched``, ``train.grad_clip``). ``configs/dfsr-vdsr-code-paper.yaml``
sets all of them as the published demo does; ``datafree-vdsr-quick.yaml`` already uses the summed MSE.

``upcycle`` (off by default) applies DUKD's zoom-in, zoom-out and invertible augmentations to the generated
images in the student step (:mod:`srkd.distill.upcycle`). ``inputs: images`` is the data-trained control: real
patches of ``images`` at a random scale per batch (:mod:`srkd.distill.scale_patches`), the same student, budget
and scale coverage as a data-free run, trained on the HR images (``images_target: hr``) or the teacher.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from srkd.config_base import Milestones, step_decay
from srkd.data.images import write_image
from srkd.distill.base import Batch, MethodConfig, teacher_chunk
from srkd.distill.base import Method as MethodBase
from srkd.distill.scale_patches import ScalePatches, run_seed
from srkd.distill.upcycle import UpcycleConfig, augmentations, zoom_in_inputs, zoom_out_input
from srkd.errors import ConfigError, SrkdError, TrainingError
from srkd.models import build_model, get_class, run_sr, to_channels_last
from srkd.models.base import find_spec, model_colour, upsamples_input
from srkd.models.taps import model_body, unwrap_model
from srkd.ops.imresize import imresize

# Names of the constructor argument that sets the body depth, with how many non-body layers it also counts.
DEPTH_KWARGS = ("n_resblocks", "n_layers", "n_blocks")


class Config(MethodConfig):
    name: Literal["datafree"] = Field("datafree", description="data-free distillation (DFSR)")
    inputs: Literal["generator", "noise", "images"] = Field(
        "generator", description="what the student learns on: a generator's images (DFSR), uniform noise (the "
        "paper's M1 baseline) or real patches of `images` (the data-trained control at equal budget)")
    images: list[str] = Field(default_factory=list, description="inputs: images: dataset names or HR folders")
    images_target: Literal["hr", "teacher"] = Field(
        "hr", description="inputs: images: learn the HR images or the teacher's output on them")
    fidelity: Literal["paper", "code"] = Field(
        "paper", description="the paper's gradients, or the published code's effective generator objective "
        "(8-bit rounded upsampling with zero gradient, L_R against a detached target; module docstring)")
    upcycle: UpcycleConfig = Field(default_factory=UpcycleConfig,
                                   description="data-free upcycling: DUKD's augmentations on generated images")
    # "lr" is the like-for-like control (noise made at LR size and upscaled like a generator's output).
    noise_size: Literal["lr", "input"] = Field(
        "lr", description="pre-upsampling students' M1 noise: LR-size and bicubic-upscaled, or at input size")
    adversarial: bool = Field(True, description="L_GEN = -log(1 + L_KD) in the generator loss")
    reconstruction: bool = Field(True, description="L_R = |R(T(G(z))) - G(z)| in the generator loss")
    progressive: bool = Field(True, description="grow the student body in len(stages) segments")
    stages: list[int] = Field(default_factory=list,
                              description="student iterations per stage; the last runs to the end")
    # "random" (the paper: the new segment is new) makes the output jump at each growth; "identity" starts each
    # new block as the identity map (zero residual branch, Dirac kernel for VDSR), so S_k computes S_{k-1}.
    growth_init: Literal["random", "identity"] = Field(
        "random", description="how a stage's new blocks start: freshly initialised, or as identity maps")
    # A fresh Adam's first step moves every weight by about the lr, which is what knocks the grown student's PSNR
    # down for a while (measured in the demo: 21-25 dB one step after growth, from 31+).
    stage_optimizer: Literal["restart", "carry"] = Field(
        "restart", description="at each growth a fresh optimiser and schedule (the reference code), or carry the "
        "kept weights' Adam moments and one schedule over the run")
    w_r: float = Field(1.0, ge=0.0, description="weight of L_R in the generator loss")
    criterion: Literal["l1", "mse"] = Field("l1", description="the student's L_KD (Eq. 1/5)")
    kd_reduction: Literal["mean", "sum"] = Field(
        "mean", description="reduction of the student's loss; the published code sums")
    # "mean" is the paper's Eq. 1-2; the reference code uses MSE with "sum". It matters: with a mean, L_KD << 1
    # and -log(1 + L_KD) ~ -L_KD, so both terms are linear in the samples' contrast and no contrast is stable
    # (the samples fade to flat or saturate); with a sum, -log(1 + L_KD) ~ -log L_KD does not depend on the
    # contrast, and the contrast settles where L_R (per pixel) ~ 1 / (w_r * pixels in the batch).
    gen_criterion: Literal["l1", "mse"] | None = Field(
        None, description="the generator's L_KD and L_R criterion (None: as the student's)")
    gen_reduction: Literal["mean", "sum"] = Field("mean", description="reduction of the generator's losses")
    gen_every: int = Field(50, ge=1, description="k: student steps per generator step")
    gen_lr: float = Field(1e-5, gt=0.0, description="the generator's Adam learning rate")
    gen_betas: tuple[float, float] = Field((0.9, 0.999), description="the generator's Adam betas")
    gen_milestones: Milestones = Field(
        default_factory=list, description="student iterations at which the generator's lr decays (or gen_step_size)")
    gen_step_size: int | None = Field(None, ge=1, description="decay the generator's lr every N student iterations")
    gen_gamma: float = Field(0.1, gt=0.0, description="the generator's lr decay factor")
    gen_batch_size: int | None = Field(None, ge=2, description="generator batch (default: the student's)")
    image_size: int = Field(48, ge=8, description="the student's input size (VDSR: after the bicubic upscale)")
    latent_dim: int = Field(256, ge=1, description="size of the generator's latent vector z")
    scales: list[int] | None = Field(
        None, description="pre-upsampling students only, e.g. [2, 3, 4]: one generator per scale (default [scale])")
    nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="a NaN/inf generator loss stops the run or skips that update")
    max_skips: int = Field(10, ge=0, description="with nonfinite: skip, skipped generator updates allowed before the run stops")
    sample_every: int = Field(
        0, ge=0, description="write a grid of samples and their teacher SR every N iterations (0: never)")

    def check_budget(self, iterations: int) -> str | None:
        # Growth happens at fixed iterations: a run shorter than the stages (a recipe's train.iterations cut to
        # fit a budget) would end on a shallower student than configured, and ship it without a word.
        if not self.progressive or sum(self.stages[:-1]) < iterations:
            return None
        hint = scaled_stages(self.stages, iterations) if iterations >= len(self.stages) else None
        return (f"method.stages {self.stages}: the student reaches its full depth at iteration "
                f"{sum(self.stages[:-1])}, but train.iterations is {iterations}, so the run would end with a "
                f"shallower student than configured; "
                + (f"scale the stages with the budget, e.g. --set \"method.stages={hint}\"" if hint else
                   "give at least one iteration per stage"))

    def stage_lengths(self, iterations: int) -> list[int]:
        if not self.progressive or self.carry_optimizer():
            return [iterations]
        heads = self.stages[:-1]
        return [*heads, max(0, iterations - sum(heads))]

    def carry_optimizer(self) -> bool:
        return self.stage_optimizer == "carry"

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.progressive and len(self.stages) < 2:
            raise PydanticCustomError(
                "stages", "progressive distillation needs 'stages' with at least 2 stage lengths (P = len(stages))"
            )
        if any(s < 1 for s in self.stages):
            raise PydanticCustomError("stages", "stage lengths must be >= 1 iteration")
        if self.gen_step_size is not None and self.gen_milestones:
            raise PydanticCustomError("gen_sched", "give either 'gen_milestones' or 'gen_step_size', not both")
        if self.inputs != "generator" and (self.adversarial or self.reconstruction):
            raise PydanticCustomError(
                "inputs", "inputs: {i} has no generator: set adversarial: false and reconstruction: false",
                {"i": self.inputs},
            )
        if (self.inputs == "images") != bool(self.images):
            raise PydanticCustomError("images", "'images' (training images) goes with inputs: images, and only there")
        if self.inputs == "images" and self.images_target == "hr" and self.upcycle.active:
            raise PydanticCustomError("upcycle", "method.upcycle distils the teacher: set images_target: teacher")
        return self


def quantize8(x: torch.Tensor) -> torch.Tensor:
    """``round(255 x) / 255`` as the published MATLAB-bicubic module ends, detached: autograd's gradient of
    ``torch.round`` is exactly zero, so detaching changes no gradient and spares the backward passes that would
    only carry those zeros."""
    return torch.round(x.detach() * 255.0) / 255.0


def scaled_stages(stages: list[int], iterations: int) -> list[int]:
    """``stages`` rescaled to a run of ``iterations`` steps, same proportions, each at least 1."""
    total = sum(stages)
    heads = [max(1, round(s * iterations / total)) for s in stages[:-1]]
    return [*heads, max(1, iterations - sum(heads))]


def pairwise_l1(x: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between the distinct samples of a batch: falls towards 0 when the generator collapses."""
    flat = x.detach().float().flatten(1)
    n = flat.shape[0]
    return torch.cdist(flat, flat, p=1).sum() / (n * (n - 1) * flat.shape[1])


def body_split(n_blocks: int, segments: int) -> list[int]:
    """Body depth of each stage S_0..S_{P-1} when ``n_blocks`` are split into ``segments`` near-equal parts."""
    sizes = [n_blocks // segments + (1 if i < n_blocks % segments else 0) for i in range(segments)]
    return [sum(sizes[: i + 1]) for i in range(segments)]


def _layout(x: torch.Tensor) -> torch.memory_format:
    """The memory format of a batch (the engine may hand over channels_last ones): stacked inputs keep it."""
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


class Method(MethodBase):
    cfg: Config
    provides_batches = True

    def __init__(self, student: nn.Module, teacher: nn.Module | None, cfg: MethodConfig, scale: int) -> None:
        if teacher is None:
            raise ConfigError("method 'datafree' needs a teacher (the 'teacher' section)")
        super().__init__(student, teacher, cfg, scale)
        cfg = self.cfg
        self.pre_upsampling = upsamples_input(student)
        self.scales = list(cfg.scales) if cfg.scales else [scale]
        if not self.pre_upsampling and self.scales != [scale]:
            raise ConfigError(
                f"method.scales {self.scales}: only pre-upsampling students (VDSR) can mix scales; "
                f"this student has a fixed x{scale} upsampler"
            )
        self.channels = int(getattr(unwrap_model(student), "in_channels", 3))
        # LR size per scale; sizes must differ so that a batch's size tells its scale.
        self.lr_size = {s: cfg.image_size // s if self.pre_upsampling else cfg.image_size for s in self.scales}
        if len(set(self.lr_size.values())) != len(self.scales):
            raise ConfigError(f"method.image_size {cfg.image_size} gives equal LR sizes for scales {self.scales}")
        self.size_to_scale = {v: s for s, v in self.lr_size.items()}
        # Input-size noise for a pre-upsampling student is fed as is (its scale does not matter).
        self.raw_input_noise = cfg.inputs == "noise" and cfg.noise_size == "input" and self.pre_upsampling

        # The method's own random stream (codes, noise, scale choice), saved with the run for exact resumes. It is
        # seeded on first use, from the global stream the engine has seeded per rank by then.
        self._rng: torch.Generator | None = None
        self._last_batch_size = 16
        self.generators = nn.ModuleDict()
        self.gen_optimizers: dict[int, torch.optim.Adam] = {}
        if cfg.inputs == "generator":
            for s in self.scales:
                try:
                    g = build_model("generator", image_size=self.lr_size[s], channels=self.channels,
                                    latent_dim=cfg.latent_dim)
                except SrkdError as exc:
                    raise ConfigError(f"method.image_size {cfg.image_size} at x{s}: {exc}") from None
                self.generators[str(s)] = g
                self.gen_optimizers[s] = torch.optim.Adam(g.parameters(), lr=cfg.gen_lr, betas=cfg.gen_betas)
        # inputs: images: real patches at each scale's LR size, read now so that a wrong path fails before training
        self.patches = (ScalePatches(cfg.images, self.lr_size, model_colour(student),
                                     run_seed()) if cfg.inputs == "images" else None)
        self.image_batches = 0  # batches of real patches drawn so far (saved: a resumed run draws the next one)
        self.code = cfg.fidelity == "code"
        self.skipped = 0
        self.run_dir: Path | None = None  # set by the engine; sample grids go to run_dir/samples
        self._autocast: tuple[str, torch.dtype] | None = None

        # Progressive distillation: S_0 = head + B_0 + tail, then B_1... appended (body split in P segments).
        self.stage = 0
        self.stage_ends: list[int] = []
        if cfg.progressive:
            self._init_progressive(len(cfg.stages))

    # -- progressive distillation ------------------------------------------------------------------------
    def _init_progressive(self, segments: int) -> None:
        full = self.raw_student
        spec = find_spec(full)
        if spec is None or not hasattr(full, "body"):
            raise ConfigError("method.progressive needs a registry-built student with a 'body' (see srkd.models)")
        params = inspect.signature(get_class(spec.arch).__init__).parameters
        key = next((k for k in DEPTH_KWARGS if k in params), None)
        if key is None:
            raise ConfigError(f"method.progressive: student '{spec.arch}' has no depth argument ({', '.join(DEPTH_KWARGS)})")
        n_body = len(model_body(full))
        if n_body < segments:
            raise ConfigError(f"method.stages: {segments} stages but the student body has only {n_body} blocks")
        if self.cfg.growth_init == "identity" and not hasattr(model_body(full)[0], "identity_"):
            raise ConfigError(f"method.growth_init 'identity': the blocks of '{spec.arch}' have no identity_()")
        depth = spec.kwargs.get(key, params[key].default)
        self._depth = (spec.arch, dict(spec.kwargs), key, depth - n_body)  # offset: layers outside the body
        self.stage_blocks = body_split(n_body, segments)
        self.stage_ends = [sum(self.cfg.stages[: i + 1]) for i in range(segments - 1)]
        self.student = self._build_stage(0, previous=None, like=full)

    def _build_stage(self, stage: int, previous: nn.Module | None, like: nn.Module) -> nn.Module:
        arch, kwargs, key, offset = self._depth
        kwargs[key] = self.stage_blocks[stage] + offset
        model = build_model(arch, **kwargs)
        if hasattr(like, "scale"):
            model.scale = like.scale
        if previous is not None:
            n_prev, n_now = len(model_body(previous)), len(model_body(model))
            result = model.load_state_dict(previous.state_dict(), strict=False)
            new = {k for k in result.missing_keys if not any(k.startswith(f"body.{j}.") for j in range(n_prev, n_now))}
            if result.unexpected_keys or new:
                raise TrainingError(f"progressive growth: unexpected {result.unexpected_keys}, missing {sorted(new)}")
            if self.cfg.growth_init == "identity":
                for block in list(model_body(model))[n_prev:]:
                    block.identity_()  # type: ignore[operator]  # checked in _init_progressive
        ref = next(like.parameters())
        model = model.to(ref.device)
        if ref.dim() == 4 and ref.is_contiguous(memory_format=torch.channels_last) and not ref.is_contiguous():
            model = to_channels_last(model)
        model.train(self.training)
        return model

    def stage_at(self, step: int) -> int:
        """Stage that iteration ``step`` (completed iterations so far) belongs to: a pure function of the step."""
        return sum(step >= end for end in self.stage_ends)

    def begin_stage(self, step: int) -> bool:
        """Grow the student to the stage of ``step``; True when it was rebuilt (the engine then remakes its
        optimiser, scheduler, EMA and DDP wrapper). Called at the start and on resume before weights load."""
        target = self.stage_at(step) if self.cfg.progressive else 0
        if target == self.stage:
            return False
        if target < self.stage:
            raise TrainingError(f"progressive distillation cannot go back from stage {self.stage} to {target}")
        while self.stage < target:
            old = self.raw_student
            self.stage += 1
            self.student = self._build_stage(self.stage, previous=old, like=old)
        return True

    # -- batches -----------------------------------------------------------------------------------------
    @property
    def rng(self) -> torch.Generator:
        if self._rng is None:
            self._rng = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        return self._rng

    def _device(self) -> torch.device:
        return next(self.teacher.parameters()).device  # type: ignore[union-attr]

    def _pick_scale(self) -> int:
        if len(self.scales) == 1:
            return self.scales[0]
        return self.scales[int(torch.randint(len(self.scales), (1,), generator=self.rng))]

    def _sample(self, scale: int, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        """A batch of synthetic LR images in [0, 1] (graph kept when the generator needs gradients)."""
        rng = self.rng if rng is None else rng
        size = self.cfg.image_size if self.raw_input_noise else self.lr_size[scale]
        if self.cfg.inputs == "noise":
            return torch.rand(n, self.channels, size, size, generator=rng).to(self._device())
        z = torch.randn(n, self.cfg.latent_dim, generator=rng).to(self._device())
        return self.generators[str(scale)](z)

    @torch.no_grad()
    def next_batch(self, batch_size: int) -> Batch:
        self._last_batch_size = batch_size
        if self.patches is not None:
            batch = self.patches.batch(self._pick_scale(), self.image_batches, batch_size)
            self.image_batches += 1
            return batch
        return Batch(lr=self._sample(self._pick_scale(), batch_size).float(), hr=None)

    def scale_of(self, lr: torch.Tensor) -> int:
        try:
            return self.size_to_scale[lr.shape[-1]]
        except KeyError:
            raise TrainingError(f"datafree: batch of size {tuple(lr.shape)} matches no generator scale") from None

    # -- losses ------------------------------------------------------------------------------------------
    def network_input(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        """What ``fidelity: code`` feeds the networks for the LR batch ``x``: the published code's 8-bit rounded
        (zero-gradient) MATLAB-bicubic upscale for pre-upsampling networks, ``x`` rounded to 8 bits otherwise."""
        if self.pre_upsampling:
            return quantize8(imresize(x.detach(), scale=scale).clamp(0.0, 1.0))
        return quantize8(x)

    def sr(self, model: nn.Module, x: torch.Tensor, scale: int) -> torch.Tensor:
        """``model`` on the LR batch ``x`` as the fidelity mode feeds it (``paper``: :func:`run_sr`)."""
        return model(self.network_input(x, scale)) if self.code else run_sr(model, x, scale)

    @torch.no_grad()
    def teacher_out(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        """The teacher's output as a constant target, in CPU chunks as :meth:`teacher_sr`, fed as :meth:`sr`."""
        if not self.code:
            return self.teacher_sr(x, scale=scale)
        chunk = teacher_chunk(x)
        return torch.cat([self.sr(self.teacher, part, scale) for part in x.split(chunk)])  # type: ignore[arg-type]

    @staticmethod
    def distance(a: torch.Tensor, b: torch.Tensor, kind: str, reduction: str = "mean") -> torch.Tensor:
        """L1 or squared error, in fp32 (small differences matter), summed or averaged."""
        d = a.float() - b.float()
        d = d.abs() if kind == "l1" else d * d
        return d.sum() if reduction == "sum" else d.mean()

    def gen_distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.distance(a, b, self.cfg.gen_criterion or self.cfg.criterion, self.cfg.gen_reduction)

    def reconstruction_loss(self, lr: torch.Tensor, teacher_sr: torch.Tensor, scale: int) -> torch.Tensor:
        """``L_R``: the teacher's output brought back to LR size (MATLAB bicubic, clamped) should be the input.
        ``fidelity: code`` rounds it to 8 bits, as the published resize module does (a constant target there)."""
        back = imresize(teacher_sr.float(), scale=1.0 / scale).clamp(0.0, 1.0)
        if self.code:
            back = quantize8(back)
        return self.gen_distance(back, lr)

    def training_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # Remember the engine's autocast so the generator step (called outside it) runs the same way.
        dev = batch.lr.device.type
        self._autocast = (dev, torch.get_autocast_dtype(dev)) if torch.is_autocast_enabled(dev) else None
        lr = batch.lr.detach()
        if self.raw_input_noise:
            with torch.no_grad():
                target = self.teacher(lr)  # type: ignore[misc]
            loss = self.distance(self.student(lr), target, self.cfg.criterion)
            return loss, {"kd": loss.detach()}
        scale = self.scale_of(lr)
        if batch.hr is not None and self.cfg.images_target == "hr":  # the data-trained control
            loss = self.distance(self.sr(self.student, lr, scale), batch.hr, self.cfg.criterion, self.cfg.kd_reduction)
            return loss, {"pix": loss.detach()}
        if self.code or self.cfg.upcycle.active:
            return self.upcycled_step(lr, scale)
        target = self.teacher_sr(lr, scale=scale)
        loss = self.distance(run_sr(self.student, lr, scale), target, self.cfg.criterion, self.cfg.kd_reduction)
        return loss, {"kd": loss.detach()}

    def upcycled_step(self, lr: torch.Tensor, scale: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The student step with the fidelity mode's inputs and the ``upcycle`` toggles (see
        :mod:`srkd.distill.upcycle`): the student sees ``A x`` for every input ``x`` (its output mapped back by
        ``A^-1``), the teacher ``x``; zoom-in crops share one forward with the batch (same size)."""
        up, cfg = self.cfg.upcycle, self.cfg
        n, _, h, w = lr.shape
        target = self.teacher_out(lr, scale)
        inputs = lr
        if up.zoom_in:
            crops = zoom_in_inputs(target, (h, w), up.zoom_in_crops, self.rng).to(lr.dtype)
            inputs = torch.cat([lr, crops.contiguous(memory_format=_layout(lr))])
            target = torch.cat([target, self.teacher_out(crops, scale)])
        augs = augmentations(inputs.shape[0], h == w, up, self.rng)
        out = augs.invert(self.sr(self.student, augs.apply(inputs), scale))
        loss = kd = self.distance(out[:n], target[:n], cfg.criterion, cfg.kd_reduction)
        logs = {"kd": kd.detach()}
        if up.zoom_in:
            logs["zoom_in"] = self.distance(out[n:], target[n:], cfg.criterion, cfg.kd_reduction)
            loss = loss + logs["zoom_in"]
        if up.zoom_out:
            small = zoom_out_input(lr, scale).to(lr.dtype)
            zo_augs = augmentations(n, small.shape[-1] == small.shape[-2], up, self.rng)
            zo_out = zo_augs.invert(self.sr(self.student, zo_augs.apply(small), scale))
            logs["zoom_out"] = self.distance(zo_out, self.teacher_out(small, scale), cfg.criterion, cfg.kd_reduction)
            loss = loss + logs["zoom_out"]
        return loss, {k: v.detach() for k, v in logs.items()}

    def generator_losses(self, scale: int, n: int) -> dict[str, torch.Tensor]:
        """One generator batch and its losses, with the graph through the frozen teacher into ``G``."""
        x = self._sample(scale, n)
        ctx = torch.autocast(*self._autocast) if self._autocast else torch.autocast(x.device.type, enabled=False)
        with ctx, torch.no_grad() if self.code else contextlib.nullcontext():  # code: no gradient crosses the rounding
            t = self.sr(self.teacher, x, scale)  # type: ignore[arg-type]
            s = self.sr(self.raw_student, x, scale)  # unwrapped: no DDP reducer for a step it does not own
        kd = self.gen_distance(t, s)
        out = {"L_KD_G": kd, "L_GEN": -torch.log(kd + 1.0), "diversity": pairwise_l1(x)}
        out["L_R"] = self.reconstruction_loss(x, t, scale)
        total = torch.zeros((), device=x.device)
        if self.cfg.adversarial:
            total = total + out["L_GEN"]
        if self.cfg.reconstruction:
            total = total + self.cfg.w_r * out["L_R"]
        out["L_G"] = total
        return out

    def after_optimizer_step(self, step: int) -> dict[str, float]:
        """After student iteration ``step`` (0-based): every ``gen_every``-th one, one generator update."""
        cfg = self.cfg
        done = step + 1
        logs: dict[str, float] = {}
        if self.generators and (cfg.adversarial or cfg.reconstruction) and done % cfg.gen_every == 0:
            logs = self.generator_step(done)
        if cfg.sample_every and self.patches is None and self.run_dir is not None and done % cfg.sample_every == 0:
            self.write_samples(Path(self.run_dir) / "samples" / f"iter_{done:08d}.png")
        return logs

    def generator_step(self, done: int) -> dict[str, float]:
        """One Adam step of one generator (a random scale's) on ``L_G``; ``done`` = student iterations so far."""
        cfg = self.cfg
        scale = self._pick_scale()
        gen = self.generators[str(scale)]
        opt = self.gen_optimizers[scale]
        for group in opt.param_groups:  # the generator's step decay, a pure function of the iteration
            group["lr"] = cfg.gen_lr * step_decay(done, cfg.gen_milestones, cfg.gen_step_size, cfg.gen_gamma)
        losses = self.generator_losses(scale, cfg.gen_batch_size or self._last_batch_size)
        logs = {k: float(v.detach()) for k, v in losses.items()}
        if not math.isfinite(logs["L_G"]):
            self.skipped += 1
            what = f"non-finite generator loss at iteration {done} (L_GEN={logs['L_GEN']:.4g}, L_R={logs['L_R']:.4g})"
            if cfg.nonfinite == "stop" or self.skipped > cfg.max_skips:
                raise TrainingError(f"datafree: {what}; lower method.gen_lr or method.w_r")
            warnings.warn(f"datafree: {what}: generator update skipped ({self.skipped} so far)", stacklevel=2)
            return {"gen_skipped": float(self.skipped)}
        params = [p for p in gen.parameters() if p.requires_grad]
        if losses["L_G"].requires_grad:
            grads = torch.autograd.grad(losses["L_G"], params)  # generator only: student/teacher .grad untouched
        else:  # fidelity code without L_R: the published code steps Adam on all-zero gradients
            grads = tuple(torch.zeros_like(p) for p in params)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        opt.zero_grad(set_to_none=True)
        return logs

    # -- samples (paper Fig. 3) --------------------------------------------------------------------------
    @torch.no_grad()
    def sample_grid(self, n: int = 8) -> torch.Tensor:
        """Top row: synthetic LR images (nearest-enlarged), bottom row: the teacher's SR; one scale per row pair.

        1-channel samples are shown three at a time as the R, G, B channels, as the paper's Fig. 3 does. The codes
        come from a fixed stream of their own: every grid of a run shows the same codes (so successive grids show
        the generator evolving), and writing grids never shifts the training draws.
        """
        rows = []
        per = 3 if self.channels == 1 else 1
        rng = torch.Generator().manual_seed(0)
        for s in self.scales:
            x = self._sample(s, n * per, rng).float()
            t = run_sr(self.teacher, x, s).float().clamp(0, 1)  # type: ignore[arg-type]
            up = F.interpolate(x, size=t.shape[-2:], mode="nearest")
            if per == 3:
                up, t = (v.reshape(n, 3, *v.shape[-2:]) for v in (up, t))
            pad = (1, 1, 1, 1)
            rows.append(torch.cat(list(F.pad(up, pad, value=1.0)), dim=-1))
            rows.append(torch.cat(list(F.pad(t, pad, value=1.0)), dim=-1))
        width = max(r.shape[-1] for r in rows)
        return torch.cat([F.pad(r, (0, width - r.shape[-1]), value=1.0) for r in rows], dim=-2)

    def write_samples(self, path: Path) -> None:
        was = self.training
        self.eval()
        write_image(path, self.sample_grid().cpu())
        self.train(was)

    # -- resume ------------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        state = {
            "stage": self.stage,
            "rng": self.rng.get_state(),
            "skipped": self.skipped,
            "generators": {k: g.state_dict() for k, g in self.generators.items()},
            "gen_optimizers": {str(s): o.state_dict() for s, o in self.gen_optimizers.items()},
        }
        if self.patches is not None:  # only then: checkpoints of the other inputs stay as they were
            state["image_batches"] = self.image_batches
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore generators, their optimisers and the random stream; grows the student to the saved stage
        (fresh weights: the engine loads the student's own weights after this)."""
        if state.get("stage", 0) > self.stage:
            old = self.raw_student
            while self.stage < state["stage"]:
                self.stage += 1
                old = self._build_stage(self.stage, previous=None, like=old)
            self.student = old
        self.rng.set_state(state["rng"])
        self.skipped = int(state.get("skipped", 0))
        self.image_batches = int(state.get("image_batches", 0))
        gens = state.get("generators", {})
        if set(gens) != set(self.generators):
            raise TrainingError(f"datafree resume: checkpoint has generators {sorted(gens)}, config {sorted(self.generators)}")
        for k, sd in gens.items():
            self.generators[k].load_state_dict(sd)
        for k, sd in state.get("gen_optimizers", {}).items():
            opt = self.gen_optimizers[int(k)]
            betas = [group["betas"] for group in opt.param_groups]
            opt.load_state_dict(sd)
            for group, mine in zip(opt.param_groups, betas):  # the config's, as the engine keeps the student's
                group["betas"] = mine  # (its lr is set from the config at every generator step)
