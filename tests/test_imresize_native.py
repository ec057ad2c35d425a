"""srkd's C++ imresize kernels: same numbers as the torch path, used only where they apply, optional everywhere.

These need a C++ compiler (CI's machine has g++); where none is found the comparisons skip with the reason, and
the fallback tests still run, since that is the case they are about.
"""

from __future__ import annotations

import pytest
import torch

import srkd.ops.imresize as imresize_module
from srkd.ops import native
from srkd.ops.imresize import imresize


@pytest.fixture
def lib():
    found = native.library()
    if found is None:
        pytest.skip(f"native imresize {native.status()}")
    return found


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """An empty build cache and no loaded library; the real one is restored afterwards."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    native.library.cache_clear()
    yield tmp_path
    native.library.cache_clear()


def spy_native(monkeypatch) -> list[str]:
    """Record each call into the C++ kernels (one name per call) while still making it."""
    calls: list[str] = []
    for name in ("_native_axis", "_native_rows_cols"):
        real = getattr(imresize_module, name)
        monkeypatch.setattr(imresize_module, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    return calls


def _torch_path(x: torch.Tensor, monkeypatch, **kw) -> torch.Tensor:
    with monkeypatch.context() as m:
        m.setattr(native, "library", lambda: None)
        return imresize(x, **kw)


CASES = [  # (shape, keyword arguments): integer and odd factors, tiles of 16 rows with a partial last one, tiny
    ((2, 3, 64, 48), {"scale": 0.25}),
    ((1, 3, 53, 37), {"scale": 1 / 3}),
    ((3, 1, 29, 31), {"scale": 0.7}),
    ((2, 3, 17, 23), {"scale": 4}),
    ((1, 2, 9, 5), {"scale": 3}),
    ((1, 1, 5, 3), {"scale": 0.25}),  # the kernel is 16 taps wide, the image 3-5 pixels
    ((2, 3, 1, 1), {"scale": 2}),
    ((2, 3, 40, 30), {"size": (40, 12)}),  # one axis unchanged: an exact copy
    ((2, 3, 40, 30), {"size": (17, 61)}),  # shrink one axis, enlarge the other
    ((2, 3, 40, 30), {"scale": 0.5, "antialias": False}),
    ((4, 3, 130, 100), {"scale": 0.25}),  # enough work for several threads
    ((2, 3, 70, 90), {"size": (30, 80)}),  # rows first (the larger shrink), fused, widths differ
    ((2, 3, 70, 90), {"size": (90, 30)}),  # columns first, two passes
]


@pytest.mark.parametrize(("shape", "kw"), CASES)
def test_native_matches_the_torch_path(lib, monkeypatch, shape, kw):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
    calls = spy_native(monkeypatch)
    ours = imresize(x, **kw)
    assert calls, "the float32 CPU resize did not take the native path"
    reference = _torch_path(x, monkeypatch, **kw)
    assert ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, rtol=0, atol=2e-6)


def test_native_results_do_not_depend_on_the_thread_count(lib):
    x = torch.rand(4, 3, 200, 150)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = [imresize(x, scale=s) for s in (0.25, 3)]
        torch.set_num_threads(4)
        four = [imresize(x, scale=s) for s in (0.25, 3)]
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, four):
        assert torch.equal(a, b)  # each output value is summed by one thread in one order


def test_native_path_is_skipped_where_it_does_not_apply(lib, monkeypatch):
    calls = spy_native(monkeypatch)
    x = torch.rand(1, 3, 20, 20)
    imresize(x.double(), scale=0.5)  # float64: the torch path keeps its precision
    imresize(x.clone().requires_grad_(True), scale=0.5).sum().backward()  # autograd needs the torch ops
    imresize(x.clone().requires_grad_(True), scale=0.5).detach()  # (detaching the result comes too late)
    assert not calls
    with torch.no_grad():
        imresize(x.clone().requires_grad_(True), scale=0.5)
    imresize(x.bfloat16(), scale=0.5)  # computed in float32
    imresize(x.permute(0, 1, 3, 2), scale=0.5)  # a non-contiguous view is made contiguous first
    assert calls == ["_native_rows_cols"] * 3  # both axes shrink: the fused kernel


def test_no_compiler_falls_back_to_torch_with_the_reason(fresh_build, monkeypatch):
    monkeypatch.setenv("CXX", "srkd-no-such-compiler")
    assert native.library() is None
    assert "no C++ compiler" in native.status() and "srkd-no-such-compiler" in native.status()
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(imresize(x, scale=0.5), _torch_path(x, monkeypatch, scale=0.5))


def test_a_failing_build_falls_back_and_leaves_no_partial_file(fresh_build, monkeypatch, tmp_path):
    fake = tmp_path / "bin" / "fake-cxx"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'fake-cxx 1.0'\n[ \"$1\" = --version ] && exit 0\necho 'error: nope' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    assert native.library() is None
    assert "error: nope" in native.status()
    assert not list((fresh_build / "srkd" / "native").glob("*"))
    assert imresize(torch.rand(1, 3, 16, 16), scale=0.5).shape == (1, 3, 8, 8)


def test_srkd_native_0_turns_it_off(fresh_build, monkeypatch):
    monkeypatch.setenv("SRKD_NATIVE", "0")
    assert native.library() is None and "SRKD_NATIVE=0" in native.status()


def test_the_build_is_cached_per_cpu(lib, fresh_build, monkeypatch):
    first = native._build(native.compiler())
    stamp = first.stat().st_mtime_ns
    assert native._build(native.compiler()) == first and first.stat().st_mtime_ns == stamp
    monkeypatch.setattr(native, "_cpu_signature", lambda: "another CPU with other flags")
    other = native._build(native.compiler())
    assert other != first and other.exists()  # -march=native code is never loaded on a CPU it was not built for


def test_a_failed_allocation_in_the_kernel_is_a_status_not_a_crash(lib):
    # A row wider than any memory: the scratch buffer cannot be allocated. No work (0 planes), so nothing is read.
    assert lib.srkd_resize_cols(None, None, 0, 16, 1 << 44, 1, None, None, 1, 2) == 1
    assert lib.srkd_resize_rows_cols(None, None, 0, 16, 1 << 44, 16, 1, None, None, 1, None, None, 1, 2) == 1
    x = torch.rand(1, 1, 8, 8)
    assert lib.srkd_resize_cols(x.data_ptr(), x.data_ptr(), 0, 8, 8, 8, None, None, 0, 2) == 0
