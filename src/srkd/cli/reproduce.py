"""``srkd reproduce TABLE [--quick|--full] [--resume] [--dry-run]``: every cell of a paper table, then its report.

Tables: DFSR Tables 1, 2, 4 and Fig. 4; DUKD Tables 2, 3, 4 and Fig. 4 (see :mod:`srkd.reproduce` for each cell's config).
Finished cells are skipped, so the command can be run again after adding a config or killing a run.
"""

from __future__ import annotations

import argparse

from srkd.reproduce import TABLES, execute, plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", choices=list(TABLES), metavar="TABLE", help=f"one of: {', '.join(TABLES)}")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="recipes sized for a 2-core CPU (default)")
    size.add_argument("--full", dest="mode", action="store_const", const="full", help="the papers' settings")
    parser.set_defaults(mode="quick")
    parser.add_argument("--resume", action="store_true", help="continue unfinished runs from their last checkpoint")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (cells, configs, commands) and exit")
    parser.add_argument("--out", metavar="DIR", help="runs and reports root (default: runs/reproduce/<quick|full>)")
    parser.add_argument("--data", metavar="NAME_OR_DIR[,...]", help="benchmark sets (default: the table's)")
    parser.add_argument("--scales", metavar="S[,S...]", help="only the cells of these scales")
    parser.add_argument("--only", action="append", default=[], metavar="GLOB",
                        help="only cells whose id or label matches (repeatable), e.g. --only 'edsr-x4-*'")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value in every training config, e.g. --set train.device=cuda")
    parser.add_argument("--configs", metavar="DIR", help="config folder (default: ./configs)")
    parser.add_argument("--device", default="auto", help="evaluation device: auto, cpu, cuda (default: auto)")
    parser.add_argument("--data-root", metavar="DIR", help="dataset root (default: $SRKD_DATA or ~/.cache/srkd)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    from srkd.cli.report import parse_scales, parse_sets

    p = plan(
        args.table,
        args.mode,
        out=args.out,
        sets=parse_sets(args.data) if args.data else None,
        scales=parse_scales(args.scales),
        only=args.only,
        overrides=args.overrides,
        resume=args.resume,
        configs_dir=args.configs,
        data_root=args.data_root,
    )
    if args.dry_run:
        print(p.describe())
        return 0

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, flush=True)

    md, html = execute(p, device=args.device, data_root=args.data_root, progress=not args.quiet, log=log)
    print(f"report: {html}\nmarkdown: {md}")
    return 0
