"""``srkd data list|download|verify|samples``: the only commands that touch the network.

    srkd data list [--data-root DIR]
    srkd data download NAME... [--data-root DIR] [--allow-unverified] [--keep-archive] [--no-progress]
    srkd data verify NAME... [--data-root DIR]
    srkd data samples OUT_DIR [--split train|val|all]
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def with_root(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--data-root", default=None, help="data folder (default: $SRKD_DATA or ~/.cache/srkd)")
        return p

    with_root(sub.add_parser("list", help="registered datasets and whether they are present and verified"))
    dl = with_root(sub.add_parser("download", help="download, verify and install datasets"))
    dl.add_argument("names", nargs="+", metavar="NAME")
    dl.add_argument(
        "--allow-unverified",
        action="store_true",
        help="use a file that has no published checksum (its computed sha256 is printed)",
    )
    dl.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive after installing")
    dl.add_argument("--no-progress", action="store_true", help="no progress bars")
    vf = with_root(sub.add_parser("verify", help="re-hash installed datasets against their install record"))
    vf.add_argument("names", nargs="+", metavar="NAME")
    sm = sub.add_parser("samples", help="write the bundled scikit-image sample photos as PNG files")
    sm.add_argument("out", metavar="OUT_DIR")
    sm.add_argument("--split", choices=("train", "val", "all"), default="val")


def run(args: argparse.Namespace) -> int:
    return {"list": _list, "download": _download, "verify": _verify, "samples": _samples}[args.action](args)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} B"


def _list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from srkd.data import registry

    root = registry.data_root(args.data_root)
    table = Table(title=f"datasets in {root}")
    for col in ("name", "kind", "images", "size", "present", "verified", "checksum", "from"):
        table.add_column(col, overflow="fold", no_wrap=col == "name")
    for info in registry.DATASETS.values():
        present, verified = registry.status(info.name, args.data_root)
        size = _size(info.size_bytes) if info.url else "manual"
        host = urllib.parse.urlsplit(info.url).hostname if info.url else "on request"
        table.add_row(info.name, info.kind, str(info.n_images), size, "yes" if present else "no", verified,
                      registry.checksum_kind(info, args.data_root) if info.url else "-", host or "")
    table.add_row("samples-train", "train", "6", "bundled", "yes", "-", "-", "scikit-image")
    table.add_row("samples-val", "benchmark", "2", "bundled", "yes", "-", "-", "scikit-image")
    Console(width=None if sys.stdout.isatty() else 160).print(table)  # piped: one line per dataset
    return 0


def _download(args: argparse.Namespace) -> int:
    from srkd.data import registry
    from srkd.data.download import install

    infos = [registry.get(name) for name in args.names]  # every name checked before anything is fetched
    for info in infos:
        was_there = (registry.data_root(args.data_root) / info.name / registry.MARKER).exists()
        folder = install(info.name, args.data_root, allow_unverified=args.allow_unverified,
                         progress=not args.no_progress and sys.stderr.isatty(), keep_archive=args.keep_archive)
        print(f"{info.name}: {'already installed in' if was_there else 'installed in'} {folder}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from srkd.data import registry
    from srkd.data.download import verify

    infos = [registry.get(name) for name in args.names]
    failed = 0
    for info in infos:
        ok, line = verify(info.name, args.data_root)
        print(line)
        failed += not ok
    return 1 if failed else 0


def _samples(args: argparse.Namespace) -> int:
    from pathlib import Path

    from srkd.data.samples import export_samples

    written = export_samples(Path(args.out), args.split)
    print(f"wrote {len(written)} images to {args.out}")
    return 0
