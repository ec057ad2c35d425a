"""The bundled sample set and the ``srkd data`` command (offline)."""

from __future__ import annotations

import pytest
import torch

from srkd.cli.main import main
from srkd.data.images import read_image
from srkd.data.samples import SPLITS, export_samples, sample_images


def test_sample_split_is_fixed_and_disjoint():
    train = sample_images("train")
    val = sample_images("val")
    assert [n for n, _ in val] == ["astronaut", "chelsea"]
    assert [n for n, _ in train] == ["coffee", "hubble_deep_field", "ihc", "motorcycle_left", "retina", "rocket"]
    assert not {n for n, _ in train} & {n for n, _ in val}
    for _, img in train + val:
        assert img.dtype == torch.uint8 and img.shape[0] == 3 and min(img.shape[1:]) >= 300
    assert dict(val)["astronaut"].shape == (3, 512, 512)
    assert len(sample_images("all")) == len(SPLITS["train"]) + len(SPLITS["val"])


def test_export_samples_is_lossless(tmp_path):
    written = export_samples(tmp_path / "val", "val")
    assert [p.name for p in written] == ["astronaut.png", "chelsea.png"]
    assert torch.equal(read_image(written[0]), dict(sample_images("val"))["astronaut"])


def test_cli_list_and_verify(tmp_path, capsys):
    assert main(["data", "list", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Urban100" in out and "DIV2K" in out and "samples-val" in out
    assert main(["data", "verify", "Set5", "--data-root", str(tmp_path)]) == 1
    assert "not present" in capsys.readouterr().out


def test_cli_unknown_dataset_is_one_line(tmp_path, capsys):
    assert main(["data", "download", "Set5", "NoSuchSet", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown dataset 'NoSuchSet'") and "\n" not in err
    assert not any(tmp_path.iterdir())  # names are checked before anything is fetched


def test_cli_manual_dataset(tmp_path, capsys):
    assert main(["data", "download", "Manga109", "--data-root", str(tmp_path)]) == 2
    assert "manga109.org" in capsys.readouterr().err


def test_cli_samples(tmp_path, capsys):
    assert main(["data", "samples", str(tmp_path / "s"), "--split", "train"]) == 0
    assert len(list((tmp_path / "s").glob("*.png"))) == 6


@pytest.mark.parametrize("argv", [["data"], ["data", "bogus"]])
def test_cli_usage_errors(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
