"""``srkd report RUN_DIR... [--out DIR]``: the papers' tables and figures for some runs, as Markdown and HTML."""

from __future__ import annotations

import argparse

from srkd.errors import SrkdError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders written by `srkd train`")
    parser.add_argument("--out", default="srkd-report", metavar="DIR",
                        help="where report.md, report.html, report.json and figures/ go (default: srkd-report)")
    parser.add_argument("--data", default="Set5,Set14,B100", metavar="NAME_OR_DIR[,...]",
                        help="benchmark sets to measure on (default: Set5,Set14,B100)")
    parser.add_argument("--scale", default=None, metavar="S[,S...]",
                        help="only these scales (default: each run's own scale(s))")
    from srkd.cli.output import add_device_option

    add_device_option(parser, "evaluating the runs")
    parser.add_argument("--data-root", metavar="DIR", help="dataset root (default: $SRKD_DATA or ~/.cache/srkd)")
    parser.add_argument("--title", default="srkd report")
    parser.add_argument("--no-teacher", action="store_true", help="do not evaluate the runs' teachers")
    parser.add_argument("--no-visuals", action="store_true", help="skip the visual comparison")
    parser.add_argument("--no-agreement", action="store_true", help="skip the student-teacher agreement figure")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def parse_scales(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        scales = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SrkdError(f"--scale {text!r}: expected integers such as 4 or 2,3,4") from None
    if not scales or any(s < 1 for s in scales):
        raise SrkdError(f"--scale {text!r}: expected positive integers such as 4 or 2,3,4")
    return scales


def parse_sets(text: str) -> list[str]:
    sets = [s.strip() for s in text.split(",") if s.strip()]
    if not sets:
        raise SrkdError("--data: give at least one dataset name or folder")
    return sets


def run(args: argparse.Namespace) -> int:
    from srkd.cli.output import pick_device
    from srkd.report.build import FIGURES, build_report

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, flush=True)

    md, html = build_report(
        args.runs,
        args.out,
        sets=parse_sets(args.data),
        scales=parse_scales(args.scale),
        device=pick_device(args.device),
        data_root=args.data_root,
        teacher=not args.no_teacher,
        figures=[f for f in FIGURES if not (f == "visual" and args.no_visuals)
                 and not (f == "agreement" and args.no_agreement)],
        title=args.title,
        progress=not args.quiet,
        log=log,
    )
    print(f"report: {html}\nmarkdown: {md}")
    return 0
