"""Capture: one forward pass, right shapes, hooks always removed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import viz
from models import build_model


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("arch", ["deform", "deform2", "regular"])
def test_capture_shapes_and_logits(arch):
    torch.manual_seed(0)
    model = build_model(arch).eval()
    x = torch.rand(4, 1, 28, 28)
    cap = viz.capture(model, x)
    assert torch.allclose(cap.logits, model(x))
    assert cap.probabilities.shape == (4, 10) and torch.allclose(cap.probabilities.sum(1), torch.ones(4))
    assert len(cap.layers) == 3
    for layer in cap.layers:
        assert layer.offsets_yx.shape == (4, 1, 9, 2, 14, 14)
        assert layer.in_size == layer.out_size == (14, 14)
        assert (layer.mask is not None) == (arch == "deform2")
        assert layer.deformable == (arch != "regular")
        assert layer.out_pixel_stride == (2.0, 2.0) and layer.out_pixel_offset == (0.5, 0.5)
    if arch == "deform2":
        assert cap.top.mask.shape == (4, 1, 9, 14, 14)
        assert torch.allclose(cap.top.mask, torch.full_like(cap.top.mask, 0.5))  # fresh DCNv2
    assert _hook_count(model) == 0


def test_captured_offsets_are_the_offset_branch_output():
    torch.manual_seed(0)
    model = build_model("deform").eval()
    torch.nn.init.normal_(model.top[1].offset_conv.weight, std=0.1)
    x = torch.rand(2, 1, 28, 28)
    cap = viz.capture(model, x, keep_features=True)
    expected = model.top[1].offset_conv(cap.layers[1].inputs)
    assert torch.allclose(cap.layers[1].offsets_yx.reshape(2, 18, 14, 14), expected)
    assert cap.layers[1].offsets_yx.abs().sum() > 0


def test_single_image_is_a_batch_of_one():
    cap = viz.capture(build_model("deform").eval(), torch.rand(1, 28, 28))
    assert cap.images.shape == (1, 1, 28, 28)


def test_hooks_removed_when_forward_raises():
    model = build_model("deform2").eval()

    def boom(*_):
        raise RuntimeError("boom")

    handle = model.head.register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        viz.capture(model, torch.rand(1, 1, 28, 28))
    handle.remove()
    assert _hook_count(model) == 0


def test_training_mode_is_restored():
    model = build_model("deform").train()
    viz.capture(model, torch.rand(1, 1, 28, 28))
    assert model.training


def test_model_without_contract():
    with pytest.raises(TypeError, match="sampling_layers"):
        viz.capture(nn.Conv2d(1, 1, 3), torch.rand(1, 1, 8, 8))
