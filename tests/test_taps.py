"""Feature taps: forward hooks by module path, through wrappers, with clear errors; body segments."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.optim.swa_utils import AveragedModel

from srkd.errors import SrkdError
from srkd.models import build_model
from srkd.models.taps import FeatureTaps, segment_paths, tap_paths, unwrap_model

TINY = {
    "vdsr": dict(n_feats=8, n_layers=6),
    "edsr": dict(n_feats=8, n_resblocks=3, scale=2),
    "rcan": dict(n_feats=8, n_resgroups=2, n_resblocks=1, reduction=4, scale=2),
    "swinir": dict(embed_dim=8, depths=(2, 2), num_heads=2, window_size=4, scale=2),
}


@pytest.mark.parametrize("arch", sorted(TINY))
def test_every_model_exposes_valid_standard_taps(arch: str) -> None:
    model = build_model(arch, **TINY[arch])
    taps = model.feature_taps()
    n = len(model.body)
    assert list(taps) == ["head", *(f"body.{i}" for i in range(n)), "body"]
    for path in taps.values():
        model.get_submodule(path)
    assert taps["body"] == ("body" if arch == "vdsr" else "conv_after_body")
    assert isinstance(model.body, nn.Sequential) and n >= 2


def test_features_are_the_module_outputs_with_gradients() -> None:
    model = build_model("edsr", **TINY["edsr"])
    x = torch.rand(2, 3, 6, 6)
    paths = tap_paths(model, ["head", "body.1", "body"])
    assert paths == ["head", "body.1", "conv_after_body"]
    with FeatureTaps(model, paths) as taps:
        out = model(x)
    head = model.head(model.shift.normalize(x))
    blocks = model.body[1](model.body[0](head))
    torch.testing.assert_close(taps.features["head"], head)
    torch.testing.assert_close(taps.features["body.1"], blocks)
    torch.testing.assert_close(taps.features["conv_after_body"], model.conv_after_body(model.body(head)))
    assert out.shape == (2, 3, 12, 12)
    taps.features["body.1"].sum().backward()  # not detached: feature losses reach the student
    assert model.body[0].conv1.weight.grad is not None
    # hooks are gone after the block: another forward records nothing
    taps.clear()
    model(x)
    assert taps.features == {}


def test_unknown_path_and_name_are_user_errors() -> None:
    model = build_model("edsr", **TINY["edsr"])
    with pytest.raises(
        SrkdError, match=r"unknown feature tap path 'body\.7'.*valid paths include: head, body\.0"
    ):
        FeatureTaps(model, ["body.7"])
    with pytest.raises(SrkdError, match="unknown feature tap name 'tail'"):
        tap_paths(model, ["tail"])


def test_taps_look_through_wrappers() -> None:
    model = build_model("vdsr", **TINY["vdsr"])
    x = torch.rand(1, 1, 5, 5)
    for wrapped in (nn.DataParallel(model), AveragedModel(model)):
        assert unwrap_model(wrapped) is (model if isinstance(wrapped, nn.DataParallel) else wrapped.module)
        with FeatureTaps(wrapped, ["body.3"]) as taps:
            wrapped(x)
        assert taps.features["body.3"].shape == (1, 8, 5, 5)
    assert segment_paths(nn.DataParallel(model), 2) == ["body.1", "body.3"]


@pytest.mark.parametrize(
    ("blocks", "n", "expected"),
    [
        (32, 3, ["body.9", "body.20", "body.31"]),
        (16, 4, ["body.3", "body.7", "body.11", "body.15"]),
        (3, 3, ["body.0", "body.1", "body.2"]),
        (5, 1, ["body.4"]),
    ],
)
def test_segment_paths(blocks: int, n: int, expected: list[str]) -> None:
    model = build_model("edsr", n_feats=4, n_resblocks=blocks, scale=2)
    assert segment_paths(model, n) == expected


def test_segment_paths_errors() -> None:
    model = build_model("edsr", n_feats=4, n_resblocks=2, scale=2)
    with pytest.raises(SrkdError, match="cannot split a body of 2 blocks into 3 segments"):
        segment_paths(model, 3)
    with pytest.raises(SrkdError, match="has no feature_taps"):
        segment_paths(build_model("generator"), 2)


@pytest.mark.slow
def test_taps_attached_before_compile_see_the_compiled_forward() -> None:
    model = build_model("edsr", **TINY["edsr"])
    compiled = torch.compile(model, dynamic=False)  # as the engine compiles (dynamic shapes hit an inductor bug)
    x = torch.rand(1, 3, 6, 6)
    with FeatureTaps(compiled, ["body.0"]) as taps:
        compiled(x)
    torch.testing.assert_close(taps.features["body.0"], model.body[0](model.head(model.shift.normalize(x))))
