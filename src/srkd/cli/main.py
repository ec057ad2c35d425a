"""Entry point of the ``srkd`` console script.

Each sub-command lives in ``srkd.cli.<name>`` and exposes ``add_arguments(parser)`` and ``run(args) -> int``.
The modules are imported lazily, so ``srkd --help`` does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from srkd import __version__
from srkd.errors import SrkdError

# name -> (module, one-line help). Order is the order shown by --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "distil a small student offline on bundled photos and write an HTML report"),
    "train": ("train", "train a student (scratch, kd, fakd, csd, dukd, datafree) from a YAML config"),
    "datafree": ("train", "alias of `train` for data-free (DFSR) configs"),
    "config": ("config", "the shipped recipes: list them, show one with every key described, JSON schema"),
    "eval": ("eval", "PSNR/SSIM (Y channel) of a model or bicubic on benchmark sets"),
    "upscale": ("upscale", "super-resolve images with a checkpoint (tiled, bounded memory)"),
    "metrics": ("metrics", "PSNR/SSIM between SR and HR images, paired by file name"),
    "resize": ("resize", "MATLAB-compatible bicubic resize of an image"),
    "info": ("info", "parameters, FLOPs and latency of a model or checkpoint"),
    "teachers": ("teachers", "published teachers to distil from: list, download (sha256-checked) and convert"),
    "convert": ("convert", "convert an official checkpoint (pytorch-vdsr, MatConvNet, EDSR, BasicSR...) to srkd"),
    "export": ("export", "export a checkpoint to ONNX or TorchScript"),
    "data": ("data", "list, download and verify datasets"),
    "report": ("report", "tables and figures (Markdown + HTML) from run directories"),
    "reproduce": ("reproduce", "run every cell of a paper table and report it"),
    "bench": ("bench", "speed benchmarks against a BasicSR-style baseline"),
}


# Modules of srkd's optional extras (pyproject.toml): import name -> (pip package, extra). A command that needs
# one says what to install in one line instead of a traceback (e.g. `srkd convert` of a MatConvNet .mat: scipy).
OPTIONAL: dict[str, tuple[str, str]] = {
    "scipy": ("scipy", "matconvnet"),
    "skimage": ("scikit-image", "demo"),
    "onnx": ("onnx", "onnx"),
    "onnxruntime": ("onnxruntime", "onnx"),
    "onnxscript": ("onnxscript", "onnx"),
}

_python_format = warnings.formatwarning
_SRKD_SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                   line: str | None = None) -> str:
    """srkd's own UserWarnings are messages for the user ("skipped 3 images smaller than the patch"), so they
    print as ``warning: ...`` like errors do; Python's format adds a file, a line number and a source line that
    only mean something to a developer. Everything else (library and deprecation warnings) keeps that format."""
    if category is UserWarning and os.path.abspath(filename).startswith(_SRKD_SOURCE):
        return f"warning: {message}\n"
    return _python_format(message, category, filename, lineno, line)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="srkd",
        description="Knowledge distillation for super-resolution, with data or without any.",
    )
    parser.add_argument("--version", action="version", version=f"srkd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv or ["--help"])  # prints help or a usage error and exits
        return 2
    name = argv[0]
    module = importlib.import_module(f"srkd.cli.{COMMANDS[name][0]}")
    sub = argparse.ArgumentParser(prog=f"srkd {name}", description=COMMANDS[name][1])
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    args.command = name
    warnings.formatwarning = format_warning
    try:
        return int(module.run(args) or 0)
    except SrkdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        extra = OPTIONAL.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        package, group = extra
        print(f"error: this needs {package}, an optional dependency of srkd that is not installed: "
              f"pip install 'srkd[{group}]' (or {package})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `srkd eval ... | head`: the reader went away; nothing to report.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
