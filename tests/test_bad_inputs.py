"""The bad-input corpus (issue 7): every user mistake gets exit status 2 and ONE ``error:`` line naming the file or
key and the problem, never a traceback, and nothing already written is lost.

The corpus is generated in ``tmp_path`` (nothing committed): broken PNG/JPEG files, odd-but-valid images (16-bit,
alpha, palette, CMYK, grayscale, 1x1), paired folders of mismatched sizes, empty folders, checkpoints of another
scale / architecture / colour mode, a truncated safetensors file, broken YAML configs and an offline dataset name.
Most cases call ``srkd.cli.main.main`` in-process (fast); a few run the real CLI in a subprocess to prove that the
process itself prints no traceback. The image reader and the config loader are fuzzed with hypothesis.
"""

from __future__ import annotations

import copy
import io
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from srkd.checkpoint.io import save_model
from srkd.cli.main import main
from srkd.config_base import load_config, validate
from srkd.data.images import read_image
from srkd.engine.config import TrainConfig
from srkd.errors import ConfigError, DataError
from srkd.models import build_model

REPO = Path(__file__).resolve().parents[1]


# -- the corpus ---------------------------------------------------------------------------------------------
def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _encode(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


GOOD = _rgb(32, 32)
GOOD_PNG = _encode(Image.fromarray(GOOD), "PNG")
GOOD_JPG = _encode(Image.fromarray(GOOD), "JPEG", quality=90)


def _corrupt_png() -> bytes:
    data = bytearray(GOOD_PNG)
    idat = data.index(b"IDAT")
    data[idat + 8 : idat + 40] = bytes(32)  # zeroed compressed data: zlib / CRC failure
    return bytes(data)


def _png16(channels: int) -> bytes:
    """A 16-bit-per-channel RGB/RGBA PNG written by hand (Pillow cannot write one)."""
    import struct
    import zlib

    arr = (np.arange(32 * 32 * channels).reshape(32, 32, channels) * 61 % 65536).astype(">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in arr)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 32, 32, 16, 2 if channels == 3 else 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# name -> (bytes, words the error line must contain)
BROKEN = {
    "rgb16.png": (_png16(3), "16-bit"),
    "rgba16.png": (_png16(4), "16-bit"),
    "truncated.png": (GOOD_PNG[: len(GOOD_PNG) // 2], "truncated"),
    "corrupt.png": (_corrupt_png(), "corrupt"),
    "truncated.jpg": (GOOD_JPG[: len(GOOD_JPG) // 3], "truncated"),
    "text.png": (b"hello, this is not an image", "not a readable image"),
    "empty.png": (b"", "not a readable image"),
    "gray16.png": (_encode(Image.fromarray(np.arange(1024, dtype=np.uint16).reshape(32, 32) * 64), "PNG"),
                   "16-bit"),
}
# valid files in unusual modes: read as (3, H, W) uint8 RGB
ODD = {
    "alpha.png": _encode(Image.fromarray(np.dstack([GOOD, np.full((32, 32), 128, np.uint8)])), "PNG"),
    "palette.png": _encode(Image.fromarray(GOOD).convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
    "cmyk.jpg": _encode(Image.fromarray(GOOD).convert("CMYK"), "JPEG", quality=95),
    "gray.png": _encode(Image.fromarray(GOOD[..., 0]), "PNG"),
    "one.png": _encode(Image.fromarray(_rgb(1, 1)), "PNG"),
    "small.png": _encode(Image.fromarray(_rgb(5, 7)), "PNG"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    (root / "img").mkdir()
    for name, (data, _) in BROKEN.items():
        (root / "img" / name).write_bytes(data)
    for name, data in ODD.items():
        (root / "img" / name).write_bytes(data)
    (root / "img" / "good.png").write_bytes(GOOD_PNG)
    (root / "empty").mkdir()
    torch.manual_seed(0)
    tiny = {"n_feats": 8, "n_resblocks": 1}
    save_model(root / "edsr-x2.safetensors", build_model("edsr", scale=2, **tiny))
    save_model(root / "edsr-x4.safetensors", build_model("edsr", scale=4, **tiny))
    save_model(root / "rcan-x2.safetensors",
               build_model("rcan", scale=2, n_feats=8, n_resgroups=1, n_resblocks=1, reduction=4))
    save_model(root / "vdsr.safetensors", build_model("vdsr", scale=2, n_feats=8, n_layers=3))  # Y colour mode
    data = (root / "edsr-x2.safetensors").read_bytes()
    (root / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    # EDSR-style paired folder whose LR does not match its HR
    (root / "paired" / "HR").mkdir(parents=True)
    (root / "paired" / "LR_bicubic" / "X2").mkdir(parents=True)
    Image.fromarray(_rgb(32, 32)).save(root / "paired" / "HR" / "im.png")
    Image.fromarray(_rgb(10, 16)).save(root / "paired" / "LR_bicubic" / "X2" / "imx2.png")
    # training folders
    (root / "train").mkdir()
    for i in range(2):
        Image.fromarray(_rgb(40, 40, i)).save(root / "train" / f"{i}.png")
    (root / "tiny_train").mkdir()
    (root / "tiny_train" / "one.png").write_bytes(ODD["one.png"])
    (root / "tiny_train" / "small.png").write_bytes(ODD["small.png"])
    (root / "broken_train").mkdir()
    (root / "broken_train" / "ok.png").write_bytes(GOOD_PNG)
    (root / "broken_train" / "bad.png").write_bytes(BROKEN["truncated.png"][0])
    return root


def run_cli(argv: list[Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(code: int, out: str, err: str, *words: str) -> str:
    """Exit 2, exactly one ``error:`` line on stderr containing every word, no traceback anywhere."""
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


# -- images -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_image_is_one_clear_line(corpus: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = corpus / "img" / name
    with pytest.raises(DataError, match=name):
        read_image(path)
    out_file = corpus / f"resized-{name}.png"
    code, out, err = run_cli(["resize", "--scale", "0.5", path, out_file], capsys)
    error_line(code, out, err, str(path), BROKEN[name][1])
    assert not out_file.exists()


@pytest.mark.parametrize("name", list(ODD))
def test_unusual_but_valid_images_read_as_rgb(corpus: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = corpus / "img" / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # alpha: "alpha channel dropped"
        img = read_image(path)
    assert img.dtype == torch.uint8 and img.shape[0] == 3
    ref = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape[1:] == ref.shape[:2]
    if name in ("alpha.png", "gray.png", "one.png", "small.png"):  # lossless: exactly the pixels written
        assert np.array_equal(img.permute(1, 2, 0).numpy(), ref)
    if name == "gray.png":
        assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
    if name == "cmyk.jpg":  # CMYK JPEG -> RGB close to the original colours, not inverted or garbage
        assert np.abs(img.permute(1, 2, 0).numpy().astype(int) - GOOD.astype(int)).mean() < 20
    code, _out, err = run_cli(["resize", "--scale", "2", path, corpus / f"up-{name}.png"], capsys)
    assert code == 0, err
    h, w = Image.open(corpus / f"up-{name}.png").size[::-1]
    assert (h, w) == (2 * img.shape[1], 2 * img.shape[2])


def test_upscale_folder_with_one_bad_file_keeps_the_good_outputs(corpus: Path, capsys) -> None:
    src, dst = corpus / "mixed", corpus / "mixed-out"
    src.mkdir()
    dst.mkdir()
    (src / "a.png").write_bytes(GOOD_PNG)
    (src / "b.png").write_bytes(BROKEN["truncated.png"][0])
    (src / "c.jpg").write_bytes(GOOD_JPG)
    (dst / "earlier.png").write_bytes(GOOD_PNG)  # a result of an earlier run: must survive
    code, out, err = run_cli(["upscale", "--model", corpus / "edsr-x2.safetensors", "-q", src, dst], capsys)
    error_line(code, out, err, str(src / "b.png"), "truncated")
    assert sorted(p.name for p in dst.iterdir()) == ["a.png", "c.png", "earlier.png"]
    assert Image.open(dst / "a.png").size == (64, 64) and Image.open(dst / "c.png").size == (64, 64)
    assert (dst / "earlier.png").read_bytes() == GOOD_PNG
    assert not [p for p in dst.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_tiny_images_upscale(corpus: Path, capsys) -> None:
    code, _out, err = run_cli(["upscale", "--model", corpus / "edsr-x2.safetensors", "-q", corpus / "img" / "one.png",
                               corpus / "one-x2.png"], capsys)
    assert code == 0, err
    assert Image.open(corpus / "one-x2.png").size == (2, 2)


def test_paired_folder_of_mismatched_sizes(corpus: Path, capsys) -> None:
    for model in ("bicubic", corpus / "edsr-x2.safetensors"):
        code, out, err = run_cli(["eval", "--model", model, "--scale", "2", "--data", corpus / "paired", "-q"], capsys)
        error_line(code, out, err, "imx2.png", "16x10", "16x16")


def test_metrics_of_mismatched_sizes(corpus: Path, capsys) -> None:
    hr, sr = corpus / "m-hr", corpus / "m-sr"
    hr.mkdir()
    sr.mkdir()
    Image.fromarray(_rgb(32, 32)).save(hr / "a.png")
    Image.fromarray(_rgb(30, 32)).save(sr / "a.png")
    code, out, err = run_cli(["metrics", "--hr", hr, "--sr", sr, "--scale", "2"], capsys)
    error_line(code, out, err, str(hr / "a.png"), str(sr / "a.png"), "size")
    code, out, err = run_cli(["metrics", "--hr", corpus / "img" / "corrupt.png", "--sr", corpus / "img" / "good.png",
                              "--scale", "2"], capsys)
    error_line(code, out, err, "corrupt.png", "corrupt")


@pytest.mark.parametrize("command", ["eval", "upscale"])
def test_empty_folder(corpus: Path, command: str, capsys) -> None:
    model = corpus / "edsr-x2.safetensors"
    argv = (["eval", "--model", model, "--scale", "2", "--data", corpus / "empty", "-q"] if command == "eval"
            else ["upscale", "--model", model, "-q", corpus / "empty", corpus / "empty-out"])
    code, out, err = run_cli(argv, capsys)
    error_line(code, out, err, str(corpus / "empty"), "no images")


def test_unknown_or_offline_dataset(corpus: Path, capsys) -> None:
    model = corpus / "edsr-x2.safetensors"
    code, out, err = run_cli(["eval", "--model", model, "--scale", "2", "--data", "NoSuchSet", "-q"], capsys)
    error_line(code, out, err, "NoSuchSet", "unknown dataset")
    code, out, err = run_cli(["eval", "--model", model, "--scale", "2", "--data", "Urban100",
                              "--data-root", corpus / "no-data", "-q"], capsys)
    error_line(code, out, err, "Urban100", "srkd data download")


# -- checkpoints --------------------------------------------------------------------------------------------
def test_truncated_safetensors(corpus: Path, capsys) -> None:
    ckpt = corpus / "truncated.safetensors"
    for argv in (["info", ckpt, "--no-latency"],
                 ["upscale", "--model", ckpt, "-q", corpus / "img" / "good.png", corpus / "never.png"],
                 ["eval", "--model", ckpt, "--scale", "2", "--data", corpus / "train", "-q"],
                 ["convert", ckpt, corpus / "never.safetensors"]):
        code, out, err = run_cli(argv, capsys)
        error_line(code, out, err, str(ckpt), "truncated")
    assert not (corpus / "never.png").exists() and not (corpus / "never.safetensors").exists()


def test_checkpoint_of_another_scale(corpus: Path, capsys) -> None:
    code, out, err = run_cli(["eval", "--model", corpus / "edsr-x2.safetensors", "--scale", "4", "--data",
                              corpus / "train", "-q"], capsys)
    error_line(code, out, err, "edsr-x2.safetensors", "x2", "x4")


def test_convert_of_a_non_checkpoint(corpus: Path, capsys) -> None:
    code, out, err = run_cli(["convert", corpus / "img" / "text.png", corpus / "never2.safetensors"], capsys)
    error_line(code, out, err, "text.png")
    assert not (corpus / "never2.safetensors").exists()


# -- training configs ----------------------------------------------------------------------------------------
def _base(corpus: Path) -> dict[str, Any]:
    return {
        "name": "bad", "scale": 2,
        "student": {"arch": "edsr", "kwargs": {"n_feats": 8, "n_resblocks": 1}},
        "teacher": {"checkpoint": str(corpus / "edsr-x2.safetensors")},
        "method": {"name": "kd"},
        "data": {"train": [str(corpus / "train")], "lr_patch": 8, "batch_size": 2},
        "train": {"iterations": 2, "val_every": 0, "tensorboard": False},
    }


def _set(d: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for p in parents:
        d = d[p]
    if value is _DROP:
        del d[last]
    else:
        d[last] = value


_DROP = object()
# (case, config key -> value, words of the error line)
TRAIN_CASES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("unknown-key", {"train.iters": 3}, ("unknown key 'train.iters'", "iterations")),
    ("unknown-top-key", {"lr": 3}, ("unknown key 'lr'",)),
    ("wrong-type", {"data.batch_size": "many"}, ("data.batch_size", "integer")),
    ("missing-train", {"train": _DROP}, ("missing required key 'train'",)),
    ("missing-student", {"student": _DROP}, ("missing required key 'student'",)),
    ("unknown-method", {"method": {"name": "nope"}}, ("unknown method 'nope'",)),
    ("method-typo", {"method.pix_wieght": 2}, ("pix_wieght", "pix_weight")),
    ("teacher-other-scale", {"teacher.checkpoint": "{c}/edsr-x4.safetensors"}, ("edsr-x4.safetensors", "x4", "x2")),
    ("teacher-other-arch", {"teacher": {"checkpoint": "{c}/rcan-x2.safetensors", "arch": "edsr"}},
     ("rcan-x2.safetensors", "'rcan'")),
    ("teacher-other-colour", {"teacher.checkpoint": "{c}/vdsr.safetensors"}, ("vdsr.safetensors", "Y", "RGB")),
    ("teacher-truncated", {"teacher.checkpoint": "{c}/truncated.safetensors"},
     ("teacher.checkpoint", "truncated.safetensors", "truncated")),
    ("teacher-missing", {"teacher.checkpoint": "{c}/nope.safetensors"}, ("nope.safetensors", "no such file")),
    ("init-other-arch", {"student.init": "{c}/rcan-x2.safetensors"}, ("student.init", "rcan-x2.safetensors", "'rcan'")),
    ("unknown-dataset", {"data.train": ["NoSuchData"]}, ("NoSuchData", "unknown dataset")),
    ("offline-dataset", {"data.train": ["DIV2K"], "data.data_root": "{c}/no-data"}, ("DIV2K", "srkd data download")),
    ("empty-folder", {"data.train": ["{c}/empty"]}, ("empty", "no images")),
    ("smaller-than-patch", {"data.train": ["{c}/tiny_train"], "data.lr_patch": 16}, ("32x32", "lr_patch")),
    ("corrupt-training-image", {"data.train": ["{c}/broken_train"]}, ("bad.png", "truncated")),
]


def _fill(value: Any, corpus: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{c}", str(corpus))
    if isinstance(value, list):
        return [_fill(v, corpus) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, corpus) for k, v in value.items()}
    return value


@pytest.mark.parametrize("case,changes,words", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_refuses_bad_input(corpus: Path, case: str, changes: dict[str, Any], words: tuple[str, ...],
                                 capsys) -> None:
    cfg = copy.deepcopy(_base(corpus))
    for key, value in changes.items():
        _set(cfg, key, _fill(value, corpus))
    path = corpus / f"{case}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out_dir = corpus / "runs" / case
    out_dir.mkdir(parents=True)
    (out_dir / "notes.txt").write_text("mine")  # something the user already had there
    code, out, err = run_cli(["train", path, "--out", out_dir], capsys)
    error_line(code, out, err, *words)
    assert (out_dir / "notes.txt").read_text() == "mine"
    assert not list(out_dir.glob("*.safetensors"))


def test_train_bad_yaml_and_overrides(corpus: Path, capsys) -> None:
    broken = corpus / "broken.yaml"
    broken.write_text("name: [unclosed\n  - x: :", encoding="utf-8")
    code, out, err = run_cli(["train", broken], capsys)
    error_line(code, out, err, str(broken), "invalid YAML", "line 2")
    listed = corpus / "list.yaml"
    listed.write_text("- a\n- b\n", encoding="utf-8")
    code, out, err = run_cli(["train", listed], capsys)
    error_line(code, out, err, str(listed), "mapping")
    code, out, err = run_cli(["train", corpus / "missing.yaml"], capsys)
    error_line(code, out, err, "missing.yaml", "not found")
    ok = corpus / "ok.yaml"
    ok.write_text(yaml.safe_dump(_base(corpus)), encoding="utf-8")
    code, out, err = run_cli(["train", ok, "--set", "train.iterations=abc"], capsys)
    error_line(code, out, err, "train.iterations", "integer")
    code, out, err = run_cli(["train", ok, "--set", "trian.iterations=3"], capsys)
    error_line(code, out, err, "unknown key 'trian'")
    code, out, err = run_cli(["train", ok, "--set", "noequals"], capsys)
    error_line(code, out, err, "noequals", "KEY=VALUE")


# -- the real process: no traceback, exit status 2 ------------------------------------------------------------
def test_real_cli_processes_print_no_traceback(corpus: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONWARNINGS": "ignore"}
    bad_cfg = corpus / "proc.yaml"
    cfg = _base(corpus)
    cfg["train"]["iters"] = 3
    bad_cfg.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    src, dst = corpus / "proc-in", corpus / "proc-out"
    src.mkdir()
    (src / "a.png").write_bytes(GOOD_PNG)
    (src / "z.png").write_bytes(BROKEN["corrupt.png"][0])
    cases = [
        (["train", bad_cfg], ("proc.yaml", "train.iters")),
        (["upscale", "--model", corpus / "edsr-x2.safetensors", "-q", src, dst], ("z.png", "corrupt")),
        (["info", corpus / "truncated.safetensors", "--no-latency"], ("truncated.safetensors",)),
    ]
    for argv, words in cases:
        proc = subprocess.run([sys.executable, "-m", "srkd.cli.main", *map(str, argv)], capture_output=True,
                              text=True, env=env, timeout=120)
        error_line(proc.returncode, proc.stdout, proc.stderr, *words)
    assert (dst / "a.png").is_file()


# -- fuzzing --------------------------------------------------------------------------------------------------
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _read_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = read_image(path)
    except DataError as exc:
        assert str(path) in str(exc)
        return
    assert isinstance(img, torch.Tensor) and img.dtype == torch.uint8 and img.dim() == 3 and img.shape[0] == 3


@FUZZ
@given(data=st.binary(max_size=2048))
def test_fuzz_read_image_random_bytes(tmp_path: Path, data: bytes) -> None:
    _read_bytes(tmp_path / "fuzz.png", data)


@FUZZ
@given(cut=st.integers(0, len(GOOD_PNG)), flips=st.lists(
    st.tuples(st.integers(0, len(GOOD_PNG) - 1), st.integers(0, 255)), max_size=8))
def test_fuzz_read_image_mutated_png(tmp_path: Path, cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(GOOD_PNG)
    for pos, value in flips:
        data[pos] = value
    _read_bytes(tmp_path / "mutated.png", bytes(data[: max(cut, 8)]))


_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True),
                  st.text(max_size=12), st.sampled_from(["edsr", "kd", "dukd", "datafree", "scratch", "rgb", "y"]))
_keys = st.sampled_from(["name", "scale", "seed", "student", "teacher", "method", "data", "optim", "sched", "train",
                         "arch", "kwargs", "checkpoint", "iterations", "lr", "milestones", "betas", "train",
                         "val", "batch_size", "lr_patch", "zoom_in", "pix_weight", "stages", "x"])
_tree = st.recursive(_leaf, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                   st.dictionaries(_keys, kids, max_size=5)), max_leaves=20)


@FUZZ
@given(tree=st.dictionaries(_keys, _tree, max_size=8))
def test_fuzz_config_validate(tree: dict[str, Any]) -> None:
    try:
        cfg = validate(TrainConfig, tree, "fuzz.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml") and "\n" not in str(exc)
    else:
        assert isinstance(cfg, TrainConfig)


@FUZZ
@given(tree=st.dictionaries(_keys, _tree, max_size=8), overrides=st.lists(
    st.tuples(_keys, _keys, st.text(max_size=8)).map(lambda t: f"{t[0]}.{t[1]}={t[2]}"), max_size=3))
def test_fuzz_config_file_and_overrides(tmp_path: Path, tree: dict[str, Any], overrides: list[str]) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    try:
        load_config(TrainConfig, path, overrides)
    except ConfigError as exc:
        assert "\n" not in str(exc)


# -- issue 35: files keep the user's umask, and a long name still gets its temporary twin --------------------
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_keep_the_umask(tmp_path: Path, umask: int) -> None:
    from srkd.data.images import write_image
    from srkd.engine.state import save_checkpoint
    from srkd.io import atomic_write_text, write_json

    old = os.umask(umask)
    try:
        save_model(tmp_path / "m.safetensors", build_model("edsr", scale=2, n_feats=4, n_resblocks=1))
        write_image(tmp_path / "i.png", torch.zeros(3, 4, 4, dtype=torch.uint8))
        write_json(tmp_path / "r.json", {"a": 1})
        atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
        save_checkpoint(tmp_path / "ckpt" / "iter_00000001.pt", {"step": 1})
    finally:
        os.umask(old)
    for p in [*tmp_path.glob("*.*"), tmp_path / "ckpt" / "iter_00000001.pt"]:
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p


def test_a_name_near_the_limit_is_written(tmp_path: Path) -> None:
    from srkd.data.images import write_image

    path = tmp_path / ("x" * 250 + ".png")
    write_image(path, torch.zeros(3, 4, 4, dtype=torch.uint8))
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == [path.name]


# -- issue 35: sizes from an input are bounded before anything is allocated ------------------------------------
def _with_metadata(src: Path, dst: Path, **changes: str) -> Path:
    """A copy of an srkd model file whose metadata were edited (tensors unchanged)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
    save_file(tensors, str(dst), metadata={**meta, **changes})
    return dst


@pytest.mark.parametrize("case,kwargs,words", [
    ("huge", '{"n_feats": 3000, "n_resblocks": 1}', ("more weights than",)),
    ("many-blocks", '{"n_feats": 8, "n_resblocks": 60000}', ("more weights than",)),
    ("negative", '{"n_feats": -3, "n_resblocks": 1}', ("n_feats", "positive integer")),
    ("float", '{"n_feats": 2.5, "n_resblocks": 1}', ("n_feats",)),
    ("nested", '{"n_feats": ' + "[" * 5000 + "]" * 5000 + "}", ("corrupt srkd metadata",)),
    ("not-a-name", '{"n feats": 8}', ("not a model argument name",)),
])
def test_model_arguments_from_metadata_are_bounded(corpus: Path, case: str, kwargs: str, words: tuple[str, ...],
                                                   capsys) -> None:
    import resource
    import time

    bad = _with_metadata(corpus / "edsr-x2.safetensors", corpus / f"meta-{case}.safetensors", kwargs=kwargs)
    before, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    for command in (["info", bad], ["upscale", "--model", bad, corpus / "img" / "good.png", corpus / "meta-out"]):
        error_line(*run_cli(command, capsys), str(bad), *words)
    assert time.perf_counter() - t0 < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing near 1.2 GB
    assert not (corpus / "meta-out").exists()


@pytest.mark.parametrize("scales", ["[Infinity]", "[1e400]", "[0]", "[2, true]", "[" * 3000 + "]" * 3000, "[]"])
def test_scales_from_metadata_are_bounded(corpus: Path, scales: str, capsys) -> None:
    bad = _with_metadata(corpus / "edsr-x2.safetensors", corpus / "meta-scales.safetensors", scales=scales)
    error_line(*run_cli(["info", bad], capsys), str(bad), "corrupt srkd metadata")


def test_upscale_output_size_is_bounded_per_image(corpus: Path, tmp_path: Path, capsys) -> None:
    """A small file asking for a huge output is refused (its name in the line); the other images are written."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.zeros((600, 600), np.uint8)).save(src / "big.png")  # 600x600 x30 = 324 M pixels
    Image.fromarray(_rgb(4, 4)).save(src / "small.png")
    code, out, err = run_cli(["upscale", "--model", "bicubic", "--scale", 30, "-q", src, tmp_path / "out"], capsys)
    error_line(code, out, err, "big.png", "pixels")
    assert (tmp_path / "out" / "small.png").is_file() and not (tmp_path / "out" / "big.png").exists()


@pytest.mark.parametrize("scale,words", [("1e-7", ("below one pixel",)), ("1e400", ("not a number",)),
                                         ("1" * 5000, ("characters",)), ("inf", ("not a number",)),
                                         ("100000", ("pixels",))])
def test_resize_scales_are_bounded(corpus: Path, tmp_path: Path, scale: str, words: tuple[str, ...],
                                   capsys) -> None:
    import time

    t0 = time.perf_counter()
    code, out, err = run_cli(["resize", corpus / "img" / "good.png", tmp_path / "o.png", "--scale", scale], capsys)
    line = error_line(code, out, err, *words)
    assert len(line) < 400 and time.perf_counter() - t0 < 5
    assert not (tmp_path / "o.png").exists()


def test_yaml_alias_bomb_and_deep_nesting_are_one_short_line(corpus: Path, tmp_path: Path, capsys) -> None:
    bomb = tmp_path / "bomb.yaml"
    rows = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        rows.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb.write_text("\n".join(rows) + "\nname: x\n")
    line = error_line(*run_cli(["train", bomb], capsys), "bomb.yaml", "aliases")
    assert len(line) < 300
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: " + "[" * 20000 + "]" * 20000 + "\n")
    error_line(*run_cli(["train", deep], capsys), "deep.yaml", "nested")
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump(_base(corpus)), encoding="utf-8")
    line = error_line(*run_cli(["train", ok, "--set", "name=" + "x" * 100_000], capsys), "name")
    assert len(line) < 400


# -- issue 35: config values are validated where they are declared -------------------------------------------
CONFIG_VALUES = [
    ("seed-negative", {"seed": -1}, ("seed",)),
    ("seed-huge", {"seed": 2**70}, ("seed",)),
    ("betas-one", {"optim": {"betas": [1.0, 0.9]}}, ("optim.betas", "[0, 1)")),
    ("eps-nan", {"optim": {"eps": float("nan")}}, ("optim.eps",)),
    ("lr-inf", {"optim": {"lr": float("inf")}}, ("optim.lr",)),
    ("batch-huge", {"data": {"batch_size": 60000, "lr_patch": 96}}, ("data.batch_size", "GiB")),
    ("student-negative", {"student": {"arch": "edsr", "kwargs": {"n_feats": -3}}}, ("student.kwargs", "n_feats")),
    ("student-zero", {"student": {"arch": "edsr", "kwargs": {"n_resblocks": 0}}}, ("n_resblocks",)),
    ("teacher-nan", {"teacher": {"arch": "edsr", "kwargs": {"res_scale": float("nan")}}}, ("res_scale",)),
]


@pytest.mark.parametrize("case,changes,words", CONFIG_VALUES, ids=[c[0] for c in CONFIG_VALUES])
def test_config_values_are_validated(corpus: Path, case: str, changes: dict[str, Any], words: tuple[str, ...],
                                     capsys) -> None:
    cfg = copy.deepcopy(_base(corpus))
    for key, value in changes.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    path = corpus / f"value-{case}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    error_line(*run_cli(["train", path, "--out", corpus / "runs" / f"value-{case}"], capsys), *words)
    assert not (corpus / "runs" / f"value-{case}").exists()


# -- issue 35: EXIF orientation is applied when reading -------------------------------------------------------
def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = _rgb(2, 4)  # 2 rows, 4 columns, stored as-is
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    img.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=100)
    img.save(tmp_path / "plain.png")
    assert tuple(read_image(tmp_path / "rotated.jpg").shape) == (3, 4, 2)
    assert tuple(read_image(tmp_path / "plain.png").shape) == (3, 2, 4)
    broken = bytearray((tmp_path / "rotated.jpg").read_bytes())
    at = broken.index(b"Exif")
    broken[at + 6 : at + 14] = b"XXXXXXXX"  # a damaged TIFF header inside the EXIF block: read as stored
    (tmp_path / "broken.jpg").write_bytes(bytes(broken))
    assert read_image(tmp_path / "broken.jpg").shape[0] == 3


# -- issue 35: output paths and a full disk are one line --------------------------------------------------------
@pytest.mark.parametrize("case", ["under-a-file", "read-only", "name-too-long", "is-a-file"])
def test_train_output_paths_are_one_line(corpus: Path, tmp_path: Path, case: str, capsys) -> None:
    if case == "read-only" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    (tmp_path / "file").write_text("mine")
    (tmp_path / "ro").mkdir()
    out = {"under-a-file": tmp_path / "file" / "run", "read-only": tmp_path / "ro" / "run",
           "name-too-long": tmp_path / ("r" * 300), "is-a-file": tmp_path / "file"}[case]
    os.chmod(tmp_path / "ro", 0o555)
    try:
        ok = tmp_path / "ok.yaml"
        ok.write_text(yaml.safe_dump(_base(corpus)), encoding="utf-8")
        error_line(*run_cli(["train", ok, "--out", out], capsys), "--out")
    finally:
        os.chmod(tmp_path / "ro", 0o755)
    assert (tmp_path / "file").read_text() == "mine"


def test_a_full_disk_while_logging_is_one_line(corpus: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import errno

    import srkd.engine.logging as run_log

    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_log, "open", lambda *a, **k: Full(), raising=False)
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump(_base(corpus)), encoding="utf-8")
    error_line(*run_cli(["train", ok, "--out", tmp_path / "run"], capsys), "log.jsonl", "No space left")
