"""Lint and type checks run with the tests, so CI (``make test``) fails on them as it fails on a test.

Both tools are pinned in the ``dev`` extra (``pyproject.toml``): a new release adding rules cannot turn a clean
checkout red. Outside ``make test``'s environment (tools not installed) the tests skip and say why.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_tool(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install -e '.[dev]' installs it)")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=False)


def test_ruff_finds_nothing() -> None:
    done = _run_tool("ruff", "check", "--no-cache", "src", "tests", "benchmarks", "tools")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_finds_nothing() -> None:
    """The package type-checks with the settings in pyproject.toml ([tool.mypy]: pydantic plugin, not strict)."""
    done = _run_tool("mypy", "--no-incremental")
    assert done.returncode == 0, done.stdout + done.stderr
