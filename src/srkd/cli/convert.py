"""``srkd convert SRC DST``: official checkpoint (pytorch-vdsr, MatConvNet, EDSR, BasicSR, RCAN, SwinIR) -> srkd;
``srkd convert --to basicsr|official SRC DST``: an srkd checkpoint -> that layout, so the student leaves srkd.

The layout and the architecture's sizes are recognised from the weights; ``--arch``, ``--scale`` and
``--set key=value`` pin what the weights cannot tell (EDSR's ``res_scale``) or disambiguate. Pickles are read
only here, through an unpickler that refuses anything but tensors and the known official module classes.

``--to`` runs the same layout records backwards (:mod:`srkd.checkpoint.export_layout`) and writes a PyTorch file:
``basicsr`` is ``torch.save({"params": state_dict})``, what BasicSR (and traiNNer, spandrel) load; ``official`` is
the plain state dict of the authors' code (EDSR-PyTorch, RCAN, SwinIR, pytorch-vdsr, BSRN, SMFANet, IMDN, RFDN,
CARN-M, PAN), with the constant tensors it stores (mean-shift convs, SwinIR's window masks) put back.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from srkd.cli.output import add_json_option, emit_json, to_stdout

if TYPE_CHECKING:
    import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="official checkpoint (.pth, .pt, .mat, .safetensors); "
                        "with --to, an srkd checkpoint")
    parser.add_argument("dst", metavar="DST", help="srkd checkpoint to write (.safetensors), or a folder; "
                        "with --to, the PyTorch file to write (.pth)")
    parser.add_argument(
        "--to", choices=("basicsr", "official"), default=None,
        help="the other way: write the srkd checkpoint SRC in BasicSR's layout (torch.save({'params': state_dict}); "
        "EDSR, RCAN, SwinIR, and the published-name architectures) or in the official code's layout (a plain "
        "state dict: EDSR-PyTorch, RCAN, SwinIR, pytorch-vdsr, BSRN, SMFANet, IMDN, RFDN, CARN-M, PAN)",
    )
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
    add_json_option(parser, "what was read and written")


def run(args: argparse.Namespace) -> int:
    import torch

    if args.to is not None:
        return _run_to(args, torch.float16 if args.fp16 else None)

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
    info = {"source": str(args.src), **info, "params": count_params(model)}
    emit_json(args, info)
    if to_stdout(args):
        return 0
    kwargs = ", ".join(f"{k}={v}" for k, v in info["kwargs"].items())
    scales = "/".join(f"x{s}" for s in info["scales"])
    print(f"read   {args.src} ({info['layout']} layout)")
    print(f"model  {info['arch']}({kwargs}): {info['params']:,} parameters, {scales}")
    for note in info["notes"]:
        print(f"note   {note}")
    print(f"wrote  {info['path']}")
    return 0


def _run_to(args: argparse.Namespace, dtype: torch.dtype | None) -> int:
    from srkd.checkpoint.export_layout import export_checkpoint
    from srkd.errors import SrkdError

    ignored = [flag for flag, on in (("--format", args.format != "auto"), ("--arch", args.arch), ("--scale", args.scale),
                                     ("--set", args.overrides), ("--key", args.key)) if on]
    if ignored:
        raise SrkdError(f"{', '.join(ignored)}: options for reading official checkpoints; with --to, SRC is an srkd "
                        "checkpoint, which says what it holds")
    info = export_checkpoint(args.src, args.dst, args.to, dtype=dtype)
    emit_json(args, {"source": str(args.src), **info})
    if to_stdout(args):
        return 0
    kwargs = ", ".join(f"{k}={v}" for k, v in info["kwargs"].items())
    wrapper = "{'params': state_dict}" if info["wrapper"] else "a plain state dict"
    print(f"read   {args.src} ({info['arch']}({kwargs}))")
    print(f"wrote  {info['path']} ({info['layout']} layout, {info['keys']} tensors, {wrapper})")
    print("note   build the target network with the same sizes (and res_scale / img_range, which no weight records)")
    return 0
