"""``srkd teachers list|download``: published checkpoints to distil from, fetched by name.

    srkd teachers list [--json FILE|-] [--data-root DIR]
    srkd teachers download NAME... [--from PATH_OR_URL] [--force] [--data-root DIR] [--no-progress]

A downloaded teacher is used as ``zoo:NAME`` wherever a checkpoint is expected (``teacher.checkpoint`` in a
config, ``srkd eval --model zoo:NAME``...).
"""

from __future__ import annotations

import argparse
import sys

from srkd.cli.output import add_json_option, emit_json, to_stdout


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="the zoo: architecture, scales, size, FLOPs, Set5 PSNR, licence, source")
    add_json_option(ls, "the list")
    dl = sub.add_parser("download", help="download, verify (sha256) and convert zoo models into the cache")
    dl.add_argument("names", nargs="+", metavar="NAME")
    dl.add_argument("--from", dest="source", default=None, metavar="PATH_OR_URL",
                    help="a local copy or mirror of the file instead of its pinned URL (same sha256 check)")
    dl.add_argument("--force", action="store_true", help="convert again even if the model is cached")
    dl.add_argument("--no-progress", action="store_true", help="no progress bar")
    for p in (ls, dl):
        p.add_argument("--data-root", default=None, help="cache folder root (default: $SRKD_DATA or ~/.cache/srkd)")


def run(args: argparse.Namespace) -> int:
    return _list(args) if args.action == "list" else _download(args)


def _rows(data_root: str | None) -> list[dict]:
    from srkd.checkpoint import zoo
    from srkd.models import build_model
    from srkd.models.profile import count_flops

    rows = []
    for e in zoo.catalog().values():
        scale = max(e.scales)
        model = build_model(e.arch, **e.kwargs, scale=scale)
        lr = (int(getattr(model, "in_channels", 3)), 720 // scale, 1280 // scale)  # FLOPs for a 1280x720 output
        rows.append({
            "name": e.name, "arch": e.arch, "scales": list(e.scales), "params": e.params,
            "gflops_720p": round(count_flops(model, lr) / 1e9, 2),
            "set5_psnr_srkd": e.set5_srkd, "set5_psnr_paper": e.set5_paper, "licence": e.licence,
            "source": e.url, "sha256": e.sha256, "cached": zoo.cached_path(e.name, data_root).is_file(),
        })
    return rows


def _psnr(values: dict) -> str:
    return " / ".join("-" if v is None else f"{v:.2f}" for v in values.values())


def _list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    rows = _rows(args.data_root)
    emit_json(args, rows)
    if to_stdout(args):
        return 0
    table = Table(title="srkd teacher zoo (`srkd teachers download NAME`, then teacher.checkpoint: zoo:NAME)")
    for col in ("name", "arch", "scales", "params", "GFLOPs@720p", "Set5 srkd", "Set5 paper", "licence", "cached"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["arch"], "/".join(f"x{s}" for s in r["scales"]), f"{r['params']:,}",
                      f"{r['gflops_720p']:.1f}", _psnr(r["set5_psnr_srkd"]), _psnr(r["set5_psnr_paper"]),
                      r["licence"][:24], "yes" if r["cached"] else "no")
    Console().print(table)
    return 0


def _download(args: argparse.Namespace) -> int:
    from srkd.checkpoint import zoo
    from srkd.checkpoint.fetch import fetch

    entries = [zoo.get(n) for n in args.names]  # every name checked before anything is fetched
    if args.source and len(entries) > 1:
        print("error: --from names one file, so give one NAME with it", file=sys.stderr)
        return 2
    for e in entries:
        was_there = zoo.cached_path(e.name, args.data_root).is_file() and not args.force
        path = fetch(e.name, source=args.source, root=args.data_root, force=args.force,
                     progress=not args.no_progress and sys.stderr.isatty())
        print(f"zoo:{e.name}: {'already in' if was_there else 'verified and converted to'} {path}")
    return 0
