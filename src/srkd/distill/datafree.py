"""Data-free distillation for SR (DFSR, Zhang et al., CVPR 2021): the student never sees a real image.

A generator ``G`` (supplement Table 1) turns Gaussian codes into low-resolution images. The student learns the
teacher on them (Eq. 1/5, ``L_KD = |T(G(z)) - S(G(z))|``) and every ``generator.every`` student steps the
generator takes one step of its own Adam on (Eq. 4)::

    L_G = L_GEN + w_R * L_R,   L_GEN = -log(L_KD + 1),   L_R = |R(T(G(z))) - G(z)|,   R = bicubic 1/s

``L_GEN`` is adversarial (hard samples: where the student still disagrees with the teacher, DFAD) and keeps the
samples diverse; ``L_R`` asks for images the teacher treats as natural LR images (its output, downscaled again,
gives the input back). The teacher is frozen but *not* under ``no_grad`` there: the generator's gradient flows
through it. This module holds that idea: the losses, the inputs, the fidelity modes and the upcycled student
step. The generators as trained components (networks, optimisers, lr schedule, non-finite updates, checkpoint
state) are :mod:`srkd.distill.generator`; the paper's progressive distillation is every method's
``method.progressive`` (:mod:`srkd.distill.progressive`), which the generator survives.

Pre-upsampling students (VDSR) are scale-agnostic: one generator per scale, of size ``image_size // s``, and each
batch (and each generator update) picks one scale at random. The scale of a batch is recovered from its size, so
the engine's :class:`~srkd.distill.base.Batch` needs no extra field.

Switches give the paper's baselines and ablations (Table 2): ``inputs: noise`` (M1, no generator is built),
``adversarial``/``reconstruction``/``progressive`` (M2, DFAD, M3, M4, full), ``w_r`` (Fig. 4).

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
issue 37 can cross them ("which change bought what"): the published criterion (``generator.criterion: mse``,
``generator.reduction: sum``, and for the student ``criterion: mse``, ``kd_reduction: sum``), ``w_r``,
``generator.every``, ``generator.optim.lr``, the student's SGD (``optim``, ``sched``, ``train.grad_clip``).
``configs/dfsr-vdsr-code-paper.yaml`` sets all of them as the published demo does; ``datafree-vdsr-quick.yaml``
already uses the summed MSE.

``upcycle`` (off by default) applies DUKD's zoom-in, zoom-out and invertible augmentations to the generated
images in the student step (:mod:`srkd.distill.upcycle`). ``inputs: images`` is the data-trained control: real
patches of ``images`` at a random scale per batch (:mod:`srkd.distill.scale_patches`), the same student, budget
and scale coverage as a data-free run, trained on the HR images (``images_target: hr``) or the teacher.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from srkd.distill.base import MOVED, Batch, MethodConfig, teacher_chunk
from srkd.distill.base import Method as MethodBase
from srkd.distill.generator import GeneratorConfig, Generators
from srkd.distill.scale_patches import ScalePatches, run_seed
from srkd.distill.upcycle import UpcycleConfig, augmentations, zoom_in_inputs, zoom_out_input
from srkd.errors import ConfigError, TrainingError
from srkd.models import run_sr
from srkd.models.base import model_colour, upsamples_input
from srkd.models.taps import unwrap_model
from srkd.ops.imresize import imresize

# The generator's flat keys before method.generator (and the method's own non-finite policy before the engine's).
GEN_MOVED = {
    "gen_every": "every", "gen_batch_size": "batch_size", "latent_dim": "latent_dim",
    "gen_criterion": "criterion", "gen_reduction": "reduction", "gen_lr": "optim.lr", "gen_betas": "optim.betas",
    "gen_milestones": "sched.milestones", "gen_step_size": "sched.step_size", "gen_gamma": "sched.gamma",
}
OLD_NONFINITE = {"nonfinite": "stop", "max_skips": 10}  # the method's defaults before train.nonfinite applied


class Config(MethodConfig):
    moved: ClassVar[dict[str, str]] = {
        **MOVED, **{k: f"method.generator.{v}" for k, v in GEN_MOVED.items()},
        "nonfinite": "train.nonfinite (one policy for the student and the generator)",
        "max_skips": "train.max_skips (one policy for the student and the generator)",
    }

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
    w_r: float = Field(1.0, ge=0.0, description="weight of L_R in the generator loss")
    criterion: Literal["l1", "mse"] = Field("l1", description="the student's L_KD (Eq. 1/5)")
    kd_reduction: Literal["mean", "sum"] = Field(
        "mean", description="reduction of the student's loss; the published code sums")
    # generator.reduction "mean" is the paper's Eq. 1-2; the reference code uses MSE with "sum". It matters: with a
    # mean, L_KD << 1 and -log(1 + L_KD) ~ -L_KD, so both terms are linear in the samples' contrast and no contrast
    # is stable (the samples fade to flat or saturate); with a sum, -log(1 + L_KD) ~ -log L_KD does not depend on
    # the contrast, and the contrast settles where L_R (per pixel) ~ 1 / (w_r * pixels in the batch).
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig,
                                       description="the generators: update period, batch, z size, criterion, "
                                       "optimiser and lr schedule")
    image_size: int = Field(48, ge=8, description="the student's input size (VDSR: after the bicubic upscale)")
    scales: list[int] | None = Field(
        None, description="pre-upsampling students only, e.g. [2, 3, 4]: one generator per scale (default [scale])")
    sample_every: int = Field(
        0, ge=0, description="show a grid of samples and their teacher SR every N iterations (0: never)")

    @classmethod
    def upgrade(cls, section: dict[str, Any]) -> dict[str, Any]:
        data = super().upgrade(section)
        gen: dict[str, Any] = {}
        for old, new in GEN_MOVED.items():
            if old in data:
                *parents, leaf = new.split(".")
                node = gen.setdefault(parents[0], {}) if parents else gen
                node[leaf] = data.pop(old)
        if gen:
            data["generator"] = gen
        if all(data.get(k) == v for k, v in OLD_NONFINITE.items()) or data.get("nonfinite") == "stop":
            for k in OLD_NONFINITE:  # the old stop policy skips nothing: the engine's stop is the same run
                data.pop(k, None)
        return data

    @model_validator(mode="after")
    def _check(self) -> Config:
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


def pairwise_l1(x: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between the distinct samples of a batch: falls towards 0 when the generator collapses."""
    flat = x.detach().float().flatten(1)
    n = flat.shape[0]
    return torch.cdist(flat, flat, p=1).sum() / (n * (n - 1) * flat.shape[1])


def _layout(x: torch.Tensor) -> torch.memory_format:
    """The memory format of a batch (the engine may hand over channels_last ones): stacked inputs keep it."""
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def lr_sizes(student: nn.Module, cfg: Config, scale: int) -> dict[int, int]:
    """LR side per scale of the batches: one per generator, distinct so that a batch's size tells its scale."""
    pre = upsamples_input(student)
    scales = list(cfg.scales) if cfg.scales else [scale]
    if not pre and scales != [scale]:
        raise ConfigError(f"method.scales {scales}: only pre-upsampling students (VDSR) can mix scales; "
                          f"this student has a fixed x{scale} upsampler")
    sizes = {s: cfg.image_size // s if pre else cfg.image_size for s in scales}
    if len(set(sizes.values())) != len(scales):
        raise ConfigError(f"method.image_size {cfg.image_size} gives equal LR sizes for scales {scales}")
    return sizes


class Method(MethodBase):
    cfg: Config
    provides_batches = True

    def __init__(self, student: nn.Module, teacher: nn.Module | None, cfg: MethodConfig, scale: int) -> None:
        if teacher is None:
            raise ConfigError("method 'datafree' needs a teacher (the 'teacher' section)")
        assert isinstance(cfg, Config)
        self.lr_size = lr_sizes(student, cfg, scale)
        channels = int(getattr(unwrap_model(student), "in_channels", 3))
        # Built before the base class grows the student to its first stage: the order the random initialisations
        # were drawn in before growth moved there, so that a run's weights stay those it always had.
        gen = Generators(cfg.generator, self.lr_size if cfg.inputs == "generator" else {}, channels, cfg.image_size)
        super().__init__(student, teacher, cfg, scale)
        self.gen = gen
        self.channels = channels
        self.pre_upsampling = upsamples_input(student)
        self.scales = list(self.lr_size)
        self.size_to_scale = {v: s for s, v in self.lr_size.items()}
        # Input-size noise for a pre-upsampling student is fed as is (its scale does not matter).
        self.raw_input_noise = cfg.inputs == "noise" and cfg.noise_size == "input" and self.pre_upsampling
        # The method's own random stream (codes, noise, scale choice), saved with the run for exact resumes. It is
        # seeded on first use, from the global stream the engine has seeded per rank by then.
        self._rng: torch.Generator | None = None
        self._last_batch_size = 16
        # inputs: images: real patches at each scale's LR size, read now so that a wrong path fails before training
        self.patches = (ScalePatches(cfg.images, self.lr_size, model_colour(student),
                                     run_seed()) if cfg.inputs == "images" else None)
        self.image_batches = 0  # batches of real patches drawn so far (saved: a resumed run draws the next one)
        self.code = cfg.fidelity == "code"
        self._autocast: tuple[str, torch.dtype] | None = None

    @property
    def generators(self) -> nn.ModuleDict:
        """The generator of each scale (``"2"``...), empty without ``inputs: generator``."""
        return self.gen.nets

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
        return self.gen.sample(scale, n, rng, self._device())

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
        g = self.cfg.generator
        return self.distance(a, b, g.criterion or self.cfg.criterion, g.reduction)

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
        """After student iteration ``step`` (0-based): every ``generator.every``-th one, one generator update."""
        done = step + 1
        if (self.cfg.adversarial or self.cfg.reconstruction) and self.gen.due(done):
            return self.generator_step(done)
        return {}

    def generator_step(self, done: int) -> dict[str, float]:
        """One step of one generator (a random scale's) on ``L_G``; ``done`` = student iterations so far."""
        scale = self._pick_scale()
        losses = self.generator_losses(scale, self.cfg.generator.batch_size or self._last_batch_size)
        return self.gen.step(scale, done, losses, self.nonfinite)

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

    def samples(self, done: int) -> dict[str, torch.Tensor]:
        """Every ``sample_every`` iterations the grid of :meth:`sample_grid`, which the engine writes to
        ``run_dir/samples/iter_XXXXXXXX.png`` (real patches, ``inputs: images``, have none)."""
        every = self.cfg.sample_every
        if not every or self.patches is not None or done % every:
            return {}
        was = self.training
        self.eval()
        grid = self.sample_grid().cpu()
        self.train(was)
        return {"samples": grid}

    # -- resume ------------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        """The growth stage, the random stream and the generators' state, under the keys checkpoints have always
        used (``stage``, ``rng``, ``skipped``, ``generators``, ``gen_optimizers``, ``image_batches``)."""
        state = {**super().extra_state(), "rng": self.rng.get_state(), **self.gen.state()}
        if self.patches is not None:  # only then: checkpoints of the other inputs stay as they were
            state["image_batches"] = self.image_batches
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the stage (the student is rebuilt, fresh: the engine loads its weights next), the generators
        and their optimisers, and the random stream."""
        super().load_extra_state(state)
        self.rng.set_state(state["rng"])
        self.image_batches = int(state.get("image_batches", 0))
        self.gen.load_state(state)
