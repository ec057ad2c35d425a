"""Real training patches at a random scale per batch: the data-trained control of data-free distillation.

DFSR Table 1 sets one multi-scale data-free student (x2/x3/x4 share one budget, a random scale per batch) against
data-trained students that had the whole budget at one scale each (issue 37). The fair control is a student
trained on real images *the same way*: one network, the same total steps, a random scale per batch, the same LR
patch size per scale as the generators' (``image_size // s``). The engine's data loader serves one scale, so the
data-free method (``inputs: images``) draws these batches itself, through the engine's own
:class:`~srkd.data.sampler.PatchSampler` (one per scale, LR made and cached exactly as for single-scale runs).

A batch is a pure function of ``(seed, scale, batch number)``: the method's random stream picks the scale and the
batch number is saved with the run, so resumed runs see the same patches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as torch_dist

from srkd.data.sampler import PatchSampler, load_training_pairs
from srkd.distill.base import Batch


class ScalePatches:
    """Patches of the same images at each scale; ``batch(scale, k, n)`` is the k-th batch of ``n`` drawn.

    The images are read (and their LR made or read from the cache) when this is built, so that a wrong path fails
    before training; a scale's :class:`PatchSampler` is made on its first batch, when the batch size is known.
    """

    def __init__(self, specs: Sequence[str], lr_sizes: dict[int, int], colour: str, seed: int) -> None:
        self.lr_sizes, self.colour, self.seed = dict(lr_sizes), colour, seed
        self.pairs = {s: load_training_pairs(list(specs), s) for s in lr_sizes}
        self.samplers: dict[tuple[int, int], PatchSampler] = {}

    def sampler(self, scale: int, batch_size: int) -> PatchSampler:
        key = (scale, batch_size)
        if key not in self.samplers:
            rank, world = 0, 1
            if torch_dist.is_available() and torch_dist.is_initialized():
                rank, world = torch_dist.get_rank(), torch_dist.get_world_size()
            pairs = self.pairs[scale]
            self.samplers[key] = PatchSampler(
                [hr for _, hr, _ in pairs], scale, lr_patch=self.lr_sizes[scale], batch_size=batch_size,
                colour=self.colour, seed=self.seed * 1000 + scale, rank=rank, world_size=world,
                names=[n for n, _, _ in pairs], lr_images=[lr for _, _, lr in pairs],
            )
        return self.samplers[key]

    def batch(self, scale: int, k: int, batch_size: int) -> Batch:
        return self.sampler(scale, batch_size).batch(k)


def run_seed() -> int:
    """The seed the engine gave this run (it seeds torch right before it builds the method), same on every rank."""
    return int(torch.initial_seed()) % (2**31)


__all__ = ["ScalePatches", "run_seed"]
