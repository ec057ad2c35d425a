"""Export a trained student from a run's training checkpoint as a bundled fp16 srkd model.

Used for the demo teacher: its run predates the EMA warm-up, so its EMA copy still held much of the random
initialisation after 1500 steps; the raw weights of the final training checkpoint are exported instead.

    python tools/export_teacher.py RUN_DIR OUT.safetensors [--ema]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from srkd.checkpoint.io import save_model
from srkd.config_base import load_config
from srkd.engine import state as ckpt
from srkd.engine.config import TrainConfig
from srkd.models import build_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--ema", action="store_true", help="export the EMA weights instead of the raw ones")
    args = ap.parse_args()
    cfg = load_config(TrainConfig, args.run_dir / "config.yaml")
    found = ckpt.find_latest(args.run_dir)
    if found is None:
        raise SystemExit(f"{args.run_dir}: no training checkpoint")
    latest, state = found
    weights = state["ema"]["module"] if args.ema else state["student"]
    model = build_model(cfg.student.arch, scale=cfg.scale, **cfg.student.kwargs)
    model.load_state_dict(weights)
    save_model(args.out, model, dtype=torch.float16,
               meta={"trained_with": str(args.run_dir / "config.yaml"), "iteration": int(state["step"]),
                     "weights": "ema" if args.ema else "raw"})
    print(f"{latest} -> {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
