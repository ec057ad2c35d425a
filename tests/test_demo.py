"""`srkd demo`: budgets and configs, rerun/resume of the acts, the table and report assembly, the CLI.

The unit tests use tiny EDSRs and generated images (seconds); the end-to-end `srkd demo --fast` is marked slow
(about 30 s of CPU on 2 idle cores, minutes on a loaded machine).
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console

from srkd import demo
from srkd.checkpoint.io import read_metadata, save_model
from srkd.cli.main import main
from srkd.data.images import write_image
from srkd.demo import (
    BICUBIC,
    DATAFREE,
    DEFAULT_BUDGET,
    DUKD,
    FAST_BUDGET,
    TEACHER,
    TEACHER_PATH,
    DemoOptions,
    Entry,
    act_state,
    datafree_config,
    dukd_config,
    measure,
    rich_table,
    run_act,
    write_report,
)
from srkd.device import resolve_device
from srkd.engine import state as ckpt
from srkd.errors import ConfigError, SrkdError
from srkd.models import build_model
from srkd.models.profile import count_params

CPU = torch.device("cpu")


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def smooth_images(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> Path:
    """Blurred noise: something bicubic gets roughly right and a network can be worse or better at."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        x = torch.rand(1, 3, size[0] // 4, size[1] // 4, generator=g)
        x = torch.nn.functional.interpolate(x, size=size, mode="bicubic", align_corners=False)
        write_image(folder / f"img{i}.png", x[0].clamp(0, 1))
    return folder


def tiny_teacher(path: Path, n_feats: int = 8) -> Path:
    torch.manual_seed(0)
    return save_model(path, build_model("edsr", n_feats=n_feats, n_resblocks=1, scale=2), dtype=torch.float16)


def tiny_act(tmp: Path, seed: int = 0, iterations: int = 4) -> object:
    """The demo's DUKD act shrunk to seconds: tiny student and teacher, generated images, no validation."""
    opts = DemoOptions(out=tmp / "out", teacher=tiny_teacher(tmp / "t.safetensors"), seed=seed)
    cfg = dukd_config(opts, FAST_BUDGET, CPU)
    cfg.student.kwargs = {"n_feats": 4, "n_resblocks": 1}
    cfg.data.train = [str(smooth_images(tmp / "train", 2, (32, 32)))]
    cfg.data.val = []
    cfg.data.lr_patch, cfg.data.batch_size = 8, 2
    cfg.train.iterations, cfg.train.ckpt_every = iterations, 2
    return cfg


# -- budget and configs ---------------------------------------------------------------------------------------
def test_options_pick_the_budget() -> None:
    assert DemoOptions().budget() == DEFAULT_BUDGET
    assert DemoOptions(fast=True).budget() == FAST_BUDGET
    b = DemoOptions(fast=True, iterations_dukd=7, iterations_datafree=3).budget()
    assert (b.dukd_iterations, b.datafree_iterations, b.lr_patch) == (7, 3, FAST_BUDGET.lr_patch)
    with pytest.raises(ConfigError):
        DemoOptions(iterations_dukd=0).budget()
    with pytest.raises(SrkdError, match="--device"):
        resolve_device("tpu", what="--device")  # the demo's --device goes through srkd's one device rule


def test_student_is_four_times_smaller_than_the_teacher() -> None:
    teacher = build_model("edsr", n_feats=64, n_resblocks=16, scale=2)
    student = build_model(demo.STUDENT_ARCH, scale=2, **demo.STUDENT_KWARGS)
    ratio = count_params(teacher) / count_params(student)
    assert count_params(teacher) == 1_369_859 and count_params(student) == 343_939
    assert 3.95 < ratio < 4.0


def test_act_configs(tmp_path: Path) -> None:
    opts = DemoOptions(out=tmp_path, teacher=tmp_path / "t.safetensors", seed=5)
    d = dukd_config(opts, DEFAULT_BUDGET, CPU)
    f = datafree_config(opts, DEFAULT_BUDGET, CPU)
    for cfg, name, it in ((d, "dukd", DEFAULT_BUDGET.dukd_iterations), (f, "datafree", DEFAULT_BUDGET.datafree_iterations)):
        assert cfg.run_dir == tmp_path / name and cfg.seed == 5 and cfg.scale == 2
        assert cfg.student.kwargs == demo.STUDENT_KWARGS and cfg.teacher.checkpoint == str(tmp_path / "t.safetensors")
        assert cfg.train.iterations == it and cfg.data.val == [demo.VAL_SET]
        # DUKD decays for the last fifth; the data-free act restarts its schedule with each stage and does not decay
        assert cfg.sched.milestones == ([int(it * 0.8)] if name == "dukd" else [])
        assert cfg.train.channels_last and cfg.train.device == "cpu"
        # val_points validations in all, the last one at the final iteration (the engine validates there anyway)
        vals = {s for s in range(1, it + 1) if s % cfg.train.val_every == 0} | {it}
        assert len(vals) == DEFAULT_BUDGET.val_points
    assert d.method.name == "dukd" and d.data.train == [demo.TRAIN_SET]
    assert f.method.name == "datafree" and f.data.train == []  # data-free: no training image at all
    stages = f.method.progressive.stages  # type: ignore[union-attr]
    assert sum(stages) == DEFAULT_BUDGET.datafree_iterations and len(stages) == 2
    one = datafree_config(opts, demo.Budget(dukd_iterations=1, datafree_iterations=1), CPU)
    assert not one.method.progressive  # a single iteration cannot be split into stages


@pytest.mark.parametrize("native", [True, False])
def test_acts_train_in_bf16_only_on_a_cpu_with_bf16_kernels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    """Emulated bf16 (AVX2-only CPUs) is ~11x slower than fp32: the demo must not pick it there."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    opts = DemoOptions(out=tmp_path, teacher=tmp_path / "t.safetensors")
    for make in (dukd_config, datafree_config):
        assert make(opts, DEFAULT_BUDGET, CPU).train.precision == ("bf16" if native else "fp32")


def test_bundled_teacher_ships_with_the_package() -> None:
    """The asset the demo needs: an fp16 EDSR 64f/16b x2 in srkd's format, small enough to commit."""
    assert TEACHER_PATH.is_file(), f"{TEACHER_PATH} is missing"
    meta = read_metadata(TEACHER_PATH)
    assert meta["arch"] == "edsr" and meta["kwargs"]["n_feats"] == 64 and meta["kwargs"]["n_resblocks"] == 16
    assert meta["scales"] == [2] and meta["colour"] == "rgb" and meta["dtype"] == "float16"
    assert TEACHER_PATH.stat().st_size < 3_000_000


# -- rerunning and resuming ---------------------------------------------------------------------------------------
def test_rerun_reuses_a_finished_act_and_retrains_changed_settings(tmp_path: Path) -> None:
    console = Console(file=open(tmp_path / "log.txt", "w"))  # noqa: SIM115
    cfg = tiny_act(tmp_path)
    assert act_state(cfg) == "fresh"
    last = run_act(cfg, "DUKD", console)
    assert read_metadata(last)["iteration"] == 4
    assert act_state(cfg) == "done"
    mtime = last.stat().st_mtime_ns
    run_act(cfg, "DUKD", console)
    assert last.stat().st_mtime_ns == mtime  # reused, not retrained

    # a run written before srkd had some setting (its config.yaml lacks the key) is still a run of these settings
    saved_file = Path(cfg.run_dir) / "config.yaml"
    saved = yaml.safe_load(saved_file.read_text())
    del saved["train"]["max_skips"], saved["method"]["zoom_in"]
    saved_file.write_text(yaml.safe_dump(saved))
    assert act_state(cfg) == "done" and last.exists()

    # killed after the final checkpoint but before the final export: the stale weights are redone
    save_model(last, build_model("edsr", n_feats=4, n_resblocks=1, scale=2), meta={"iteration": 2})
    assert act_state(cfg) == "resume" and not last.exists()
    run_act(cfg, "DUKD", console)
    assert read_metadata(last)["iteration"] == 4

    other = tiny_act(tmp_path, seed=1)  # other settings: the old run is cleared and trained afresh
    assert act_state(other) == "fresh" and not Path(other.run_dir).exists()


def test_interrupted_act_resumes_from_its_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from srkd.data.sampler import PatchSampler

    cfg = tiny_act(tmp_path, iterations=6)
    real = PatchSampler.batch

    def interrupted(self, step):  # type: ignore[no-untyped-def]
        if step == 3:
            raise KeyboardInterrupt
        return real(self, step)

    monkeypatch.setattr(PatchSampler, "batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_act(cfg, "DUKD", Console(quiet=True))
    monkeypatch.setattr(PatchSampler, "batch", real)
    assert [s for s, _ in ckpt.list_checkpoints(cfg.run_dir)] == [2]
    assert act_state(cfg) == "resume"
    last = run_act(cfg, "DUKD", Console(quiet=True))
    assert read_metadata(last)["iteration"] == 6 and act_state(cfg) == "done"


def test_a_foreign_folder_is_never_deleted(tmp_path: Path) -> None:
    cfg = tiny_act(tmp_path)
    Path(cfg.run_dir).mkdir(parents=True)
    (Path(cfg.run_dir) / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="not a demo run"):
        act_state(cfg)
    assert (Path(cfg.run_dir) / "thesis.tex").exists()


# -- table and report ---------------------------------------------------------------------------------------
def test_table_and_report_from_tiny_models(tmp_path: Path) -> None:
    val = smooth_images(tmp_path / "val", 2, (48, 40), seed=3)
    torch.manual_seed(0)
    teacher = build_model("edsr", n_feats=8, n_resblocks=2, scale=2)
    student = build_model("edsr", n_feats=4, n_resblocks=2, scale=2)
    entries = [
        Entry(BICUBIC, "bicubic", "MATLAB bicubic"),
        Entry(TEACHER, teacher, demo.describe(teacher)),
        Entry(DUKD, student, demo.describe(student)),
        Entry(DATAFREE, student, demo.describe(student)),
    ]
    budget = demo.Budget(1, 1, latency_warmup=1, latency_iters=2)
    out = tmp_path / "out"
    rows = measure(entries, [str(val)], out, CPU, budget)
    by = {r.name: r for r in rows}
    assert [r.name for r in rows] == [BICUBIC, TEACHER, DUKD, DATAFREE]
    assert by[BICUBIC].params is None and by[BICUBIC].speedup is None
    assert by[TEACHER].params == count_params(teacher) and by[TEACHER].speedup == pytest.approx(1.0)
    assert by[DUKD].flops_g == pytest.approx(by[DATAFREE].flops_g) and by[DUKD].flops_g < by[TEACHER].flops_g
    assert by[BICUBIC].psnr > 25 and by[DUKD].psnr < by[BICUBIC].psnr  # untrained nets lose to bicubic
    assert len(by[DUKD].images) == 2 and all(r.latency_ms > 0 for r in rows[1:])
    assert (demo.sr_dir(out, DUKD) / "val" / "img0.png").exists()

    logs = []
    for name in ("dukd", "datafree"):
        log = tmp_path / name / "log.jsonl"
        log.parent.mkdir()
        recs = [{"type": "train", "step": s, "lr": 1e-3, "loss": 1.0 / s, "kd": 0.5 / s} for s in (1, 2, 3)]
        log.write_text("".join(json.dumps(r) + "\n" for r in recs))
        logs.append((name, log))
    logs.append(("missing", tmp_path / "nope" / "log.jsonl"))  # an act killed before it logged: left out
    figures = demo.comparison_figures(rows, [str(val)], out)
    paths = write_report(out, rows, figures, logs, {"title": "t", "summary": "hello", "seed": 3})

    html = paths["html"].read_text()
    assert len(embedded_pngs(html)) == 4  # 2 visual comparisons + 2 loss curves
    assert all(p.startswith(b"\x89PNG") for p in embedded_pngs(html))
    for name in (BICUBIC, TEACHER, DUKD, DATAFREE, "hello", f"{by[DUKD].psnr:.2f}"):
        assert name in html
    md = paths["md"].read_text()
    linked = re.findall(r"\]\((figures/[^)]+)\)", md)
    assert len(linked) == 4 and all((out / p).is_file() for p in linked)
    res = json.loads(paths["json"].read_text())
    assert res["seed"] == 3 and [r["name"] for r in res["rows"]] == [BICUBIC, TEACHER, DUKD, DATAFREE]
    assert res["rows"][2]["psnr"] == pytest.approx(by[DUKD].psnr)

    text = Console(width=80, record=True, file=open(tmp_path / "t.txt", "w"))  # noqa: SIM115
    text.print(rich_table(rows))
    lines = text.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80  # fits a default terminal
    assert any(line.lstrip().startswith(DATAFREE) and "1.00x" not in line for line in lines)
    assert any(line.lstrip().startswith(TEACHER) and "1.00x" in line for line in lines)


# -- CLI -----------------------------------------------------------------------------------------------------
def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "none.safetensors"
    assert main(["demo", "--fast", "--out", str(tmp_path / "o"), "--teacher", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "none.safetensors" in err and len(err.splitlines()) == 1
    x3 = save_model(tmp_path / "x3.safetensors", build_model("edsr", n_feats=4, n_resblocks=1, scale=3))
    assert main(["demo", "--fast", "--out", str(tmp_path / "o"), "--teacher", str(x3)]) == 2
    assert "x2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--iterations-dukd", "0"])
    assert exc.value.code == 2


@pytest.mark.slow
def test_demo_fast_end_to_end_and_rerun(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    extra = [] if TEACHER_PATH.exists() else ["--teacher", str(tiny_teacher(tmp_path / "t.safetensors", 64))]
    assert main(["demo", "--fast", "--out", str(out), *extra]) == 0
    first = capsys.readouterr().out
    for name in (BICUBIC, TEACHER, "3.98x fewer", "report.html"):
        assert name in first
    res = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in res["rows"]] == [BICUBIC, TEACHER, DUKD, DATAFREE]
    assert res["param_ratio"] == pytest.approx(1_369_859 / 343_939)
    assert all(r["psnr"] > 5 for r in res["rows"]) and res["rows"][0]["psnr"] > 30
    html = (out / "report.html").read_text()
    assert len(embedded_pngs(html)) == 4
    for act in ("dukd", "datafree"):
        assert read_metadata(out / act / "last.safetensors")["iteration"] == FAST_BUDGET.dukd_iterations

    assert main(["demo", "--fast", "--out", str(out), *extra]) == 0  # rerun: both acts reused
    second = capsys.readouterr().out
    assert second.count("reusing the finished run") == 2
    assert json.loads((out / "results.json").read_text())["rows"][2]["psnr"] == pytest.approx(res["rows"][2]["psnr"])
