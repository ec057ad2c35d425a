"""``srkd train CONFIG`` (alias ``srkd datafree``): train a student with the method its config names.

CONFIG is a YAML file or the name of a recipe shipped with srkd (``srkd train edsr-x4-kd-quick``; ``srkd config
list`` names them all, ``srkd config show NAME`` explains one).

Multi-process (DDP) runs are launched with torchrun, one process per GPU (gloo on CPU)::

    torchrun --nproc_per_node=4 -m srkd.cli.main train configs/edsr-x4-dukd.yaml

``data.batch_size`` is per process: the global batch is ``batch_size * world size``.

Ctrl-C or SIGTERM finishes the current iteration, saves a training checkpoint and exits with status 130;
``--resume auto`` (the default) continues from it. A second Ctrl-C aborts without saving.
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config", metavar="CONFIG",
        help="YAML run config: a file, or the name of a shipped recipe (edsr-x4-dukd; list: srkd config list)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.iterations=1000 --set method.pix_weight=5 (repeatable)",
    )
    parser.add_argument(
        "--resume",
        default="auto",
        metavar="auto|PATH|none",
        help="auto (default): continue from the newest valid checkpoint of the run folder if any; "
        "PATH: from that training checkpoint; none: start fresh (refused if the folder holds checkpoints)",
    )
    parser.add_argument(
        "--out", metavar="DIR", help="run folder (default: out_dir of the config, else runs/<name>)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh (or from --resume PATH) in a run folder that holds another run's results, deleting "
        "its weights, log, config and checkpoints first (without it such a folder is refused)",
    )


def run(args: argparse.Namespace) -> int:
    if "TORCHELASTIC_RUN_ID" in os.environ:  # under torchrun: the launcher reports the failing rank's error
        from torch.distributed.elastic.multiprocessing.errors import record

        return record(_run)(args) or 0
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from srkd.config_base import load_config
    from srkd.engine.config import TrainConfig
    from srkd.engine.trainer import train
    from srkd.recipes import resolve_recipe

    cfg = load_config(TrainConfig, resolve_recipe(args.config), args.overrides)
    if args.out:
        cfg.out_dir = args.out
    resume = None if str(args.resume).lower() == "none" else args.resume
    run_dir = train(cfg, resume=resume, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank gets here; one line is enough
        print(f"run folder: {run_dir}")
    return 0
