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


# The registered sets ../shared holds, as `srkd data link` takes them (folder under ../shared/data).
SHARED_SETS = {"T91": "train/T91", "BSD200": "train/BSD200", "General100": "train/General100",
               "Set5": "benchmarks/Set5", "Set14": "benchmarks/Set14"}


@pytest.fixture(scope="session")
def shared_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root whose registered sets are links to the copies in ../shared, installed as a user would
    (``srkd data link``: every file checked against srkd's shipped sha256), so shipped recipes, which name their
    data ``T91``, ``Set5``..., train offline. One per session, so the LR cache under it is shared by the tests."""
    from srkd.data.download import install_from_folder

    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"needs {data} (the project's ../shared folder is not beside this checkout)")
    root = tmp_path_factory.mktemp("data-root")
    for name, folder in SHARED_SETS.items():
        install_from_folder(name, data / folder, root, link=True)
    return root


@pytest.fixture
def shared_data(shared_data_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$SRKD_DATA`` pointed at :func:`shared_data_root` for one test."""
    monkeypatch.setenv("SRKD_DATA", str(shared_data_root))
    return shared_data_root
