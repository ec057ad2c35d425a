"""MATLAB-compatible bicubic ``imresize`` in torch: batched, CPU and GPU, differentiable.

Both papers (and BasicSR, the de-facto reference) make LR images with MATLAB's ``imresize(img, 1/s, 'bicubic')``,
so PSNR numbers are only comparable when srkd does exactly the same: Keys cubic kernel with ``a = -0.5``, the kernel
widened by ``1/scale`` when shrinking (antialiasing), output size ``ceil(in * scale)``, input coordinate
``u = (x + 0.5) / scale - 0.5`` and MATLAB's *symmetric* boundary (edge pixel repeated: ``... b a | a b c ...``),
which neither ``F.interpolate`` nor PIL use.

Each axis is a linear map, stored as a banded matrix cut into row blocks: block ``k`` produces ``t`` output rows
from one window of consecutive input rows (about ``t / scale`` plus the kernel width). Taps beyond the border are
folded onto the pixels the symmetric padding would copy, so each block is one (batched) matmul on a strided view
of the input: no padded copy, no gather. The blocks are computed once per (size, scale, device, dtype) and cached.
On the GPU a single block (the dense matrix) is used: one big matmul beats many small ones there. Channels and
images share the batch dimension, so a whole batch costs two passes.

On the CPU, float32 work without autograd runs the same two passes in srkd's C++ kernels when they can be built
(``srkd.ops.native``; ``SRKD_NATIVE=0`` turns them off): they read only the band's taps instead of multiplying
its zeros, 2-3x faster. Their results match the torch path to float32 rounding (tests hold both to MATLAB).
"""

from __future__ import annotations

import functools
import math

import torch

from srkd.ops import native

__all__ = ["imresize", "output_size"]

# CPU block heights: the number of *input* rows a block reads is about TILE_INPUT_ROWS for downscaling, and a
# block writes about TILE_OUTPUT_ROWS rows when upscaling. Measured on a 2-core EPYC: smaller blocks waste less
# arithmetic on the band's zeros, larger ones amortise the per-call overhead.
TILE_INPUT_ROWS = 64
TILE_OUTPUT_ROWS = 64
# Shrinking is refused below 1 / (side + this): the kernel then spans at most ~4 (side + 16) input pixels.
MIN_SCALE_SLACK = 16


def output_size(in_size: int, scale: float) -> int:
    """MATLAB's output length ``ceil(in_size * scale)``.

    A product such as ``300 * (1 / 3)`` can land a hair above an integer in floating point; that error is
    absorbed so that an HR image cropped to a multiple of the scale always gives ``in_size / s`` LR pixels.
    """
    exact = in_size * scale
    return max(1, math.ceil(exact - 1e-9 * max(1.0, exact)))


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``)."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def _taps(in_len: int, out_len: int, scale: float, antialias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output pixel: the (unfolded, possibly out-of-range) input indices and normalised weights, float64."""
    shrink = scale < 1 and antialias
    width = 4.0 / scale if shrink else 4.0
    u = torch.arange(out_len, dtype=torch.float64) / scale + 0.5 / scale - 0.5  # 0-based input coordinate
    left = torch.floor(u - width / 2)
    n_taps = math.ceil(width) + 2
    idx = left[:, None] + torch.arange(n_taps, dtype=torch.float64)
    dist = u[:, None] - idx
    weights = scale * _cubic(dist * scale) if shrink else _cubic(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    return idx.long(), weights


def _symmetric(index: torch.Tensor, length: int) -> torch.Tensor:
    """MATLAB's symmetric padding as an index map: ``-1 -> 0``, ``-2 -> 1``, ``length -> length - 1``..."""
    period = index.remainder(2 * length)
    return torch.where(period < length, period, 2 * length - 1 - period)


# (first input row, end input row, weights of shape (output rows, end - first))
Block = tuple[int, int, torch.Tensor]


@functools.lru_cache(maxsize=64)  # dense GPU matrices of 2K images are a few MB each
def _blocks(
    in_len: int, out_len: int, scale: float, antialias: bool, tile: int, device: str, dtype: torch.dtype
) -> tuple[Block, ...]:
    """The axis map cut into blocks of ``tile`` output rows (``tile >= out_len``: one dense matrix).

    Taps that fall outside the image are folded onto the pixels MATLAB's symmetric padding would copy there, so
    every block reads one contiguous window of real input rows and no padded copy of the image is ever made.
    """
    idx, weights = _taps(in_len, out_len, scale, antialias)
    real = _symmetric(idx, in_len)
    nonzero = weights != 0
    blocks = []
    for start in range(0, out_len, tile):
        stop = min(start + tile, out_len)
        rows_idx, rows_w, rows_nz = real[start:stop], weights[start:stop], nonzero[start:stop]
        lo, hi = int(rows_idx[rows_nz].min()), int(rows_idx[rows_nz].max()) + 1
        matrix = torch.zeros(stop - start, hi - lo, dtype=torch.float64)
        rows = torch.arange(stop - start)[:, None].expand_as(rows_idx)
        matrix.index_put_((rows[rows_nz], rows_idx[rows_nz] - lo), rows_w[rows_nz], accumulate=True)
        blocks.append((lo, hi, matrix.to(device=device, dtype=dtype)))
    return tuple(blocks)


def _tile(in_len: int, out_len: int, device: torch.device) -> int:
    if device.type != "cpu":
        return out_len
    if out_len <= in_len:
        return max(1, round(TILE_INPUT_ROWS * out_len / in_len))
    return TILE_OUTPUT_ROWS


def _unchanged(in_len: int, out_len: int, scale: float) -> bool:
    """Whether resizing an axis is the identity: the cubic is 1 at 0 and 0 at other integers."""
    return out_len == in_len and scale == 1


def _resize_axis(x: torch.Tensor, dim: int, out_len: int, scale: float, antialias: bool) -> torch.Tensor:
    """Resize ``x`` (B, H, W) along ``dim`` (1 = H: matrix on the left, 2 = W: matrix on the right)."""
    in_len = x.shape[dim]
    if _unchanged(in_len, out_len, scale):
        return x.clone()  # never alias the caller's tensor
    tile = _tile(in_len, out_len, x.device)
    blocks = _blocks(in_len, out_len, float(scale), antialias, tile, str(x.device), x.dtype)

    def product(lo: int, hi: int, matrix: torch.Tensor) -> torch.Tensor:
        window = x.narrow(dim, lo, hi - lo)  # a view: blocks read the input in place
        return torch.matmul(matrix, window) if dim == 1 else torch.matmul(window, matrix.T)

    if len(blocks) == 1:
        return product(*blocks[0])
    if torch.is_grad_enabled() and x.requires_grad:
        return torch.cat([product(*block) for block in blocks], dim=dim)
    # Without autograd, blocks write straight into the result: no concatenation copy, which matters when
    # enlarging, where writing the output is most of the work. (A W-pass block is one plain matrix product that
    # BLAS writes into the strided columns directly; an H-pass block is a batched product, copied in.)
    shape = list(x.shape)
    shape[dim] = out_len
    result = x.new_empty(shape)
    start = 0
    for lo, hi, matrix in blocks:
        target = result.narrow(dim, start, matrix.shape[0])
        if dim == 1:
            target.copy_(product(lo, hi, matrix))
        else:
            torch.matmul(x.narrow(dim, lo, hi - lo), matrix.T, out=target)
        start += matrix.shape[0]
    return result


@functools.lru_cache(maxsize=64)
def _tap_table(in_len: int, out_len: int, scale: float, antialias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The native kernels' table: per output pixel, in-range (folded) int32 indices and float32 weights, without
    the leading and trailing tap columns that are zero for every output pixel."""
    idx, weights = _taps(in_len, out_len, scale, antialias)
    used = (weights != 0).any(dim=0).nonzero().flatten()
    lo, hi = int(used[0]), int(used[-1]) + 1
    real = _symmetric(idx[:, lo:hi], in_len)
    return real.to(torch.int32).contiguous(), weights[:, lo:hi].to(torch.float32).contiguous()


# Below this many output values per pass a second thread costs more to start (~25 us) than it saves.
NATIVE_MIN_PER_THREAD = 1 << 15


def _threads(outputs: int) -> int:
    return max(1, min(torch.get_num_threads(), outputs // NATIVE_MIN_PER_THREAD))


def _check(status: int) -> None:
    if status != 0:
        raise MemoryError("imresize: out of memory for the C++ kernel's scratch buffers")


def _native_axis(x: torch.Tensor, dim: int, out_len: int, scale: float, antialias: bool) -> torch.Tensor:
    """``_resize_axis`` in the C++ kernels: ``x`` is a contiguous float32 (B, H, W) CPU tensor."""
    lib = native.library()
    assert lib is not None
    planes, rows, cols = x.shape
    in_len = x.shape[dim]
    if _unchanged(in_len, out_len, scale):
        return x.clone()
    idx, weights = _tap_table(in_len, out_len, float(scale), antialias)
    shape = [planes, rows, cols]
    shape[dim] = out_len
    out = x.new_empty(shape)
    kernel = lib.srkd_resize_rows if dim == 1 else lib.srkd_resize_cols
    _check(kernel(x.data_ptr(), out.data_ptr(), planes, rows, cols, out_len, idx.data_ptr(), weights.data_ptr(),
                  idx.shape[1], _threads(out.numel())))
    return out


def _native_rows_cols(x: torch.Tensor, out_h: int, out_w: int, scale_h: float, scale_w: float,
                      antialias: bool) -> torch.Tensor:
    """Both axes, rows first, in one fused C++ kernel (the intermediate image never leaves the cache)."""
    lib = native.library()
    assert lib is not None
    planes, in_h, in_w = x.shape
    row_idx, row_w = _tap_table(in_h, out_h, float(scale_h), antialias)
    col_idx, col_w = _tap_table(in_w, out_w, float(scale_w), antialias)
    out = x.new_empty(planes, out_h, out_w)
    _check(lib.srkd_resize_rows_cols(x.data_ptr(), out.data_ptr(), planes, in_h, in_w, out_h, out_w,
                                     row_idx.data_ptr(), row_w.data_ptr(), row_idx.shape[1], col_idx.data_ptr(),
                                     col_w.data_ptr(), col_idx.shape[1], _threads(planes * out_h * in_w)))
    return out


def _use_native(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not (torch.is_grad_enabled() and x.requires_grad)
            and native.library() is not None)


def imresize(
    x: torch.Tensor,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """Bicubic resize exactly as MATLAB's ``imresize(x, scale)`` / ``imresize(x, [h w])``.

    ``x`` is ``(C, H, W)`` or ``(N, C, H, W)``. Float input gives float output on the same scale, neither clamped
    nor rounded (bfloat16/float16 inputs are computed and returned in float32, also under autocast); ``uint8``
    input gives ``uint8`` output rounded half away from zero and clamped, as MATLAB does for ``uint8`` images.
    Give exactly one of ``scale`` (the same factor for both axes; output ``ceil(H * scale)``) or ``size``
    (``(out_h, out_w)``; each axis then uses the factor ``out / in``, as MATLAB does).
    ``antialias=False`` keeps the plain cubic kernel when shrinking (MATLAB's ``'Antialiasing', false``).
    """
    if (scale is None) == (size is None):
        raise ValueError("imresize: give exactly one of scale or size")
    if x.dim() not in (3, 4):
        raise ValueError(f"imresize: expected (C, H, W) or (N, C, H, W), got shape {tuple(x.shape)}")
    in_h, in_w = x.shape[-2:]
    if size is not None:
        out_h, out_w = int(size[0]), int(size[1])
        if out_h < 1 or out_w < 1:
            raise ValueError(f"imresize: output size must be positive, got {size}")
        scale_h, scale_w = out_h / in_h, out_w / in_w
    else:
        assert scale is not None  # exactly one of scale and size was given
        if not scale > 0:
            raise ValueError(f"imresize: scale must be positive, got {scale}")
        scale_h = scale_w = float(scale)
        side = min(in_h, in_w)
        if scale_h * (side + MIN_SCALE_SLACK) < 1:
            # the output is clamped to one pixel, but the kernel still spans 4/scale input pixels: 1e-7 meant a
            # 40-million-tap filter (3.4 GB, 22 s) to compute a single pixel
            raise ValueError(f"scale {scale:g} shrinks the {side}-pixel side of a {in_w}x{in_h} image far below "
                             f"one pixel (the smallest scale for it is 1/{side + MIN_SCALE_SLACK})")
        out_h, out_w = output_size(in_h, scale_h), output_size(in_w, scale_w)

    is_uint8 = x.dtype == torch.uint8
    if not (is_uint8 or x.is_floating_point()):
        raise ValueError(f"imresize: expected a uint8 or floating-point tensor, got {x.dtype}")
    work_dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    lead = x.shape[:-2]
    flat = x.reshape(-1, in_h, in_w).to(work_dtype)  # channels join the batch: one matmul covers them all
    resize_axis = _resize_axis
    if _use_native(flat):
        resize_axis, flat = _native_axis, flat.contiguous()

    with torch.autocast(device_type=x.device.type, enabled=False):
        # Shrink first (less data for the second pass), and let the H pass, which reads and writes whole rows,
        # touch the larger image: first when shrinking, last when enlarging. Measured ~2x faster than the reverse.
        if scale_h < scale_w or (scale_h == scale_w and scale_h <= 1):
            if (resize_axis is _native_axis and not _unchanged(in_h, out_h, scale_h)
                    and not _unchanged(in_w, out_w, scale_w)):
                out = _native_rows_cols(flat, out_h, out_w, scale_h, scale_w, antialias)
            else:
                out = resize_axis(resize_axis(flat, 1, out_h, scale_h, antialias), 2, out_w, scale_w, antialias)
        else:
            out = resize_axis(resize_axis(flat, 2, out_w, scale_w, antialias), 1, out_h, scale_h, antialias)
    out = out.reshape(*lead, out_h, out_w)
    if is_uint8:  # MATLAB saturates, then rounds half away from zero (= half up, once clamped to [0, 255])
        return out.clamp_(0, 255).add_(0.5).floor_().to(torch.uint8)
    return out
