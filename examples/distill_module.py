"""Distil a teacher you hold as an nn.Module into a smaller nn.Module with srkd.distill (a minute or two on a CPU).

Run from anywhere: ``python examples/distill_module.py``. The teacher is trained here first (``"scratch"``: no
teacher) so that the example needs nothing but srkd; in practice it is your trained network. Both train on the
photos bundled with scikit-image (``samples-train``; ``train="../shared/data/train/T91"`` or any folder of HR
images works the same) and write their run folders under ``runs/`` (run it again and both runs resume there).
"""

import torch.nn as nn
import torch.nn.functional as F

import srkd


class Net(nn.Module):  # any network from (N, 3, h, w) in [0, 1] to (N, 3, 2h, 2w) works
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(width, 3 * 2 * 2, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False) + self.body(x)


data = dict(scale=2, train="samples-train", val="samples-val", iterations=300, batch_size=8, lr_patch=32, lr=1e-3)
teacher = srkd.distill(None, Net(64), "scratch", out="runs/example-teacher", **data)
student = srkd.distill(teacher.student, Net(16), "kd", out="runs/example-kd", **data)
print(f"Y PSNR on samples-val: teacher {teacher.metrics['samples-val']['psnr_y']:.2f} dB, "
      f"student {student.metrics['samples-val']['psnr_y']:.2f} dB; student weights: {student.run_dir}")
