import subprocess
import sys

import pytest

from srkd.cli.main import main
from srkd.config_base import StrictModel, apply_overrides, validate
from srkd.errors import ConfigError


class Inner(StrictModel):
    lr: float = 1e-4
    batch_size: int = 16


class Outer(StrictModel):
    train: Inner = Inner()
    name: str


def test_unknown_key_names_key_and_allowed():
    with pytest.raises(ConfigError) as exc:
        validate(Outer, {"name": "x", "train": {"lrr": 1}}, "c.yaml")
    msg = str(exc.value)
    assert "unknown key 'train.lrr'" in msg and "batch_size, lr" in msg


def test_missing_and_wrong_type():
    with pytest.raises(ConfigError, match="missing required key 'name'"):
        validate(Outer, {}, "c.yaml")
    with pytest.raises(ConfigError, match="'train.batch_size'"):
        validate(Outer, {"name": "x", "train": {"batch_size": "many"}}, "c.yaml")


def test_overrides_parse_yaml_scalars():
    data = apply_overrides({"train": {"lr": 1}}, ["train.lr=2e-4", "name=abc"])
    cfg = validate(Outer, data)
    assert cfg.train.lr == 2e-4 and cfg.name == "abc"
    with pytest.raises(ConfigError):
        apply_overrides({}, ["novalue"])


def test_cli_help_is_fast_and_lists_commands():
    out = subprocess.run([sys.executable, "-m", "srkd.cli.main", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout and "train" in out.stdout


def test_cli_unknown_command_is_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
