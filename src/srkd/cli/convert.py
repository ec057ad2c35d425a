"""``srkd convert SRC DST``: official checkpoint (pytorch-vdsr, MatConvNet, EDSR, BasicSR, RCAN, SwinIR) -> srkd.

The layout and the architecture's sizes are recognised from the weights; ``--arch``, ``--scale`` and
``--set key=value`` pin what the weights cannot tell (EDSR's ``res_scale``) or disambiguate. Pickles are read
only here, through an unpickler that refuses anything but tensors and the known official module classes.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="official checkpoint (.pth, .pt, .mat, .safetensors)")
    parser.add_argument("dst", metavar="DST", help="srkd checkpoint to write (.safetensors), or a folder")
    parser.add_argument(
        "--format", default="auto", help="layout of SRC (default: recognised from its keys; a wrong name lists the known ones)"
    )
    parser.add_argument("--arch", default=None, help="architecture (srkd registry name) when ambiguous")
    parser.add_argument("--scale", type=int, default=None, help="scale of the weights (checked against the upsampler)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="model argument the weights do not record, e.g. res_scale=0.1 (repeatable)",
    )
    parser.add_argument("--key", default=None, help="entry of a dict checkpoint to read (default: params_ema, params...)")
    parser.add_argument("--fp16", action="store_true", help="store weights as float16 (loaded back as float32)")


def run(args: argparse.Namespace) -> int:
    import torch

    from srkd.checkpoint.convert import convert, parse_overrides
    from srkd.models.profile import count_params

    model, info = convert(
        args.src,
        args.dst,
        fmt=args.format,
        arch=args.arch,
        scale=args.scale,
        overrides=parse_overrides(args.overrides),
        key=args.key,
        dtype=torch.float16 if args.fp16 else None,
    )
    kwargs = ", ".join(f"{k}={v}" for k, v in info["kwargs"].items())
    scales = "/".join(f"x{s}" for s in info["scales"])
    print(f"read   {args.src} ({info['layout']} layout)")
    print(f"model  {info['arch']}({kwargs}): {count_params(model):,} parameters, {scales}")
    for note in info["notes"]:
        print(f"note   {note}")
    print(f"wrote  {info['path']}")
    return 0
