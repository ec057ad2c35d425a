"""One-off trial behind a sentence of benchmarks/README.md (imresize x1/4): can one batched product over the whole
batch, with less of the band's zeros, bring the downscale near 20x without a native kernel?

An integer-factor downscale gives every interior output row the same taps, so G consecutive output rows read
``4G + 12`` consecutive input rows. Viewed through ``as_strided``, the groups of *all* images form one batch with a
uniform stride (an image's height is a whole number of groups), so a single ``bmm`` computes every interior group in
place; the groups that straddle an image boundary come out wrong and are recomputed with the folded border weights.
Prints, per variant, the largest difference from srkd's ``imresize`` pass and the median time; the W-pass variants
run on the H pass's output. Not a benchmark and not srkd code.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/trials/imresize_grouped_bmm.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from srkd.ops.imresize import _resize_axis, _symmetric, _taps, imresize

SCALE = 0.25


def median_ms(fn: Callable[[], object], calls: int = 50) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def interior_taps(in_len: int, out_len: int) -> tuple[torch.Tensor, int]:
    """The non-zero taps of a middle output row and the offset of its first input row from ``4 * row``."""
    idx, weights = _taps(in_len, out_len, SCALE, True)
    mid = out_len // 2
    nonzero = (weights[mid] != 0).nonzero().flatten()
    first = int(idx[mid, nonzero[0]]) - round(mid / SCALE)
    return weights[mid, nonzero[0] : nonzero[-1] + 1].float(), first


def h_pass_grouped(x: torch.Tensor, group: int) -> torch.Tensor:
    """H pass of ``x`` (B, H, W) as one ``bmm`` over groups of ``group`` output rows of every image at once."""
    batch, in_len, width = x.shape
    out_len = in_len // 4
    taps, first = interior_taps(in_len, out_len)
    k = taps.numel() + 4 * (group - 1)
    band = torch.zeros(group, k)
    for g in range(group):
        band[g, 4 * g : 4 * g + taps.numel()] = taps
    skip = -(first // (4 * group))  # groups at each end whose window leaves the tensor
    n = batch * (out_len // group) - 2 * skip
    windows = x.reshape(-1).as_strided((n, k, width), (4 * group * width, width, 1), (4 * group * skip + first) * width)
    out = torch.empty(batch, out_len, width)
    offset = skip * group * width
    torch.bmm(band.expand(n, group, k), windows, out=out.view(-1)[offset : offset + n * group * width].view(n, group, width))
    idx, weights = _taps(in_len, out_len, SCALE, True)
    real = _symmetric(idx, in_len)
    edge = skip * group + 4  # rows of every image that a straddling group may have written, or a folded tap reads
    for rows in (slice(0, edge), slice(out_len - edge, out_len)):
        r_idx, r_w = real[rows], weights[rows]
        lo, hi = int(r_idx.min()), int(r_idx.max()) + 1
        dense = torch.zeros(r_idx.shape[0], hi - lo, dtype=torch.float64)
        dense.index_put_((torch.arange(r_idx.shape[0])[:, None].expand_as(r_idx), r_idx - lo), r_w, accumulate=True)
        out[:, rows] = torch.matmul(dense.float(), x[:, lo:hi])
    return out


def main() -> None:
    torch.manual_seed(0)
    x = torch.rand(8, 3, 512, 512)
    flat = x.reshape(-1, 512, 512)
    print(f"whole resize (srkd imresize): {median_ms(lambda: imresize(x, scale=SCALE)):.2f} ms")
    reference = _resize_axis(flat, 1, 128, SCALE, True)
    print(f"H pass, srkd's blocks: {median_ms(lambda: _resize_axis(flat, 1, 128, SCALE, True)):.2f} ms")
    for group in (1, 2, 4, 8, 16):
        diff = float((h_pass_grouped(flat, group) - reference).abs().max())
        ms = median_ms(lambda group=group: h_pass_grouped(flat, group))
        print(f"H pass, one bmm over groups of {group:2d} rows: {ms:.2f} ms, max |diff| {diff:.1e}")

    y = reference  # (24, 128, 512): the W pass's input
    reference_w = _resize_axis(y, 2, 128, SCALE, True)
    taps, first = interior_taps(512, 128)
    print(f"W pass, srkd's blocks: {median_ms(lambda: _resize_axis(y, 2, 128, SCALE, True)):.2f} ms")

    def transposed() -> torch.Tensor:
        return h_pass_grouped(y.transpose(1, 2).contiguous(), 1).transpose(1, 2).contiguous()

    def conv1d() -> torch.Tensor:  # interior columns only (no borders): a lower bound on its cost
        return F.conv1d(y.reshape(-1, 1, 512), taps.view(1, 1, -1), stride=4)

    def strided_adds() -> torch.Tensor:  # interior columns only
        rows = y.reshape(-1, 512)
        out = torch.zeros(rows.shape[0], 128)
        lo, hi = 2, 126
        for k in range(taps.numel()):
            start = 4 * lo + first + k
            out[:, lo:hi].add_(rows[:, start : start + 4 * (hi - lo) : 4], alpha=float(taps[k]))
        return out

    def window_mv() -> torch.Tensor:  # interior columns only
        n = y.numel() // 4 - 4
        return torch.matmul(y.reshape(-1).as_strided((n, taps.numel()), (4, 1), 8 + first), taps)

    print(f"W pass, grouped bmm on a transposed copy: {median_ms(transposed):.2f} ms, "
          f"max |diff| {float((transposed() - reference_w).abs().max()):.1e}")
    for name, fn in (("conv1d", conv1d), ("16 strided add_", strided_adds), ("window matrix-vector", window_mv)):
        print(f"W pass, {name} (interior only): {median_ms(fn):.2f} ms")


if __name__ == "__main__":
    main()
