"""One PNG of the last sample grid of several data-free runs, one row per run (issue 37: modes side by side).

    python tools/side_by_side_samples.py OUT.png RUN_DIR=LABEL [RUN_DIR=LABEL ...] [--iter N]

Each run's grid comes from ``RUN_DIR/samples/iter_XXXXXXXX.png`` (written every ``method.sample_every``
iterations from a fixed code stream, so rows made at the same iteration show the same codes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from srkd.data.images import read_image
from srkd.report.figures import labelled_images


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR=LABEL")
    ap.add_argument("--iter", type=int, default=None, help="the grids of this iteration (default: each run's last)")
    ap.add_argument("--title", default="")
    args = ap.parse_args(argv)
    rows = []
    for spec in args.runs:
        run, _, label = spec.partition("=")
        grids = sorted((Path(run) / "samples").glob("iter_*.png"))
        if args.iter is not None:
            grids = [g for g in grids if g.stem == f"iter_{args.iter:08d}"]
        if not grids:
            print(f"error: {run}: no sample grid{'' if args.iter is None else f' of iteration {args.iter}'} "
                  "in its samples/ folder", file=sys.stderr)
            return 2
        rows.append((f"{label or Path(run).name} ({grids[-1].stem})", read_image(grids[-1])))
    args.out.write_bytes(labelled_images(rows, title=args.title))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
