"""``srkd bench profile``: each op's self time lands in the category the rules say, and the categories add up
to the step's wall time (so the table accounts for every millisecond)."""

from __future__ import annotations

import json

import pytest
import torch
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from srkd.bench.profile import (
    CATEGORIES,
    NATIVE,
    STEP,
    NetworkMeter,
    attribute_step,
    categorise,
    conv_tflops,
    labelled_forwards,
    labelled_native_kernels,
    metered_forwards,
    network_rows,
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
    cats = {cat for name, cat in per_op if name == "aten::convolution_backward"}
    assert cats == {"backward"}
    # a convolution runs in the forward (student) and not in the backward's name: one entry per category
    assert ("aten::mkldnn_convolution", "student forward") in per_op or ("aten::convolution", "student forward") in per_op
    assert sum(per_op.values()) == pytest.approx(sum(totals.values()))
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
    # every network's forward: FLOPs, time, and a share of the bare convolution at its width that is plausible
    assert "| kd | teacher |" in printed and "bare conv" in printed
    assert list(rows["kd"]["networks"]) == ["teacher", "student"]
    assert list(rows["datafree-generator"]["networks"]) == ["teacher", "student", "generator"]
    for r in rows.values():
        for net in r["networks"].values():
            assert net["gflop_per_step"] > 0 and net["forward_ms"] > 0
            assert set(net["conv_tflops"]) == {r["setting"]["precision"], "fp32"}
            assert 0 < net["share_of_conv"] <= 1.5, net
    for net in ("teacher", "student"):  # the busiest 3x3 conv reads the network's width (body, or upsampler)
        assert rows["kd"]["networks"][net]["conv_in"] == rows["kd"]["setting"][net]["n_feats"]


def test_unknown_kind_is_an_error(capsys):
    assert main(["bench", "profile", "--quick", "--device", "cpu", "--kinds", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_network_flops_match_a_hand_count_and_skip_what_is_not_the_forward():
    """2 FLOPs per multiply-accumulate of the network's own convolutions; the loss's matmul and the backward
    around it do not count, and the busiest 3x3 convolution is found with the shape it saw."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1),
                              torch.nn.Conv2d(8, 3, 1))
    x = torch.rand(2, 3, 10, 10)
    meter = NetworkMeter()
    with FlopCounterMode(display=False) as counter, metered_forwards([("srkd::forward:student", net)], meter, counter):
        out = net(x)
        loss = (out.flatten(1) @ out.flatten(1).T).sum()  # a matmul outside the forward
        loss.backward()
    pixels = 2 * 10 * 10
    assert meter.flops["student"] == 2 * pixels * (3 * 8 * 9 + 8 * 8 * 9 + 8 * 3)
    assert counter.get_total_flops() > meter.flops["student"]  # the matmul and the backward were counted there
    assert dict(meter.convs["student"]) == {(3, 8, (2, 3, 10, 10)): 2 * pixels * 3 * 8 * 9,
                                            (8, 8, (2, 8, 10, 10)): 2 * pixels * 8 * 8 * 9}
    assert meter.seconds["student"] > 0
    assert not net._forward_hooks and not net._forward_pre_hooks and not net[0]._forward_hooks


def test_share_is_the_forward_against_the_busiest_conv():
    counted, timed = NetworkMeter(), NetworkMeter()
    counted.flops["teacher"] = 4e9
    counted.convs["teacher"][(8, 8, (2, 8, 16, 16))] = 3e9
    counted.convs["teacher"][(8, 32, (2, 8, 16, 16))] = 1e9
    timed.seconds["teacher"] = 2 * 0.5  # two steps, 0.5 s each
    (row,) = network_rows(counted, timed, 2, "fp32").values()
    assert row["gflop_per_step"] == 4 and row["forward_ms"] == pytest.approx(500)
    assert row["tflops"] == pytest.approx(0.008)
    assert (row["conv_in"], row["width"], row["conv_shape"]) == (8, 8, [2, 8, 16, 16])
    assert set(row["conv_tflops"]) == {"fp32"}
    assert row["share_of_conv"] == pytest.approx(0.008 / row["conv_tflops"]["fp32"])


def test_bare_conv_throughput_is_positive_in_both_precisions():
    for dtype in (torch.float32, torch.bfloat16):
        assert 0 < conv_tflops(4, 4, (1, 4, 8, 8), dtype, reps=2) < 1e3
