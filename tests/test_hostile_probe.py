"""Hostile-user probe (issue 35): every CLI command against a generated corpus of crafted inputs.

For each probe the command runs in-process through ``srkd.cli.main.main`` (a few in a real process) and must:
- end with exit status 2 and exactly one ``error:`` line, never a traceback;
- touch nothing outside its output folder: every file of the corpus (which includes a finished run folder with
  results) has the same sha256 after the probe as before;
- stay under a stated memory bound: peak RSS at most ``MEMORY_BOUND_MB`` above what the process held before
  the probe (sampled every 5 ms), and the real processes under ``CHILD_BOUND_MB`` in all.

The crafted inputs stand for classes, not instances: model metadata asking for huge or invalid networks, outputs
far larger than their inputs, YAML built to expand or nest, config values out of range, output paths that cannot
be written, a run folder that already holds results.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from srkd.checkpoint.io import save_model
from srkd.cli.main import main
from srkd.models import build_model

REPO = Path(__file__).resolve().parents[1]
MEMORY_BOUND_MB = 400
CHILD_BOUND_MB = 1500


# -- the corpus ---------------------------------------------------------------------------------------------
def _png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def _edit_metadata(src: Path, dst: Path, **changes: str) -> Path:
    with safe_open(str(src), framework="pt") as fh:
        meta = {**fh.metadata(), **changes}
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
    save_file(tensors, str(dst), metadata=meta)
    return dst


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    img = root / "img"
    img.mkdir()
    _png(img / "good.png", rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    _png(root / "bomb.png", np.zeros((600, 600), np.uint8))  # 600x600 x30 = 324 M output pixels
    (img / "text.png").write_bytes(b"not an image at all")
    torch.manual_seed(0)
    model = save_model(root / "model.safetensors", build_model("edsr", scale=2, n_feats=8, n_resblocks=1))
    _edit_metadata(model, root / "huge.safetensors", kwargs='{"n_feats": 3000, "n_resblocks": 1}')
    _edit_metadata(model, root / "negative.safetensors", kwargs='{"n_feats": -3, "n_resblocks": 1}')
    _edit_metadata(model, root / "deep.safetensors", kwargs='{"n_feats": ' + "[" * 4000 + "]" * 4000 + "}")
    _edit_metadata(model, root / "infscale.safetensors", scales="[Infinity]")
    (root / "pickle.safetensors").write_bytes(b"\x80\x04K\x01.")
    # configs
    base = {"name": "probe", "scale": 2, "student": {"arch": "edsr", "kwargs": {"n_feats": 8, "n_resblocks": 1}},
            "method": {"name": "scratch"}, "data": {"train": [str(img)], "lr_patch": 8, "batch_size": 2},
            "train": {"iterations": 2, "val_every": 0, "tensorboard": False}}
    (root / "ok.yaml").write_text(yaml.safe_dump(base))
    for name, change in {"seed": {"seed": -5}, "betas": {"optim": {"betas": [1.0, 0.5]}},
                         "lr": {"optim": {"lr": float("nan")}}, "kwargs": {"student": {"arch": "edsr",
                                                                                       "kwargs": {"n_feats": 0}}},
                         "batch": {"data": {**base["data"], "batch_size": 65536, "lr_patch": 512}}}.items():
        (root / f"bad-{name}.yaml").write_text(yaml.safe_dump({**base, **change}))
    rows = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    rows += [f"{n}: &{n} [" + ",".join([f"*{p}"] * 9) + "]" for p, n in zip("abcdefgh", "bcdefghi")]
    (root / "bomb.yaml").write_text("\n".join(rows) + "\n")
    (root / "deep.yaml").write_text("name: " + "[" * 30000 + "]" * 30000 + "\n")
    # a finished run: its results must survive every probe aimed at its folder
    run = root / "finished"
    run.mkdir()
    (run / "best.safetensors").write_bytes(model.read_bytes())
    (run / "last.safetensors").write_bytes(model.read_bytes())
    (run / "config.yaml").write_text(yaml.safe_dump({**base, "seed": 1}))
    (run / "log.jsonl").write_text(json.dumps({"type": "val", "step": 2, "set": "x", "psnr_y": 33.8}) + "\n")
    (root / "a-file").write_text("mine")
    return root


def _snapshot(root: Path, skip: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and skip not in p.parents}


class PeakRSS:
    """Peak resident memory of this process while a probe runs (sampled from /proc every 5 ms)."""

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- the probes ---------------------------------------------------------------------------------------------
# name -> (argv with {c} for the corpus and {o} for the probe's output folder, words of the error line)
PROBES: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "info-huge-model": (["info", "{c}/huge.safetensors"], ("more weights than",)),
    "info-negative-kwarg": (["info", "{c}/negative.safetensors"], ("n_feats",)),
    "info-deep-json": (["info", "{c}/deep.safetensors"], ("corrupt srkd metadata",)),
    "info-infinite-scale": (["info", "{c}/infscale.safetensors"], ("corrupt srkd metadata",)),
    "info-pickle": (["info", "{c}/pickle.safetensors"], ("srkd convert",)),
    "eval-huge-model": (["eval", "--model", "{c}/huge.safetensors", "--scale", "2", "--data", "{c}/img"],
                        ("more weights than",)),
    "upscale-huge-model": (["upscale", "--model", "{c}/huge.safetensors", "{c}/img/good.png", "{o}/x.png"],
                           ("more weights than",)),
    "upscale-output-bomb": (["upscale", "--model", "bicubic", "--scale", "30", "-q", "{c}/bomb.png",
                             "{c}/img/good.png", "{o}"], ("bomb.png", "pixels")),
    "upscale-under-a-file": (["upscale", "--model", "{c}/model.safetensors", "-q", "{c}/img/good.png",
                              "{c}/a-file/x.png"], ("a-file",)),
    "export-huge-model": (["export", "{c}/huge.safetensors", "--onnx", "{o}/m.onnx"], ("more weights than",)),
    "resize-tiny-scale": (["resize", "{c}/img/good.png", "{o}/r.png", "--scale", "1e-7"], ("below one pixel",)),
    "resize-huge-scale": (["resize", "{c}/img/good.png", "{o}/r.png", "--scale", "1e6"], ("pixels",)),
    "resize-overflow": (["resize", "{c}/img/good.png", "{o}/r.png", "--scale", "1e400"], ("--scale",)),
    "metrics-not-an-image": (["metrics", "--hr", "{c}/img/text.png", "--sr", "{c}/img/good.png", "--scale", "2"],
                             ("text.png",)),
    "train-alias-bomb": (["train", "{c}/bomb.yaml", "--out", "{o}/run"], ("aliases",)),
    "train-deep-yaml": (["train", "{c}/deep.yaml", "--out", "{o}/run"], ("nested",)),
    "train-negative-seed": (["train", "{c}/bad-seed.yaml", "--out", "{o}/run"], ("seed",)),
    "train-beta-one": (["train", "{c}/bad-betas.yaml", "--out", "{o}/run"], ("betas",)),
    "train-nan-lr": (["train", "{c}/bad-lr.yaml", "--out", "{o}/run"], ("optim.lr",)),
    "train-zero-kwarg": (["train", "{c}/bad-kwargs.yaml", "--out", "{o}/run"], ("n_feats",)),
    "train-huge-batch": (["train", "{c}/bad-batch.yaml", "--out", "{o}/run"], ("batch_size",)),
    "train-over-results": (["train", "{c}/ok.yaml", "--out", "{c}/finished"], ("finished", "--overwrite")),
    "train-resume-none-over-results": (["train", "{c}/ok.yaml", "--resume", "none", "--out", "{c}/finished"],
                                       ("finished",)),
    "train-out-is-a-file": (["train", "{c}/ok.yaml", "--out", "{c}/a-file"], ("a-file",)),
    "train-out-under-a-file": (["train", "{c}/ok.yaml", "--out", "{c}/a-file/run"], ("a-file",)),
    "train-long-override": (["train", "{c}/ok.yaml", "--out", "{o}/run", "--set", "name=" + "n" * 200_000],
                            ("name",)),
    "data-verify-unknown": (["data", "verify", "NoSuchSet", "--data-root", "{o}"], ("unknown dataset",)),
}


def _fill(argv: list[str], corpus: Path, out: Path) -> list[str]:
    return [a.replace("{c}", str(corpus)).replace("{o}", str(out)) for a in argv]


@pytest.mark.parametrize("probe", list(PROBES))
def test_probe(corpus: Path, probe: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv, words = PROBES[probe]
    out = tmp_path / "out"
    before = _snapshot(corpus, out)
    capsys.readouterr()
    with warnings.catch_warnings(), PeakRSS() as mem:
        warnings.simplefilter("ignore")
        code = main(_fill(argv, corpus, out))
    stdout, stderr = capsys.readouterr()
    assert "Traceback" not in stdout + stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, (code, stderr[-2000:])
    assert all(w in errors[0] for w in words), errors[0]
    assert len(errors[0]) < 2100
    assert _snapshot(corpus, out) == before, "a file outside the output folder changed"
    assert (mem.peak - mem.start) / 2**20 < MEMORY_BOUND_MB


def test_upscale_bomb_still_writes_the_other_image(corpus: Path, tmp_path: Path, capsys) -> None:
    argv, _ = PROBES["upscale-output-bomb"]
    main(_fill(argv, corpus, tmp_path))
    assert (tmp_path / "good.png").is_file() and not (tmp_path / "bomb.png").exists()


@pytest.mark.parametrize("probe", ["info-huge-model", "train-alias-bomb", "train-over-results"])
def test_probe_in_a_real_process(corpus: Path, probe: str, tmp_path: Path) -> None:
    """The process itself (not only main()) prints no traceback, exits 2 and stays under its memory bound."""
    argv, words = PROBES[probe]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONWARNINGS": "ignore"}
    before = _snapshot(corpus, tmp_path)
    done = subprocess.run([sys.executable, "-m", "srkd.cli.main", *_fill(argv, corpus, tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and all(w in lines[0] for w in words)
    assert _snapshot(corpus, tmp_path) == before
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 < CHILD_BOUND_MB  # KiB on Linux

