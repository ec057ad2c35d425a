"""``--json FILE|-``, the same on every command that prints results.

``-`` means the JSON *is* the output: it goes to stdout and the human table does not, so ``srkd eval ... --json -
| python -m json.tool`` (or ``jq``) reads one document; warnings, progress and errors stay on stderr. A file name
keeps the table on screen and writes the JSON beside it, atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from srkd.io import write_json


def add_json_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--json", metavar="FILE|-", default=None,
        help=f"write {what} as JSON to FILE; '-' prints it to stdout instead of the table (nothing else goes there)",
    )


def to_stdout(args: argparse.Namespace) -> bool:
    """True when ``--json -`` claims stdout: the command then prints no table."""
    return getattr(args, "json", None) == "-"


def finite(payload: Any) -> Any:
    """``payload`` with inf/NaN floats as ``null``: strict JSON has no infinity (identical images have an infinite
    PSNR), and ``json.tool``/``jq`` refuse Python's ``Infinity``."""
    if isinstance(payload, float):
        return payload if math.isfinite(payload) else None
    if isinstance(payload, dict):
        return {k: finite(v) for k, v in payload.items()}
    if isinstance(payload, (list, tuple)):
        return [finite(v) for v in payload]
    return payload


def emit_json(args: argparse.Namespace, payload: Any) -> None:
    """Write ``payload`` where ``--json`` says (nothing when it was not given)."""
    dest = getattr(args, "json", None)
    if dest is None:
        return
    payload = finite(payload)
    if dest == "-":
        sys.stdout.write(json.dumps(payload, indent=2, allow_nan=False) + "\n")
        sys.stdout.flush()
    else:
        write_json(dest, payload)
