"""CSD: contrastive self-distillation (Wang et al., CVPR 2021)::

    loss = teacher_weight * L1(T(lr), hr) + L1(S(lr), hr) + contrast_weight * CL
    CL   = sum_i w_i * L1(phi_i(T), phi_i(S)) / (sum_k L1(phi_i(neg_k), phi_i(S)) + eps)

T is a *slimmable* network at full width and S the same network restricted to the first ``width`` fraction of
every layer's channels: the two share weights and train jointly, so "the teacher" here is trainable and no
separate frozen teacher exists (``needs_teacher = False``). ``phi_i`` are VGG19 relu1_1 ... relu5_1 with
weights 1/32, 1/16, 1/8, 1/4, 1; negatives are bicubic-upsampled LR images of the batch (``num_neg`` of them,
shared by all samples as in the public code, which may include a sample's own upscaled input).

Slimming is done functionally: the width-``c`` network is a parameter-free template (built on the meta device)
called through ``torch.func.functional_call`` with *prefix slices* of the full network's tensors
(``weight[:c_out, :c_in]``). Prefix slices are exactly right for EDSR: the mean shift is channel-free, residual
blocks keep channel ``j`` at position ``j``, and a PixelShuffle upsampler conv's first ``c * r^2`` outputs are
precisely the ``r^2`` sub-pixels of the first ``c`` shuffled channels (PixelShuffle groups channel ``k`` as
outputs ``k*r^2 ... k*r^2 + r^2 - 1``). Slicing is differentiable, so both branches update the same tensors.
:meth:`CSD.extract_student` returns a plain width-``c`` model with copies of the slices (the network to
evaluate and ship); the engine's checkpoints hold the whole slimmable network (``method.student``).

Initialisation: with ``init_from_teacher`` (the default) and a ``teacher`` section, the engine loads that teacher
only to copy its weights into the slimmable network (it must have the student's architecture and size), so a
pretrained full-width model starts both branches; without a teacher section the network starts from random
weights, as in the CSD paper.

Choices: VGG input is ImageNet-normalised by default (``vgg_input: raw255`` feeds 0-255 un-normalised as the
public code does); the teacher side of the contrastive term is detached by default (``detach_teacher``), so the
full-width branch learns from its own HR loss only and is not pulled towards the student.
"""

from __future__ import annotations

import inspect
from typing import ClassVar, Literal

import torch
import torch.nn as nn
from pydantic import Field
from torch.func import functional_call

from srkd.data.batch import Batch
from srkd.distill.base import Method as MethodBase
from srkd.distill.base import MethodConfig
from srkd.distill.vgg import VGG19Features
from srkd.errors import ConfigError
from srkd.models import build_model, get_class, run_sr
from srkd.models.base import find_spec, model_colour, upsamples_input
from srkd.models.taps import unwrap_model
from srkd.ops.imresize import imresize

_EPS = 1e-7


class Config(MethodConfig):
    no_growth: ClassVar[str] = "CSD trains one slimmable network of fixed depth, which growth would rebuild; remove it"
    name: Literal["csd"] = Field("csd", description="contrastive self-distillation (Wang et al. 2021)")
    width: float = Field(0.25, gt=0, le=1, description="student channels = round(width * n_feats)")
    teacher_weight: float = Field(1.0, ge=0, description="weight of L1(T(lr), hr) for the full-width branch")
    contrast_weight: float = Field(200.0, ge=0, description="lambda of the contrastive term")
    layer_weights: list[float] = Field(default_factory=lambda: [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0],
                                       description="weights of VGG19 relu1_1 ... relu5_1 in the contrastive term")
    num_neg: int = Field(10, ge=1, description="bicubic-upsampled LR negatives per batch")
    detach_teacher: bool = Field(True, description="the full-width side of the contrastive term gets no gradient")
    vgg_weights: str | None = Field(None, description="torchvision vgg19 state dict (.pth/.safetensors)")
    vgg_sha256: str | None = Field(None, description="expected sha256 of vgg_weights (checked when given)")
    vgg_input: Literal["imagenet", "raw255"] = Field("imagenet", description="VGG input: ImageNet-normalised, or "
                                                     "0-255 un-normalised (public code)")
    init_from_teacher: bool = Field(True, description="start the slimmable network from the teacher section's "
                                    "weights (same architecture and size)")


def summed_l1_to_negatives(f_s: torch.Tensor, f_n: torch.Tensor) -> torch.Tensor:
    """``sum_j mean(|f_n[j] - f_s|)`` (each negative broadcast over the batch ``f_s``), the denominator of CSD's
    contrastive ratio, as pairwise L1 distances (``torch.cdist``, p=1) per channel.

    Why not the formula's loop: it materialises ``k`` batch-sized differences per VGG layer and keeps them for
    the backward; at the quick recipe's size (16 SR patches of 128x128, 10 negatives) that cost 8-10 s a step on
    a 2-core CPU, against 1 s this way, with the same value (summed per channel, so within 1e-7 of a float64
    reference) and the same gradient.
    """
    n, c, k = f_s.shape[0], f_s.shape[1], f_n.shape[0]
    a = f_s.reshape(n, c, -1).transpose(0, 1)  # (C, n, H*W): one distance matrix per channel
    b = f_n.reshape(k, c, -1).transpose(0, 1)
    return torch.cdist(a, b, p=1).sum() / f_s.numel()


def _prefix(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return t[tuple(slice(0, d) for d in shape)]


class SlimView(nn.Module):
    """The width-``c`` sub-network of ``full`` as a callable model (``run_sr`` works on it). Holds no tensors of
    its own: every forward slices the full network's current parameters and buffers."""

    def __init__(self, full: nn.Module, n_feats: int) -> None:
        super().__init__()
        spec = find_spec(full)
        if spec is None:
            raise ConfigError("method 'csd' needs a student built by srkd.models.build_model (no model.spec)")
        self.arch = spec.arch
        self.kwargs = {**spec.kwargs, "n_feats": n_feats}
        with torch.device("meta"):
            self._template = [build_model(self.arch, **self.kwargs)]  # list: not a registered submodule
        self._full = [full]
        tmpl = self._template[0]
        self.scale = tmpl.scale
        self.upsample_input = upsamples_input(tmpl)
        self.colour = model_colour(tmpl)
        full_tensors = dict(self._named_tensors(full))
        self._shapes: dict[str, torch.Size] = {}
        for name, t in self._named_tensors(tmpl):
            big = full_tensors.get(name)
            if big is None or big.dim() != t.dim() or any(a > b for a, b in zip(t.shape, big.shape)):
                raise ConfigError(
                    f"csd: '{name}' of the slim {self.arch} is not a prefix slice of the full network"
                )
            self._shapes[name] = t.shape

    @staticmethod
    def _named_tensors(m: nn.Module) -> list[tuple[str, torch.Tensor]]:
        return [*m.named_parameters(), *m.named_buffers()]

    def sliced_tensors(self, source: nn.Module | None = None) -> dict[str, torch.Tensor]:
        full = dict(self._named_tensors(source if source is not None else self._full[0]))
        return {name: _prefix(full[name], shape) for name, shape in self._shapes.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self._template[0], self.sliced_tensors(), (x,))

    def materialize(self, source: nn.Module | None = None) -> nn.Module:
        """A plain model with copies of the current slices of ``source`` (default: the full network; pass an
        EMA copy of it to export the averaged student), on the source's device and dtype."""
        source = unwrap_model(source if source is not None else self._full[0])
        ref = next(source.parameters())
        model = build_model(self.arch, **self.kwargs).to(device=ref.device, dtype=ref.dtype)
        own = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        with torch.no_grad():
            for name, t in self.sliced_tensors(source).items():
                own[name].copy_(t)
        return model


def _full_width(student: nn.Module) -> int:
    spec = find_spec(student)
    if spec is None:
        raise ConfigError("method 'csd' needs a student built by srkd.models.build_model (no model.spec)")
    if "n_feats" in spec.kwargs:
        return int(spec.kwargs["n_feats"])
    param = inspect.signature(get_class(spec.arch).__init__).parameters.get("n_feats")
    if param is None:
        raise ConfigError(f"method 'csd' slims channel widths 'n_feats'; architecture '{spec.arch}' has none")
    return int(param.default)


class Method(MethodBase):
    needs_teacher = False
    cfg: Config

    @classmethod
    def uses_teacher(cls, cfg: MethodConfig) -> bool:
        return bool(getattr(cfg, "init_from_teacher", False))

    def __init__(self, student: nn.Module, teacher: nn.Module | None, cfg: Config, scale: int) -> None:
        if len(cfg.layer_weights) != 5:
            raise ConfigError(
                f"method.layer_weights: need 5 weights (relu1_1..relu5_1), got {len(cfg.layer_weights)}"
            )
        if teacher is not None and cfg.init_from_teacher:
            t_state, s_state = teacher.state_dict(), student.state_dict()
            if t_state.keys() != s_state.keys() or any(t_state[k].shape != s_state[k].shape for k in s_state):
                raise ConfigError(
                    "csd: the teacher initialises the slimmable network, so it must have the student's architecture "
                    "and size (or set method.init_from_teacher: false)"
                )
            student.load_state_dict(t_state)
        super().__init__(student, None, cfg, scale)
        full = _full_width(student)
        self.slim_feats = max(1, round(full * cfg.width))
        self.slim = SlimView(unwrap_model(student), self.slim_feats)
        # contrast_weight 0 is CSD's ablation without the contrastive term (slimmable self-distillation by the HR
        # losses alone): no VGG19 is built, so nothing warns about its weights and no step pays for its passes.
        self.vgg = (
            VGG19Features(cfg.vgg_weights, cfg.vgg_sha256, cfg.vgg_input) if cfg.contrast_weight > 0 else None
        )

    def slim_sr(self, lr: torch.Tensor) -> torch.Tensor:
        return run_sr(self.slim, lr, self.scale)

    def extract_student(self, source: nn.Module | None = None) -> nn.Module:
        """The distilled student: a plain ``n_feats = round(width * n_feats)`` model holding copies of the slim
        weights of ``source`` (default ``self.student``; the engine passes its EMA copy when EMA is on). This,
        not ``self.student``, is the network to validate and export."""
        return self.slim.materialize(source)

    def negatives(self, lr: torch.Tensor) -> torch.Tensor:
        """``num_neg`` bicubic-upsampled LR images of the batch (the last ones, like the reversed batch of the
        public code); MATLAB bicubic on the training device."""
        k = min(self.cfg.num_neg, lr.shape[0])
        return imresize(lr.flip(0)[:k], scale=self.scale).clamp(0.0, 1.0)

    def contrastive(self, sr_t: torch.Tensor, sr_s: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        if self.vgg is None:
            raise ConfigError("csd: the contrastive term needs method.contrast_weight > 0 (no VGG19 was built)")
        n, k = sr_s.shape[0], neg.shape[0]
        if min(sr_s.shape[-2:]) < 16:
            raise ConfigError(
                f"csd: VGG19 up to relu5_1 needs SR patches of at least 16x16, got {tuple(sr_s.shape[-2:])}"
            )
        # Constant images go through VGG without a graph: the backward then covers only the images that need it.
        with torch.no_grad():
            const = [neg] if not self.cfg.detach_teacher else [sr_t, neg]
            const_feats = self.vgg(torch.cat(const, 0).to(sr_s.dtype))
        grad_in = [sr_s] if self.cfg.detach_teacher else [sr_t, sr_s]
        grad_feats = self.vgg(torch.cat(grad_in, 0))
        total = sr_s.new_zeros((), dtype=torch.float32)
        for w, fg, fc in zip(self.cfg.layer_weights, grad_feats, const_feats):
            fg, fc = fg.float(), fc.float()
            f_s, f_n = fg[-n:], fc[-k:]
            f_t = fc[:n] if self.cfg.detach_teacher else fg[:n]
            d_ts = (f_t - f_s).abs().mean()
            d_sn = summed_l1_to_negatives(f_s, f_n)
            total = total + w * d_ts / (d_sn + _EPS)
        return total

    def training_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if batch.hr is None:
            raise ConfigError("method 'csd' needs paired (LR, HR) data; the batch has no HR images")
        sr_t = self.student_sr(batch.lr)  # full-width branch
        sr_s = self.slim_sr(batch.lr)
        teacher_pix = self.l1(sr_t, batch.hr)
        pix = self.l1(sr_s, batch.hr)
        loss = self.cfg.teacher_weight * teacher_pix + pix
        logs = {"teacher_pix": teacher_pix.detach(), "pix": pix.detach()}
        if self.vgg is not None:
            cl = self.contrastive(sr_t, sr_s, self.negatives(batch.lr))
            loss = loss + self.cfg.contrast_weight * cl
            logs["contrast"] = cl.detach()
        return loss, logs


# Readable aliases; the registry uses the module-level ``Config`` and ``Method``.
CSD, CSDConfig = Method, Config

__all__ = ["Config", "Method", "CSD", "CSDConfig", "SlimView", "summed_l1_to_negatives"]
