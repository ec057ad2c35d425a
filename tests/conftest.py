"""Shared fixtures. Tests that need ../shared (real benchmark images, pretrained weights) skip when it is absent."""

from __future__ import annotations

import os

# Before torch starts its OpenMP pool: busy-waiting threads make tiny ops 100x slower on a loaded 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SRKD_SHARED", REPO.parent / "shared"))
BASICSR_SDIST = REPO / ".ref" / "basicsr-1.4.2.tar.gz"

torch.set_num_threads(min(2, os.cpu_count() or 1))


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the calling test with the reason."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the project's ../shared folder is not beside this checkout)")
    return path


@pytest.fixture
def set5_hr() -> Path:
    return shared_path("data", "benchmarks", "Set5", "HR")


@pytest.fixture
def vdsr_pth() -> Path:
    return shared_path("weights", "vdsr", "pytorch-vdsr_model_epoch_50.pth")


@pytest.fixture
def vdsr_mat() -> Path:
    return shared_path("weights", "vdsr", "caffe-vdsr_VDSR_Official.mat")
