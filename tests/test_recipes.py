"""Recipes that travel: the configs ship inside the package, ``srkd train NAME`` finds one by name, and what they
train on is named by registry name (resolved under the data root), never by a path into this checkout."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from srkd.cli.main import main
from srkd.data import registry, samples
from srkd.data.benchmark import data_key, with_data_keys
from srkd.errors import ConfigError
from srkd.recipes import recipe_names, recipes_dir, resolve_recipe

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(recipes_dir().rglob("*.yaml"))


def _id(path: Path) -> str:
    return path.relative_to(recipes_dir()).with_suffix("").as_posix()


def _params() -> list:
    return [pytest.param(p, id=_id(p)) for p in SHIPPED]


def test_the_recipes_are_package_data_and_the_checkout_links_to_them() -> None:
    assert recipes_dir() == Path(__file__).resolve().parents[1] / "src" / "srkd" / "configs"
    assert len(SHIPPED) >= 90 and "edsr-x4-dukd" in recipe_names() and "teachers/rcan-20-x4" in recipe_names()
    assert (REPO / "configs").resolve() == recipes_dir().resolve()  # configs/<name>.yaml keeps working
    assert '"configs/**/*.yaml"' in (REPO / "pyproject.toml").read_text()  # [tool.setuptools.package-data]


@pytest.mark.parametrize("path", _params())
def test_no_recipe_points_into_this_checkout(path: Path) -> None:
    """Every dataset a recipe trains or validates on is a registry name (or a bundled sample split), and no
    text in it (comments included) sends a user to ../shared, which only this project's machines have."""
    assert "../shared" not in path.read_text(encoding="utf-8")
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    specs = [*cfg.get("data", {}).get("train", []), *cfg.get("data", {}).get("val", []),
             *(cfg.get("method", {}).get("images", []) if isinstance(cfg.get("method"), dict) else [])]
    unknown = [s for s in specs if registry.lookup(s) is None and s.lower() not in samples.SPLIT_NAMES]
    assert not unknown, unknown


@pytest.mark.parametrize(("spec", "name"), [
    ("edsr-x4-dukd", "edsr-x4-dukd"), ("edsr-x4-dukd.yaml", "edsr-x4-dukd"),
    ("teachers/rcan-20-x4", "teachers/rcan-20-x4"), ("rcan-20-x4", "teachers/rcan-20-x4"),
])
def test_a_recipe_is_found_by_name(spec: str, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # outside the checkout: no configs/ folder here
    assert resolve_recipe(spec) == recipes_dir() / f"{name}.yaml"
    assert resolve_recipe("configs/edsr-x4-kd.yaml") == recipes_dir() / "edsr-x4-kd.yaml"
    mine = tmp_path / "edsr-x4-dukd"
    mine.write_text("name: x\n")
    assert resolve_recipe("edsr-x4-dukd") == Path("edsr-x4-dukd")  # a file that exists wins over a name


def test_an_unknown_name_lists_the_closest_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"edsr-x4-dukdd: config file not found, nor a shipped recipe of that "
                                          r"name \(closest: edsr-x4-dukd, "):
        resolve_recipe("edsr-x4-dukdd")
    assert main(["train", "swinir-x9-kd"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "closest: swinir-x" in err[0], err


def test_old_and_new_spellings_of_the_data_are_one_data_set() -> None:
    """A run folder written when the recipe said ../shared/data/train/T91 is still a run of `train: [T91]`."""
    assert data_key("../shared/data/train/T91") == data_key("t91") == "T91"
    assert data_key("../shared/data/benchmarks/Set5/HR") == "Set5" and data_key("/my/own/set") == "/my/own/set"
    old = {"data": {"train": ["../shared/data/train/BSD200"]}, "method": {"images": ["../x/T91"]}}
    assert with_data_keys(old) == {"data": {"train": ["BSD200"]}, "method": {"images": ["T91"]}}


@pytest.mark.shared
def test_train_a_shipped_recipe_by_name_on_its_own_data(shared_data: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """What a user of the wheel runs: a recipe name, its registry-named data (T91 + BSD200 + General100, Set5)
    under $SRKD_DATA, nothing from this checkout."""
    monkeypatch.chdir(tmp_path)
    code = main(["train", "edsr-x4-scratch-quick", "--out", str(tmp_path / "run"), "--set", "train.iterations=2",
                 "--set", "data.batch_size=2", "--set", "data.lr_patch=16", "--set", "train.val_every=2",
                 "--set", "student.kwargs={n_feats: 8, n_resblocks: 1}", "--set", "train.precision=fp32",
                 "--set", "train.channels_last=false", "--set", "train.device=cpu"])
    assert code == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["train"] == ["T91", "BSD200", "General100"] and saved["data"]["val"] == ["Set5"]
    assert (tmp_path / "run" / "best.safetensors").is_file()
