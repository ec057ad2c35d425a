"""``srkd demo``: distil the bundled EDSR teacher into a 4x smaller student, with DUKD and data-free, offline.

About five minutes on 2 CPU cores; ``--fast`` is a smoke test (under a minute, meaningless numbers). Rerunning
with the same ``--out`` reuses finished acts and resumes an interrupted one (changed settings retrain that act);
the table and the report are rebuilt every time.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("srkd-demo"), metavar="DIR",
                        help="output folder: runs, SR images, report.html/.md, results.json (default ./srkd-demo)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto (default): a GPU if there is one, else the CPU")
    parser.add_argument("--fast", action="store_true",
                        help="smoke test: tiny iteration counts, under a minute; the numbers mean nothing")
    parser.add_argument("--iterations-dukd", type=_positive, metavar="N",
                        help="DUKD student iterations (default: the ~5-minute budget, see srkd.demo.DEFAULT_BUDGET)")
    parser.add_argument("--iterations-datafree", type=_positive, metavar="N",
                        help="data-free student iterations (default: the ~5-minute budget)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of both acts (default 0)")
    parser.add_argument("--teacher", metavar="FILE|NAME",
                        help="an x2 RGB srkd checkpoint, or a downloaded zoo teacher (`srkd teachers download "
                             "bsrn-x2`, then --teacher bsrn-x2), instead of the bundled EDSR 64f/16b teacher")


def teacher_path(spec: str | None) -> Path:
    """The demo's teacher file: the bundled one, a checkpoint path, or a zoo name that must be downloaded already
    (the demo never touches the network)."""
    from srkd.checkpoint import zoo
    from srkd.demo import TEACHER_PATH

    if spec is None:
        return TEACHER_PATH
    if Path(spec).exists() or not (zoo.is_zoo_spec(spec) or spec.lower() in zoo.catalog()):
        return Path(spec)
    return zoo.resolve(spec if zoo.is_zoo_spec(spec) else zoo.PREFIX + spec.lower())


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from srkd.demo import DemoOptions, run_demo

    opts = DemoOptions(
        out=args.out,
        device=args.device,
        fast=args.fast,
        iterations_dukd=args.iterations_dukd,
        iterations_datafree=args.iterations_datafree,
        seed=args.seed,
        teacher=teacher_path(args.teacher),
    )
    console = Console()
    try:
        run_demo(opts, console)
    except KeyboardInterrupt:
        console.print(
            f"\ninterrupted: finished parts are kept in {args.out}; run the same command again to resume"
        )
        return 130
    return 0
