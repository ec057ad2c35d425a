"""Installing a registered dataset from a local copy (``srkd data download NAME --from FOLDER`` / ``srkd data
link NAME FOLDER``): the machine is offline, the copy is held to the shipped checksums, and a recipe naming the set
then finds it under the data root. Synthetic sets, except one check against ../shared when it is there."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from srkd.cli.main import main
from srkd.data import benchmark, registry
from srkd.data import download as dl
from srkd.data.images import write_image
from srkd.errors import DataError


def _png(path: Path, seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    write_image(path, torch.randint(0, 256, (3, 12, 10), generator=g, dtype=torch.uint8))
    return path.read_bytes()


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registered set 'Tiny' (3 HR images + 1 LR) whose shipped hashes are those of a copy in tmp_path/copy."""
    copy = tmp_path / "copy"
    sums = {f"HR/im{i}.png": _png(copy / "HR" / f"im{i}.png", i) for i in range(3)}
    sums["LR_bicubic/X2/im0x2.png"] = _png(copy / "LR_bicubic" / "X2" / "im0x2.png", 9)
    info = registry.DatasetInfo("Tiny", "train", 3, "https://example.invalid/", "files", None, hr_subdir="")
    monkeypatch.setitem(registry.DATASETS, "Tiny", info)
    expected = {rel: hashlib.sha256(data).hexdigest() for rel, data in sums.items()}
    monkeypatch.setattr(dl, "file_sha256", lambda name: dict(expected) if name == "Tiny" else {})
    monkeypatch.setenv("SRKD_DATA", str(tmp_path / "root"))
    return copy


@pytest.mark.parametrize("link", [False, True])
def test_a_verified_copy_installs_and_resolves_by_name(tiny: Path, tmp_path: Path, link: bool) -> None:
    folder, new = dl.install_from_folder("tiny", tiny, link=link)
    assert new and folder == tmp_path / "root" / "Tiny"
    assert (folder / "HR" / "im1.png").is_symlink() == link
    assert (folder / "HR" / "im1.png").read_bytes() == (tiny / "HR" / "im1.png").read_bytes()
    marker = registry.read_marker(folder)
    assert marker is not None and marker["source"] == str(tiny.resolve()) and marker["linked"] == link
    assert dl.verify("Tiny")[0] and dl.install_from_folder("Tiny", tiny, link=link) == (folder, False)
    bset = benchmark.resolve_dataset("Tiny")  # what a recipe's `train: [Tiny]` reads
    assert [p.name for p in bset.hr_paths] == ["im0.png", "im1.png", "im2.png"] and bset.lr_dir is not None
    assert not list((tmp_path / "root").glob(".*.staging"))


def test_a_changed_or_incomplete_copy_installs_nothing(tiny: Path, tmp_path: Path) -> None:
    (tiny / "HR" / "im2.png").write_bytes(b"not the image")
    (tiny / "LR_bicubic" / "X2" / "im0x2.png").unlink()
    with pytest.raises(DataError, match=r"not srkd's Tiny: of its 4 files, 1 missing \(LR_bicubic/X2/im0x2.png\); "
                                        r"1 differ \(HR/im2.png\) \(give the set's root"):
        dl.install_from_folder("Tiny", tiny)
    assert not (tmp_path / "root" / "Tiny").exists()


def test_a_flat_folder_of_hr_images_is_a_copy_too(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """../shared/data/train/T91 holds its images directly, not under HR/."""
    hr_only = {rel: d for rel, d in dl.file_sha256("Tiny").items() if rel.startswith("HR/")}
    monkeypatch.setattr(dl, "file_sha256", lambda name: dict(hr_only))
    folder, _ = dl.install_from_folder("Tiny", tiny / "HR", link=True)
    assert sorted(p.name for p in (folder / "HR").iterdir()) == ["im0.png", "im1.png", "im2.png"]


def test_a_set_without_shipped_hashes_needs_allow_unverified(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dl, "file_sha256", lambda name: {})
    with pytest.raises(DataError, match="--allow-unverified"):
        dl.install_from_folder("Tiny", tiny)
    folder, _ = dl.install_from_folder("Tiny", tiny, allow_unverified=True)
    assert "none" in registry.read_marker(folder)["verified_by"]  # type: ignore[index]
    assert len(list((folder / "HR").iterdir())) == 3 and (folder / "LR_bicubic" / "X2" / "im0x2.png").is_file()


def test_another_install_is_never_replaced(tiny: Path, tmp_path: Path) -> None:
    dl.install_from_folder("Tiny", tiny, link=True)
    with pytest.raises(DataError, match="already installed"):
        dl.install_from_folder("Tiny", tiny, link=False)
    (tmp_path / "root2" / "Tiny").mkdir(parents=True)  # a folder srkd did not make (no install record)
    with pytest.raises(DataError, match="not installed by srkd"):
        dl.install_from_folder("Tiny", tiny, tmp_path / "root2", link=True)


def test_cli_link_then_list_and_verify_as_json(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "link", "Tiny", str(tiny)]) == 0
    assert "Tiny: linked in" in capsys.readouterr().out
    assert main(["data", "download", "Tiny", "--from", str(tiny)]) == 2  # linked already: not silently copied
    assert "already installed" in capsys.readouterr().err
    assert main(["data", "verify", "Tiny", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["Tiny"]["ok"] is True
    assert main(["data", "list", "--json", "-"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["datasets"]}
    assert rows["Tiny"]["present"] and rows["Tiny"]["linked"] and not rows["T91"]["present"]
    assert main(["data", "download", "Tiny", "Set5", "--from", str(tiny)]) == 2
    assert "one dataset" in capsys.readouterr().err


@pytest.mark.shared
def test_the_shared_copies_are_srkd_sets(tmp_path: Path) -> None:
    from conftest import shared_path

    root = tmp_path / "root"
    for name, parts in (("T91", ("train", "T91")), ("Set5", ("benchmarks", "Set5"))):
        src = shared_path("data", *parts)
        folder, _ = dl.install_from_folder(name, src, root, link=True)
        ok, line = dl.verify(name, root)
        assert ok, line
        # the very files (and order) the folder gives a recipe: a registry name trains on the same data
        assert [p.resolve() for p in benchmark.resolve_dataset(name, root).hr_paths] == [
            p.resolve() for p in benchmark.resolve_dataset(src if name == "T91" else src / "HR").hr_paths]
