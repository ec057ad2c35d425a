"""``srkd data list|download|link|verify|samples``: the only commands that touch the network.

    srkd data list [--data-root DIR] [--json FILE|-]
    srkd data download NAME... [--data-root DIR] [--allow-unverified] [--keep-archive] [--no-progress]
    srkd data download NAME --from FOLDER [--link] [--data-root DIR]   (a local copy, checksums as a download)
    srkd data link NAME FOLDER [--data-root DIR]                      (= download NAME --from FOLDER --link)
    srkd data verify NAME... [--data-root DIR] [--json FILE|-]
    srkd data samples OUT_DIR [--split train|val|all]

Recipes name their data by registry name (``train: [T91, BSD200]``); ``--from``/``link`` is how a machine without
internet (CI, a cluster node, a checkout beside ``../shared``) makes those names resolve to copies it already has.
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

    from srkd.cli.output import add_json_option

    ls = with_root(sub.add_parser("list", help="registered datasets and whether they are present and verified"))
    add_json_option(ls, "one object per dataset")
    dl = with_root(sub.add_parser("download", help="download (or take from a local copy), verify and install datasets"))
    dl.add_argument("names", nargs="+", metavar="NAME")
    dl.add_argument("--from", dest="source", metavar="FOLDER", default=None,
                    help="install NAME from this local copy instead of the network (held to the same checksums)")
    dl.add_argument("--link", action="store_true",
                    help="with --from: symbolic links into the data root instead of copies (the copy must stay put)")
    dl.add_argument(
        "--allow-unverified",
        action="store_true",
        help="use a file that has no published checksum (its computed sha256 is printed)",
    )
    dl.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive after installing")
    dl.add_argument("--no-progress", action="store_true", help="no progress bars")
    lk = with_root(sub.add_parser("link", help="point the data root at a local copy of a dataset (verified, linked)"))
    lk.add_argument("names", nargs=1, metavar="NAME")
    lk.add_argument("source", metavar="FOLDER", help="the copy: a folder of HR images or the set's root (HR/, LR_bicubic/)")
    lk.add_argument("--allow-unverified", action="store_true",
                    help="link a set srkd ships no per-file sha256 for (B100, DIV2K...) as it is")
    vf = with_root(sub.add_parser("verify", help="re-hash installed datasets against their install record"))
    vf.add_argument("names", nargs="+", metavar="NAME")
    add_json_option(vf, "{name: {ok, summary}}")
    sm = sub.add_parser("samples", help="write the bundled scikit-image sample photos as PNG files")
    sm.add_argument("out", metavar="OUT_DIR")
    sm.add_argument("--split", choices=("train", "val", "all"), default="val")


def run(args: argparse.Namespace) -> int:
    if args.action == "link":
        args.link, args.keep_archive, args.no_progress = True, False, True
        return _download(args)
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

    from srkd.cli.output import emit_json, to_stdout
    from srkd.data import registry

    root = registry.data_root(args.data_root)
    rows = []
    for info in registry.DATASETS.values():
        present, verified = registry.status(info.name, args.data_root)
        marker = registry.read_marker(root / info.name) if present else None
        rows.append({
            "name": info.name, "kind": info.kind, "images": info.n_images, "size_bytes": info.size_bytes,
            "present": present, "verified": verified, "path": str(root / info.name) if present else None,
            "source": (marker or {}).get("source") or info.url, "linked": bool((marker or {}).get("linked")),
            "checksum": registry.checksum_kind(info, args.data_root) if info.url else None,
        })
    emit_json(args, {"data_root": str(root), "datasets": rows})
    if to_stdout(args):
        return 0
    table = Table(title=f"datasets in {root}")
    for col in ("name", "kind", "images", "size", "present", "verified", "checksum", "from"):
        table.add_column(col, overflow="fold", no_wrap=col == "name")
    for info, row in zip(registry.DATASETS.values(), rows):
        size = _size(info.size_bytes) if info.url else "manual"
        host = urllib.parse.urlsplit(info.url).hostname if info.url else "on request"
        if row["linked"]:
            host = f"linked to {row['source']}"
        table.add_row(info.name, info.kind, str(info.n_images), size, "yes" if row["present"] else "no",
                      str(row["verified"]), str(row["checksum"] or "-"), host or "")
    table.add_row("samples-train", "train", "6", "bundled", "yes", "-", "-", "scikit-image")
    table.add_row("samples-val", "benchmark", "2", "bundled", "yes", "-", "-", "scikit-image")
    Console(width=None if sys.stdout.isatty() else 160).print(table)  # piped: one line per dataset
    return 0


def _download(args: argparse.Namespace) -> int:
    from srkd.data import registry
    from srkd.data.download import install, install_from_folder
    from srkd.errors import DataError

    infos = [registry.get(name) for name in args.names]  # every name checked before anything is fetched
    if args.source is not None or args.link:
        if args.source is None:
            raise DataError("--link goes with --from FOLDER (the local copy to link to)")
        if len(infos) != 1:
            raise DataError(f"--from installs one dataset from one folder; got {len(infos)} names")
        folder, new = install_from_folder(infos[0].name, args.source, args.data_root, link=args.link,
                                          allow_unverified=args.allow_unverified)
        how = "linked" if args.link else "installed"
        print(f"{infos[0].name}: {how} in {folder} from {args.source}" if new
              else f"{infos[0].name}: already {how} in {folder} from {args.source}")
        return 0
    for info in infos:
        was_there = (registry.data_root(args.data_root) / info.name / registry.MARKER).exists()
        folder = install(info.name, args.data_root, allow_unverified=args.allow_unverified,
                         progress=not args.no_progress and sys.stderr.isatty(), keep_archive=args.keep_archive)
        print(f"{info.name}: {'already installed in' if was_there else 'installed in'} {folder}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from srkd.cli.output import emit_json, to_stdout
    from srkd.data import registry
    from srkd.data.download import verify

    infos = [registry.get(name) for name in args.names]
    failed = 0
    results = {}
    for info in infos:
        ok, line = verify(info.name, args.data_root)
        results[info.name] = {"ok": ok, "summary": line}
        if not to_stdout(args):
            print(line)
        failed += not ok
    emit_json(args, results)
    return 1 if failed else 0


def _samples(args: argparse.Namespace) -> int:
    from pathlib import Path

    from srkd.data.samples import export_samples

    written = export_samples(Path(args.out), args.split)
    print(f"wrote {len(written)} images to {args.out}")
    return 0
