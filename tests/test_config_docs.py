"""Every config key says what it does: each field of TrainConfig, its sections and every method's config has a
description, ``srkd config show`` prints them beside the resolved values, ``srkd config schema`` hands them to
editors, and ``srkd config list`` names the shipped recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from srkd.cli.config import annotated_yaml
from srkd.cli.main import main
from srkd.config_base import load_config
from srkd.distill import METHODS, get_method
from srkd.engine.config import TrainConfig
from srkd.recipes import resolve_recipe


def _models(root: type[BaseModel]) -> list[type[BaseModel]]:
    """``root`` and every config model reachable through its fields' annotations."""
    from srkd.config_base import _first_model

    found: list[type[BaseModel]] = []
    todo = [root]
    while todo:
        model = todo.pop()
        if model in found:
            continue
        found.append(model)
        todo.extend(m for f in model.model_fields.values() if (m := _first_model(f.annotation)) is not None)
    return found


def _all_models() -> list:
    params, seen = [], set()
    for owner, root in [("engine", TrainConfig), *((name, get_method(name).Config) for name in METHODS)]:
        for model in _models(root):
            if model in seen:
                continue
            seen.add(model)
            params.append(pytest.param(model, id=f"{owner}:{model.__module__.rsplit('.', 1)[-1]}.{model.__name__}"))
    return params


@pytest.mark.parametrize("model", _all_models())
def test_every_config_field_has_a_description(model: type[BaseModel]) -> None:
    bare = [name for name, info in model.model_fields.items() if not (info.description or "").strip()]
    assert not bare, f"{model.__module__}.{model.__name__}: no description for {bare}"


def test_show_prints_the_resolved_recipe_with_each_key_described(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "edsr-x4-dukd", "--set", "train.iterations=7"]) == 0
    out = capsys.readouterr().out
    cfg = load_config(TrainConfig, resolve_recipe("edsr-x4-dukd"), ["train.iterations=7"])
    assert TrainConfig.model_validate(yaml.safe_load(out)) == cfg  # the printout is itself a valid config
    keys = [line for line in out.splitlines() if line and not line.startswith("#")]
    assert len(keys) >= 55 and all("  # " in line for line in keys), [k for k in keys if "  # " not in k]
    assert "iterations: 7" in out and "pix_weight: 5.0" in out and "DUKD (Zhang et al.)" in out  # its header
    assert annotated_yaml(cfg.data)[0].startswith("train: [DIV2K]   # training sets: registry names")


def test_schema_describes_every_key_and_each_method(tmp_path: Path) -> None:
    out = tmp_path / "srkd.schema.json"
    assert main(["config", "schema", str(out)]) == 0
    schema = json.loads(out.read_text())
    assert schema["$schema"].endswith("2020-12/schema") and schema["additionalProperties"] is False
    assert all(p.get("description") for p in schema["properties"].values())
    refs = {v.get("$ref", "").rsplit("/", 1)[-1] for v in schema["properties"]["method"]["anyOf"]}
    assert {f"method_{m}" for m in METHODS} <= refs
    kd = schema["$defs"]["method_kd"]
    assert kd["required"] == ["name"] and kd["properties"]["name"]["const"] == "kd"
    assert kd["additionalProperties"] is False and kd["properties"]["kd_weight"]["description"]


def test_list_names_the_shipped_recipes_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "list", "--json", "-"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert "edsr-x4-dukd" in rows and "teachers/rcan-20-x4" in rows and rows["edsr-x4-dukd"]["about"]
