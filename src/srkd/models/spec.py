"""The one-line model spelling ``arch[:key=value,...]`` (``srkd info edsr:n_feats=64``, ``srkd.distill(...,
student="edsr:n_feats=32")``): parsed in one place for the CLI and the Python API. Values are YAML, so lists
(``depths=[6,6,6,6]``) and numbers keep their types.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from srkd.errors import SrkdError


def parse_spec(text: str) -> tuple[str, dict[str, Any]]:
    """``"edsr:n_feats=64,depths=[6,6]"`` -> ``("edsr", {"n_feats": 64, "depths": [6, 6]})``."""
    arch, _, rest = text.partition(":")
    kwargs: dict[str, Any] = {}
    # split on commas that are not inside brackets, so list values keep theirs
    for item in (p for p in re.split(r",(?![^\[\(]*[\]\)])", rest) if p.strip()):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SrkdError(f"model spec '{text}': expected key=value, got '{item}'")
        try:
            kwargs[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise SrkdError(f"model spec '{text}': cannot parse the value of '{key.strip()}'") from None
    return arch.strip(), kwargs


__all__ = ["parse_spec"]
