"""``srkd bench profile``: each op's self time lands in the category the rules say, and the categories add up
to the step's wall time (so the table accounts for every millisecond)."""

from __future__ import annotations

import json

import pytest
import torch
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from srkd.bench.profile import (
    CATEGORIES,
    NATIVE,
    STEP,
    attribute_step,
    categorise,
    labelled_forwards,
    labelled_native_kernels,
)
from srkd.cli.main import main
from srkd.ops import native


def test_rules_in_order():
    bwd = "autograd::engine::evaluate_function: ConvolutionBackward0"
    assert categorise("aten::convolution_backward", [bwd, "srkd::forward:student"], False) == "backward"
    assert categorise("aten::_to_copy", ["srkd::forward:teacher"], False) == "casts and copies"
    assert categorise("aten::mkldnn_convolution", ["aten::conv2d", "srkd::forward:teacher"], False) == "teacher forward"
    # innermost wins: a resize inside a forward is resizing, a forward inside the data label is the network's
    frame = "srkd/ops/imresize.py(216): imresize"
    assert categorise("aten::mm", ["aten::matmul", frame, "srkd::forward:teacher"], False) == "augmentation and resizing"
    assert categorise("aten::addmm", ["srkd::forward:generator", "srkd::data"], False) == "generator forward"
    assert categorise("aten::bmm", ["aten::matmul", "srkd/distill/fakd.py(68): affinity"], False) == "loss and other ops"
    assert categorise(NATIVE, [], False) == "augmentation and resizing"
    assert categorise("aten::_foreach_norm", ["torch/nn/utils/clip_grad.py(40): clip_grad_norm_"], False) == "optimiser"
    assert categorise("aten::sqrt", ["Optimizer.step#Adam.step"], False) == "optimiser"
    assert categorise("aten::mul", [], True) == "optimiser"
    assert categorise("aten::abs", [], False) == "loss and other ops"


def test_attribution_accounts_for_the_whole_step():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 3, padding=1))
    opt = torch.optim.Adam(net.parameters())
    x = torch.rand(2, 1, 16, 16)

    def step():
        loss = (net(x.to(torch.float64).float()) - x).abs().mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    step()
    with labelled_forwards([("srkd::forward:student", net)]), \
            profile(activities=[ProfilerActivity.CPU], with_stack=True) as prof:
        with record_function(STEP):
            step()
    (ev,) = [e for e in prof.events() if e.name == STEP]
    totals, per_op, wall = attribute_step(ev)
    assert set(totals) == set(CATEGORIES) and totals["python overhead"] == 0.0
    assert 0 < sum(totals.values()) <= wall * 1.001
    for cat in ("student forward", "backward", "optimiser", "casts and copies", "loss and other ops"):
        assert totals[cat] > 0, cat
    assert per_op["aten::convolution_backward"][0] == "backward"
    assert not net._forward_hooks and not net._forward_pre_hooks  # hooks removed


def test_native_kernels_are_labelled_only_while_profiling():
    lib = native.library()
    if lib is None:
        pytest.skip(f"native imresize unavailable: {native.status()}")
    from srkd.ops.imresize import imresize

    imresize(torch.rand(1, 3, 32, 32), scale=0.5)  # looks the kernels up (ctypes caches them on the library)
    before = {k: v for k, v in vars(lib).items() if k.startswith("srkd_")}
    with labelled_native_kernels(), profile(activities=[ProfilerActivity.CPU]) as prof:
        imresize(torch.rand(1, 3, 32, 32), scale=0.5)
    assert any(e.name == NATIVE for e in prof.events())
    assert {k: v for k, v in vars(lib).items() if k.startswith("srkd_")} == before


def test_profile_quick_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "profile", "--quick", "--device", "cpu", "--kinds", "kd,datafree-generator",
                 "--steps", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| step | teacher forward |" in printed and "| kd |" in printed
    rows = {r["kind"]: r for r in json.loads(out.read_text())["results"]["profile"]["metrics"]["profiles"]}
    assert set(rows) == {"kd", "datafree-generator"}
    for r in rows.values():
        assert sum(r["categories_ms"].values()) == pytest.approx(r["total_ms"], rel=1e-9)
        assert r["total_ms"] >= r["unprofiled_median_ms"] - 1e-6
        assert all(v >= 0 for v in r["categories_ms"].values())
        assert sum(r["categories_share"].values()) == pytest.approx(1.0)
        assert r["categories_ms"]["backward"] > 0
    assert rows["kd"]["categories_ms"]["teacher forward"] > 0 and rows["kd"]["categories_ms"]["student forward"] > 0
    assert rows["kd"]["categories_ms"]["generator forward"] == 0
    assert rows["datafree-generator"]["categories_ms"]["generator forward"] > 0


def test_unknown_kind_is_an_error(capsys):
    assert main(["bench", "profile", "--quick", "--device", "cpu", "--kinds", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
