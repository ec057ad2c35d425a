"""One-off trial behind a sentence of benchmarks/README.md (kd-accuracy): does the bf16 student's deficit come from
rounding the *input image* to bf16 at the head convolution?

Trains the bf16 DUKD student of `srkd bench kd-accuracy` (same setting, seeds, batches and draws, 200 steps) with
the EDSR head convolution run in fp32 ("head32") or unchanged ("as-is"), and prints the final PSNR-Y of each, to be
compared with that benchmark's fp32 runs. Not a benchmark: it patches ``EDSR.forward`` for the process.

    python benchmarks/trials/kd_accuracy_head_fp32.py as-is 0
    python benchmarks/trials/kd_accuracy_head_fp32.py head32 0,1
"""

from __future__ import annotations

import sys
import tempfile
import time

import torch

from srkd.bench import kd_step
from srkd.evaluation import Bicubic, evaluate_model
from srkd.models import build_model, edsr_arch


def head_in_fp32(self: edsr_arch.EDSR, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(x.device.type, enabled=False):
        x = self.head(self.shift.normalize(x.float()))
    x = x + self.conv_after_body(self.body(x))
    return self.shift.denormalize(edsr_arch.fp32_stream(self.tail(x)))


def main() -> None:
    variant, seeds = sys.argv[1], [int(s) for s in sys.argv[2].split(",")]
    if variant not in ("as-is", "head32"):
        sys.exit("variant: as-is or head32")
    if variant == "head32":
        edsr_arch.EDSR.forward = head_in_fp32  # type: ignore[method-assign]
    setting = kd_step.FULL
    with tempfile.TemporaryDirectory() as cache:
        for seed in seeds:
            t0 = time.time()
            sampler = kd_step.sample_sampler(setting.scale, setting.lr_patch, setting.batch_size, seed=seed)
            torch.manual_seed(seed)
            student = build_model("edsr", scale=setting.scale, **setting.student)
            step = kd_step.SrkdStep("dukd", student, Bicubic(setting.scale), setting.scale, torch.device("cpu"),
                                    precision="bf16", channels_last=True)
            torch.manual_seed(seed + 1)
            for it in range(200):
                step(sampler.batch(it))
            res = evaluate_model(step.method.student, ["samples-val"], setting.scale, device="cpu", precision="fp32",
                                 cache_dir=cache, progress=False)
            print(f"{variant} seed {seed}: PSNR-Y {res['samples-val']['psnr_y']:.4f} dB ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
