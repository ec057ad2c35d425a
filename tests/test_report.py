"""`srkd report` and the srkd.report building blocks, on tiny fake run folders (no real training)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from srkd.checkpoint.io import save_model
from srkd.cli.main import main
from srkd.config_base import dump_config, validate
from srkd.data.images import write_image
from srkd.engine.config import TrainConfig
from srkd.evaluation import evaluate_model
from srkd.models import build_model
from srkd.report import html_page, loss_curves, pivot_table, results_table, visual_comparison
from srkd.report.figures import auto_crop, crop_psnr
from srkd.report.html import Figure, Table
from srkd.report.runs import RESULTS_FILE

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def textured(h: int, w: int, seed: int) -> torch.Tensor:
    """A uint8 RGB image with smooth stripes and some fine texture (something for SR to recover)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, h)[:, None]
    x = torch.linspace(0, 1, w)[None, :]
    base = 0.5 + 0.35 * torch.sin(2 * torch.pi * (3 * x + (2 + seed) * y))
    img = base[None].repeat(3, 1, 1) + 0.08 * torch.rand(3, h, w, generator=g)
    img[1] *= 0.9
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bench") / "Tiny"
    for i in range(2):
        write_image(folder / f"im{i}.png", textured(64, 72, i))
    return folder


def make_run(
    root: Path,
    name: str,
    method: dict,
    *,
    n_feats: int = 8,
    seed: int = 0,
    teacher: Path | None = None,
    train_set: Path | None = None,
    iterations: int = 10,
    trained: int | None = None,
    scale: int = 2,
    precision: str = "fp32",
    ran_in: str | None = None,
) -> Path:
    """A run folder as `srkd train` leaves it: resolved config.yaml, log.jsonl, last.safetensors.
    ``ran_in``: the precision the log's start record says the run executed in (``auto`` resolves per machine)."""
    run = root / name
    run.mkdir(parents=True)
    cfg = validate(TrainConfig, {
        "name": name, "scale": scale,
        "student": {"arch": "edsr", "kwargs": {"n_feats": n_feats, "n_resblocks": 1}},
        "teacher": {"checkpoint": str(teacher)} if teacher is not None else None,
        "method": method, "data": {"train": [str(train_set)] if train_set else []},
        "train": {"iterations": iterations, "precision": precision},
    })
    dump_config(cfg, run / "config.yaml")
    torch.manual_seed(seed)
    save_model(run / "last.safetensors", build_model("edsr", scale=scale, n_feats=n_feats, n_resblocks=1),
               meta={"iteration": iterations if trained is None else trained})
    with open(run / "log.jsonl", "w", encoding="utf-8") as fh:
        if ran_in is not None:
            fh.write(json.dumps({"type": "start", "step": 0, "method": method["name"], "precision": ran_in}) + "\n")
        for s in range(1, 6):
            fh.write(json.dumps({"type": "train", "step": 2 * s, "lr": 1e-4, "loss": 1.0 / s, "pix": 0.5 / s,
                                 "it_s": 2.0 + seed}) + "\n")
        fh.write(json.dumps({"type": "val", "step": 10, "set": "Tiny", "psnr_y": 20.0 + seed, "ssim_y": 0.5,
                             "n": 2}) + "\n")
    return run


# -- tables ----------------------------------------------------------------------------------------------
def test_results_table_formats_numbers_and_escapes() -> None:
    md, html = results_table([
        {"method": "Bicubic", "psnr": 28.4312, "ssim": 0.81139, "params": None},
        {"method": "a|b <x>", "psnr": 30.0, "ssim": 0.9, "params": 1234567.0},
    ])
    lines = md.strip().splitlines()
    assert lines[0] == "| method | psnr | ssim | params |"
    assert lines[2] == "| Bicubic | 28.43 | 0.8114 | – |"
    assert lines[3] == "| a\\|b <x> | 30.00 | 0.9000 | 1.235e+06 |"
    assert "<td>a|b &lt;x&gt;</td>" in html and "<x>" not in html
    assert html.count("<tr>") == 3


def test_pivot_table_has_the_papers_layout() -> None:
    entries = []
    for ds in ("Set5", "Set14"):
        for s in (2, 4):
            for m, p in (("Teacher", 40.0), ("Bicubic", 30.0), ("Ours", 35.0 + s)):
                if (ds, s, m) != ("Set14", 4, "Ours"):
                    entries.append({"dataset": ds, "scale": s, "method": m, "psnr": p + 0.001, "ssim": p / 50})
    md, html = pivot_table(entries, ["dataset", "scale"], "method", fmt_row={"scale": lambda s: f"x{s}"},
                           row_order={"dataset": ["Set14", "Set5"]})
    lines = md.strip().splitlines()
    assert lines[0] == ("| Dataset | Scale | Teacher PSNR | Teacher SSIM | Bicubic PSNR | Bicubic SSIM | "
                        "Ours PSNR | Ours SSIM |")
    assert lines[2] == "| Set14 | x2 | 40.00 | 0.8000 | 30.00 | 0.6000 | **37.00** | **0.7400** |"
    # the dataset is printed once per block, the missing cell is a dash, the teacher is never bold
    assert lines[3] == "|  | x4 | 40.00 | 0.8000 | 30.00 | 0.6000 | – | – |"
    assert lines[4].startswith("| Set5 | x2 |") and lines[5].startswith("|  | x4 |")
    assert "**40.00**" not in md
    assert '<th colspan="2">Teacher</th>' in html and html.count("<b>") == 6


def test_pivot_table_with_methods_as_rows_bolds_the_best_of_each_column_per_group() -> None:
    # DUKD Table 2's layout: rows (scale, model, method), one column per dataset; the best method is chosen
    # within each (scale, model) group, never across models, and reference rows are left out.
    entries = [
        {"scale": 4, "model": model, "method": m, "dataset": ds, "psnr": p + d, "ssim": p / 40}
        for model, base in (("EDSR", 30.0), ("RCAN", 31.0))
        for m, p in (("Scratch", base), ("DUKD", base + 0.5), ("Teacher", base + 2))
        for ds, d in (("Set5", 0.0), ("B100", -3.0))
    ]
    md, html = pivot_table(entries, ["scale", "model", "method"], "dataset", best_within=2, no_best=["Teacher"])
    rows = {line.split("|")[3].strip(): line for line in md.strip().splitlines()[2:]}
    assert md.count("**") == 2 * 8  # per model: DUKD's PSNR and SSIM on both datasets
    for line in md.strip().splitlines()[2:]:
        method = line.split("|")[3].strip()
        assert ("**" in line.split("|")[4]) == (method == "DUKD")  # Set5 PSNR: DUKD of each model, not Teacher
    assert rows["DUKD"].count("**") == 8 and html.count("<b>") == 8
    md, _html = pivot_table(entries, ["scale", "model", "method"], "dataset", fmt_row={"scale": lambda s: f"x{s}"})
    assert md.startswith("| Scale | Model | Method |")
    assert pivot_table([{"AD": True, "dataset": "Set5", "psnr": 1.0, "ssim": 0.1}], ["AD"], "dataset")[0].startswith(
        "| AD |")


def test_pivot_table_groups_by_the_first_row_key_when_only_a_later_key_has_an_order() -> None:
    """Published DUKD Table 2 lists methods within (scale, model); a preferred method order must not pull the
    x2 / x3 / x4 groups apart (it printed all Scratch rows of every scale first)."""
    entries = [{"scale": s, "model": "EDSR", "method": m, "dataset": "Set5", "psnr": 30.0, "ssim": 0.9}
               for s in (2, 3) for m in ("Scratch", "KD", "CSD")]
    md, _html = pivot_table(entries, ["scale", "model", "method"], "dataset", row_order={"method": ["Scratch", "KD"]})
    keys = [(line.split("|")[1].strip(), line.split("|")[3].strip()) for line in md.strip().splitlines()[2:]]
    assert keys == [("2", "Scratch"), ("", "KD"), ("", "CSD"), ("3", "Scratch"), ("", "KD"), ("", "CSD")]


# -- figures ---------------------------------------------------------------------------------------------
def test_auto_crop_finds_the_worst_bicubic_region_and_crop_psnr() -> None:
    hr = torch.full((3, 96, 96), 0.5)
    hr[:, 60:76, 20:36] = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    bicubic = F.avg_pool2d(hr[None], 5, stride=1, padding=2, count_include_pad=False)[0]  # loses the texture
    top, left, h, w = auto_crop(bicubic, hr, size=16)
    assert (h, w) == (16, 16)
    assert abs(top - 60) <= 2 and abs(left - 20) <= 2
    good = (hr + 0.01).clamp(0, 1)
    assert crop_psnr(good, hr, (top, left, h, w)) > crop_psnr(bicubic, hr, (top, left, h, w)) + 10
    assert crop_psnr(hr, hr, (0, 0, 8, 8)) == float("inf")


def test_visual_comparison_returns_a_png_and_checks_sizes() -> None:
    hr = textured(48, 64, 0)
    bic = F.interpolate(hr[None].float(), scale_factor=0.5, mode="bilinear")
    bic = F.interpolate(bic, size=(48, 64), mode="bilinear")[0].round().to(torch.uint8)
    png = visual_comparison({"Bicubic": bic, "Student": hr.float() / 255}, hr)
    assert png.startswith(PNG_MAGIC) and len(png) > 2000
    png2 = visual_comparison({"Bicubic": bic}, hr, crop=(0, 0, 16, 16), title="t")
    assert png2.startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="size"):
        visual_comparison({"x": hr[:, :40]}, hr)


def test_loss_curves_reads_jsonl_and_skips_a_cut_line(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("\n".join(json.dumps({"type": "train", "step": s, "lr": 1.0, "loss": 1 / s, "kd": -s})
                           for s in range(1, 5)) + '\n{"type": "tra')
    b.write_text(json.dumps({"type": "val", "step": 3, "set": "Set5", "psnr_y": 30.0}) + "\n")
    png = loss_curves([a, b], ["A", "B"])
    assert png.startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="labels"):
        loss_curves([a, b], ["A"])
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no train or val records"):
        loss_curves([empty])


def test_html_page_is_self_contained() -> None:
    png = visual_comparison({"Bicubic": textured(32, 32, 1)}, textured(32, 32, 0))
    md, html_table = results_table([{"method": "x", "psnr": 30.0}])
    page = html_page("a <title>", [
        ("Results", (md, html_table)),
        ("Figures", [Figure(png, "cap & more"), png, "Not shown: nothing else."]),
        ("Table", Table(md, html_table, "caption")),
    ])
    assert page.startswith("<!DOCTYPE html>") and "<title>a &lt;title&gt;</title>" in page
    assert embedded_pngs(page) == [png, png]
    assert "cap &amp; more" in page and 'class="note"' in page and "<td>30.00</td>" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page and "<script" not in page


# -- the whole report ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, bench: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    torch.manual_seed(5)
    teacher = root / "teacher.safetensors"
    save_model(teacher, build_model("edsr", scale=2, n_feats=16, n_resblocks=1))
    out = {
        "scratch4": make_run(root, "scratch4", {"name": "scratch"}, n_feats=4, seed=1, train_set=bench),
        "kd4": make_run(root, "kd4", {"name": "kd"}, n_feats=4, seed=2, teacher=teacher, train_set=bench),
        "scratch8": make_run(root, "scratch8", {"name": "scratch"}, n_feats=8, seed=3, train_set=bench,
                             precision="auto", ran_in="bf16"),
        "kd8": make_run(root, "kd8", {"name": "kd"}, n_feats=8, seed=4, teacher=teacher, train_set=bench,
                        trained=5),
    }
    for w in (0.5, 2.0):
        df = {"name": "datafree", "progressive": False, "w_r": w}
        out[f"df{w}"] = make_run(root, f"df{w}", df, n_feats=4, seed=int(w * 10), teacher=teacher)
    (out["df0.5"] / "samples").mkdir()
    write_image(out["df0.5"] / "samples" / "iter_00000010.png", textured(24, 48, 3))
    return out


def test_build_report_tables_figures_and_cache(
    tmp_path: Path, bench: Path, runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    order = ["scratch4", "kd4", "scratch8", "kd8", "df0.5", "df2.0"]
    code = main(["report", *[str(runs[k]) for k in order], "--data", str(bench), "--out", str(tmp_path / "r"), "-q"])
    assert code == 0, capsys.readouterr().err
    md = (tmp_path / "r" / "report.md").read_text()
    html = (tmp_path / "r" / "report.html").read_text()

    # the numbers in the table are the evaluation's, for bicubic, the teacher and each run
    bic = evaluate_model("bicubic", [str(bench)], 2, progress=False)["Tiny"]
    kd4 = json.loads((runs["kd4"] / RESULTS_FILE).read_text())["results"]["2"]["Tiny"]
    assert kd4["n"] == 2 and len(kd4["images"]) == 2
    header = next(line for line in md.splitlines() if line.startswith("| Dataset"))
    assert header.startswith("| Dataset | Scale | Teacher PSNR | Teacher SSIM | Bicubic PSNR | Bicubic SSIM | "
                             "Scratch (scratch4) PSNR |")
    row = next(line for line in md.splitlines() if line.startswith("| Tiny | ×2 |"))
    cells = [c.strip("* ") for c in row.strip("|").split("|")]
    assert cells[4] == f"{bic['psnr_y']:.2f}" and cells[5] == f"{bic['ssim_y']:.4f}"
    kd4_col = header.strip("|").split("|").index(" KD (kd4) PSNR ")
    assert cells[kd4_col] == f"{kd4['psnr_y']:.2f}"
    teacher_json = next((tmp_path / "r" / "cache").glob("teacher-teacher-*.json"))
    teacher_psnr = json.loads(teacher_json.read_text())["results"]["2"]["Tiny"]["psnr_y"]
    assert cells[2] == f"{teacher_psnr:.2f}"
    # report.json holds the same numbers, unrounded, for scripts
    entries = json.loads((tmp_path / "r" / "report.json").read_text())["entries"]
    kd4_entry = next(e for e in entries if e["method"] == "KD (kd4)" and e["dataset"] == "Tiny")
    assert (kd4_entry["scale"], kd4_entry["psnr"]) == (2, kd4["psnr_y"])

    # figures: loss curves, visual comparison, samples, w_R sweep, agreement and gain vs params
    for name in ("loss-curves", "visual-x2", "samples-df0-5-iter-00000010", "wr-sweep", "agreement",
                 "gain-tiny-x2"):
        assert (tmp_path / "r" / "figures" / f"{name}.png").read_bytes().startswith(PNG_MAGIC), name
        assert f"figures/{name}.png" in md
    pngs = embedded_pngs(html)
    assert len(pngs) == 6 and all(p.startswith(PNG_MAGIC) for p in pngs)
    assert (runs["df0.5"] / "samples" / "iter_00000010.png").read_bytes() in pngs
    assert "unfinished (5/10 iterations)" in md
    assert "Not shown" not in md
    runs_row = next(line for line in md.splitlines() if line.startswith("| Scratch (scratch4) | /"))
    assert runs_row.endswith("| scratch | edsr (n_feats=4, n_resblocks=1) | 0.001 | ×2 | 10/10 | fp32 | 3.00 |")
    auto_row = next(line for line in md.splitlines() if line.startswith("| Scratch (scratch8) | /"))
    assert "| 10/10 | bf16 |" in auto_row  # what "auto" resolved to when it ran, from the log

    # a second report reuses results.json and the reference caches: nothing is evaluated again
    def boom(*a, **k):
        raise AssertionError("evaluated again")

    monkeypatch.setattr("srkd.evaluation.evaluate_model", boom)
    code = main(["report", str(runs["kd4"]), "--data", str(bench), "--out", str(tmp_path / "r"), "-q",
                 "--no-visuals", "--no-agreement"])
    assert code == 0
    md2 = (tmp_path / "r" / "report.md").read_text()
    assert f"| {kd4['psnr_y']:.2f} |" in md2
    assert "Not shown: needs at least 2 evaluated data-free runs" in md2


def test_new_weights_invalidate_the_cached_results(tmp_path: Path, bench: Path) -> None:
    from srkd.report.runs import evaluate_cached, read_results, resolve_sets

    run = make_run(tmp_path, "r", {"name": "scratch"}, n_feats=4)
    sets = resolve_sets([str(bench)])
    first = evaluate_cached(run / "last.safetensors", run / RESULTS_FILE, sets, [2], progress=False)
    assert read_results(run / RESULTS_FILE, run / "last.safetensors")[2]["Tiny"] == first[2]["Tiny"]
    torch.manual_seed(123)
    save_model(run / "last.safetensors", build_model("edsr", scale=2, n_feats=4, n_resblocks=1),
               meta={"iteration": 10})
    assert read_results(run / RESULTS_FILE, run / "last.safetensors") == {}
    second = evaluate_cached(run / "last.safetensors", run / RESULTS_FILE, sets, [2], progress=False)
    assert second[2]["Tiny"]["psnr_y"] != first[2]["Tiny"]["psnr_y"]


def test_report_user_errors_are_one_line(tmp_path: Path, capsys, bench: Path) -> None:
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {tmp_path / 'nope'}: not a run folder (no such folder)"
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no config.yaml" in capsys.readouterr().err
    run = make_run(tmp_path, "r", {"name": "scratch"}, n_feats=4)
    assert main(["report", str(run), "--scale", "x4", "--data", str(bench)]) == 2
    assert "--scale 'x4'" in capsys.readouterr().err
    assert main(["report", str(run), "--data", "NoSuchSet", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'NoSuchSet'" in err and "Traceback" not in err


def test_a_multi_scale_vdsr_run_is_measured_at_each_of_its_scales(tmp_path: Path, bench: Path) -> None:
    """A data-free VDSR student learns x2/x3 at once but its weights file lists the run's scale only."""
    from srkd.report.build import build_report

    run = tmp_path / "vdsr"
    run.mkdir()
    cfg = validate(TrainConfig, {
        "name": "vdsr", "scale": 2, "student": {"arch": "vdsr", "kwargs": {"n_feats": 8, "n_layers": 3}},
        "method": {"name": "datafree", "progressive": False, "scales": [2, 3], "image_size": 12},
        "train": {"iterations": 1},
    })
    dump_config(cfg, run / "config.yaml")
    torch.manual_seed(0)
    save_model(run / "last.safetensors", build_model("vdsr", scale=2, n_feats=8, n_layers=3), meta={"iteration": 1})
    md, _html = build_report([run], tmp_path / "r", sets=[str(bench)], figures=(), log=lambda m: None,
                             progress=False)
    results = json.loads((run / RESULTS_FILE).read_text())["results"]
    assert set(results) == {"2", "3"}
    text = md.read_text()
    for s in ("2", "3"):
        assert f"×{s} |" in text and f"{results[s]['Tiny']['psnr_y']:.2f}" in text
    assert "Not shown: no run has a log.jsonl" not in text  # the loss figure was not asked for


def test_a_csd_run_without_vgg_weights_is_flagged(tmp_path: Path, bench: Path) -> None:
    """No offline VGG19 weights: such a CSD number must not pass for the paper's loss in a table."""
    from srkd.report.build import build_report

    runs = [
        make_run(tmp_path, "csd", {"name": "csd"}),
        make_run(tmp_path, "kd", {"name": "scratch"}, seed=1),
        # contrast_weight 0 uses no VGG19 at all: nothing to flag.
        make_run(tmp_path, "csd0", {"name": "csd", "contrast_weight": 0.0}, seed=2),
    ]
    md, _html = build_report(runs, tmp_path / "r", sets=[str(bench)], figures=(), log=lambda m: None,
                             progress=False)
    notes = [line for line in md.read_text().splitlines() if "random VGG19" in line]
    assert len(notes) == 1 and str(runs[0]) in notes[0]


def test_a_damaged_log_costs_its_figure_not_the_report(tmp_path: Path, bench: Path) -> None:
    """A log damaged mid-file (not just cut by a kill) is said in the report; the tables are still written."""
    from srkd.report.build import build_report

    run = make_run(tmp_path, "r", {"name": "scratch"}, n_feats=4)
    lines = (run / "log.jsonl").read_text().splitlines()
    (run / "log.jsonl").write_text("\n".join([lines[0], "{garbage", *lines[1:]]) + "\n")
    md_path, _html = build_report([run], tmp_path / "out", sets=[str(bench)], figures=("loss",), log=lambda m: None,
                                  progress=False)
    md = md_path.read_text()
    assert "Not shown:" in md and "line 2 is not valid JSON" in md
    assert "| Tiny | ×2 |" in md
