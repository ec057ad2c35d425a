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


def add_device_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--device``, default ``auto`` on every command, as ``srkd train`` (``train.device: auto``) has it."""
    parser.add_argument(
        "--device", default="auto",
        help=f"device for {what}: auto (default: cuda when available, else cpu), cpu, cuda, cuda:1, mps",
    )


def pick_device(name: str) -> str:
    """The ``--device`` value as srkd's one device rule resolves it (:func:`srkd.device.resolve_device`: ``auto``
    -> ``cuda`` when torch sees a GPU, else ``cpu``), so an unusable device fails before any work."""
    from srkd.device import resolve_device

    return str(resolve_device(name, what="--device"))
