"""The classifiers and the sampling-layer contract."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import ARCHS, DeformConv2d, build_model, count_parameters


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_and_contract(arch):
    model = build_model(arch).eval()
    logits = model(torch.rand(3, 1, 28, 28))
    assert logits.shape == (3, 10)
    layers = model.sampling_layers()
    assert [layer.name for layer in layers] == ["top.0", "top.1", "top.2"]
    for layer in layers:
        assert layer.kernel_size == (3, 3) and layer.stride == (1, 1) and layer.padding == (1, 1)
        assert layer.deformable == (arch != "regular")
        assert layer.modulated == (arch == "deform2")
        assert layer.pixel_stride == (2.0, 2.0) and layer.pixel_offset == (0.5, 0.5)


def test_contract_lists_the_modules_that_run_in_order():
    model = build_model("deform").eval()
    seen: list[nn.Module] = []
    hooks = [layer.module.register_forward_hook(lambda m, i, o: seen.append(m)) for layer in model.sampling_layers()]
    try:
        model(torch.rand(1, 1, 28, 28))
    finally:
        for h in hooks:
            h.remove()
    assert seen == [layer.module for layer in model.sampling_layers()]
    assert all(isinstance(m, DeformConv2d) for m in seen)


def test_pixel_mapping_matches_the_maxpool():
    # A single bright pixel at (y=9, x=20) lands in 14x14 unit (4, 10) after the 2x2 pool;
    # the contract maps that unit back to pixel (2*4 + 0.5, 2*10 + 0.5), within half a unit.
    model = build_model("regular").eval()
    inputs = {}
    layer = model.sampling_layers()[0]
    h = layer.module.register_forward_pre_hook(lambda m, args: inputs.setdefault("x", args[0]))
    try:
        image = torch.zeros(1, 1, 28, 28)
        image[0, 0, 9, 20] = 1.0
        blank = model.stem(((torch.zeros_like(image)) - model.mean) / model.std)
        model(image)
    finally:
        h.remove()
    diff = (inputs["x"] - blank).abs().sum(1)[0]
    assert diff.shape == (14, 14)
    iy, ix = divmod(int(diff.argmax()), 14)
    assert (iy, ix) == (4, 10)
    py, px = layer.pixel_stride[0] * iy + layer.pixel_offset[0], layer.pixel_stride[1] * ix + layer.pixel_offset[1]
    assert abs(py - 9) <= 1 and abs(px - 20) <= 1


def test_twins_have_equal_parameters_apart_from_offset_branches():
    counts = {a: count_parameters(build_model(a), include_offset_branches=False) for a in ARCHS}
    assert counts["deform"] == counts["regular"] == counts["deform2"]
    assert count_parameters(build_model("deform")) > counts["deform"]
    assert count_parameters(build_model("deform2")) > count_parameters(build_model("deform"))


def test_fresh_deform_model_equals_regular_twin():
    torch.manual_seed(0)
    deform = build_model("deform").eval()
    regular = build_model("regular").eval()
    state = {k: v for k, v in deform.state_dict().items() if "offset_conv" not in k}
    regular.load_state_dict(state)
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(deform(x), regular(x), atol=1e-5)


def test_unknown_arch():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet")
