"""BasicSR 1.4.2's MATLAB imresize and Y-channel PSNR/SSIM, loaded straight from its sdist, for parity tests.

BasicSR is the de-facto reference for these numbers, but its package ``__init__`` imports torchvision (no CPU
build here) and half of its training stack. Only four self-contained source files are needed, so they are read out
of ``.ref/basicsr-1.4.2.tar.gz`` (fetched by ``make dev``) and executed as modules against tiny stand-ins for the
``basicsr`` packages and the registry. ``sys.modules`` is patched only while the files execute, so nothing named
``basicsr`` is left behind for other tests to trip on.

Usage: ``ref = basicsr_reference()`` (skips the calling test with the reason when the sdist or cv2 is missing), then
``ref.imresize``, ``ref.calculate_psnr``, ``ref.calculate_ssim``, ``ref.bgr2ycbcr``...

``basicsr_archs()`` does the same for BasicSR's EDSR, RCAN and SwinIR classes (architecture parity, and loading
students converted ``--to basicsr`` with ``strict=True``).
"""

from __future__ import annotations

import functools
import os
import sys
import tarfile
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SDIST = Path(os.environ.get("SRKD_BASICSR_SDIST", REPO / ".ref" / "basicsr-1.4.2.tar.gz"))
_ROOT = "basicsr-1.4.2/basicsr/"
# Executed in this order: later files import names from earlier ones.
_FILES = {
    "basicsr.utils.color_util": "utils/color_util.py",
    "basicsr.utils.matlab_functions": "utils/matlab_functions.py",
    "basicsr.metrics.metric_util": "metrics/metric_util.py",
    "basicsr.metrics.psnr_ssim": "metrics/psnr_ssim.py",
}


class _Registry:
    """Stand-in for ``basicsr.utils.registry.Registry``: ``register()`` just returns the function."""

    def register(self, obj=None):
        return obj if obj is not None else (lambda fn: fn)


def _package(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # marks it as a package so submodule imports resolve through sys.modules
    return module


def _load(sdist: Path) -> types.SimpleNamespace:
    with tarfile.open(sdist) as tar:
        sources = {}
        for name, rel in _FILES.items():
            member = tar.extractfile(_ROOT + rel)
            if member is None:
                raise FileNotFoundError(f"{sdist}: {_ROOT + rel} missing")
            sources[name] = member.read().decode("utf-8")

    stubs = {name: _package(name) for name in ("basicsr", "basicsr.utils", "basicsr.metrics")}
    registry = types.ModuleType("basicsr.utils.registry")
    registry.METRIC_REGISTRY = _Registry()
    stubs["basicsr.utils.registry"] = registry
    saved = {name: sys.modules.get(name) for name in [*stubs, *_FILES]}
    namespace: dict[str, object] = {}
    try:
        sys.modules.update(stubs)
        for name, source in sources.items():
            module = types.ModuleType(name)
            module.__file__ = f"{sdist}/{_FILES[name]}"
            sys.modules[name] = module
            exec(compile(source, module.__file__, "exec"), module.__dict__)
            namespace.update({k: v for k, v in module.__dict__.items() if not k.startswith("__")})
            if name == "basicsr.utils.color_util":
                # metric_util does `from basicsr.utils import bgr2ycbcr`
                stubs["basicsr.utils"].__dict__.update(module.__dict__)
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    return types.SimpleNamespace(**namespace)


@functools.lru_cache(maxsize=1)
def _cached(sdist: str) -> types.SimpleNamespace:
    return _load(Path(sdist))


def basicsr_reference() -> types.SimpleNamespace:
    """The BasicSR reference functions, or skip the calling test saying what is missing."""
    if not SDIST.is_file():
        pytest.skip(f"BasicSR reference sdist not found at {SDIST} (run `make dev` to fetch it)")
    try:
        import cv2  # noqa: F401  (psnr_ssim.py needs it for its Gaussian window and filter2D)
    except ImportError:
        pytest.skip(
            "opencv-python-headless is not installed (it is in the dev extras: pip install -e '.[dev]')"
        )
    return _cached(str(SDIST))


def basicsr_archs() -> types.SimpleNamespace:
    """BasicSR 1.4.2's ``EDSR``, ``RCAN`` and ``SwinIR`` classes, or skip the calling test without the sdist.

    ``arch_util`` imports torchvision, the deformable-conv ops and the logger: stand-ins are enough for these
    three networks, which use none of them."""
    if not SDIST.is_file():
        pytest.skip(f"BasicSR reference sdist not found at {SDIST} (run `make dev` to fetch it)")
    return _cached_archs(str(SDIST))


@functools.lru_cache(maxsize=1)
def _cached_archs(sdist: str) -> types.SimpleNamespace:
    import torch.nn as nn

    names = ["arch_util", "edsr_arch", "rcan_arch", "swinir_arch"]
    with tarfile.open(sdist) as tar:
        sources = {}
        for n in names:
            member = tar.extractfile(f"{_ROOT}archs/{n}.py")
            if member is None:
                raise FileNotFoundError(f"{sdist}: {_ROOT}archs/{n}.py missing")
            sources[n] = member.read().decode("utf-8")
    registry = types.SimpleNamespace(register=lambda obj=None: obj if obj is not None else (lambda f: f))
    stub_names = ["torchvision", "basicsr", "basicsr.ops", "basicsr.ops.dcn", "basicsr.utils",
                  "basicsr.utils.registry", "basicsr.archs"]
    stubs: dict[str, types.ModuleType] = {n: types.ModuleType(n) for n in stub_names}
    stubs["basicsr.archs"].__path__ = []
    stubs["basicsr.utils.registry"].ARCH_REGISTRY = registry  # type: ignore[attr-defined]
    stubs["basicsr.ops.dcn"].ModulatedDeformConvPack = nn.Module  # type: ignore[attr-defined]
    stubs["basicsr.ops.dcn"].modulated_deform_conv = None  # type: ignore[attr-defined]
    stubs["basicsr.utils"].get_root_logger = None  # type: ignore[attr-defined]
    try:
        import distutils.version  # noqa: F401  (arch_util imports LooseVersion; gone in Python 3.12)
    except ImportError:
        stubs["distutils"] = types.ModuleType("distutils")
        version = types.ModuleType("distutils.version")
        version.LooseVersion = str  # type: ignore[attr-defined]
        stubs["distutils.version"] = version
    modules: dict[str, types.ModuleType] = {}
    saved = {n: sys.modules.get(n) for n in [*stubs, *(f"basicsr.archs.{n}" for n in names)]}
    try:
        sys.modules.update(stubs)
        for n in names:
            mod = types.ModuleType(f"basicsr.archs.{n}")
            mod.__package__ = "basicsr.archs"
            sys.modules[mod.__name__] = modules[n] = mod
            exec(compile(sources[n], f"{sdist}/{n}.py", "exec"), mod.__dict__)
    finally:
        for n, old in saved.items():
            if old is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = old
    return types.SimpleNamespace(
        EDSR=modules["edsr_arch"].EDSR, RCAN=modules["rcan_arch"].RCAN, SwinIR=modules["swinir_arch"].SwinIR
    )
