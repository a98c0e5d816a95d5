from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

import viz
from models import DeformConv2d, describe_layer
from viz.support import erf_area, point_attributions, saliency_region, square_masks, unit_support


class Plain(nn.Module):
    """Stacked 3x3 layers on a 1-channel image, optional ReLU; ``sampling_layers`` is the stack."""

    def __init__(self, layers: list[nn.Module], relu: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.relu = relu

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
            x = torch.relu(x) if self.relu else x
        return x

    def sampling_layers(self):
        return [describe_layer(f"layers.{i}", m, (1.0, 1.0), (0.0, 0.0)) for i, m in enumerate(self.layers)]


def _ones_conv() -> nn.Conv2d:
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    nn.init.ones_(conv.weight)
    return conv


def test_erf_of_a_linear_unit_weight_stack_is_the_triangular_profile():
    model = Plain([_ones_conv() for _ in range(3)]).eval()
    image = torch.rand(1, 15, 15) + 0.1  # positive: the unit's response is its (positive) value
    sup = unit_support(model, image, (7, 7))
    profile = torch.tensor([1.0, 3, 6, 7, 6, 3, 1])  # box(3) * box(3) * box(3)
    want = torch.zeros(15, 15)
    want[4:11, 4:11] = torch.outer(profile, profile)
    assert torch.equal(sup.erf[0], want)
    assert int(erf_area(sup.erf, mass=1.0)[0]) == 49


def test_erf_equals_finite_differences_on_a_deformable_model():
    torch.manual_seed(0)
    layers = [DeformConv2d(1 if i == 0 else 3, 3, 3, padding=1, modulated=i == 1) for i in range(3)]
    for layer in layers:
        nn.init.normal_(layer.offset_conv.weight, std=0.3)
    model = Plain(layers, relu=True).double().eval()
    image = torch.rand(1, 10, 10, dtype=torch.float64)
    unit = (5, 4)
    sup = unit_support(model, image, unit)
    cap = viz.capture(model, image, keep_features=True)
    f0 = cap.top.outputs[0, :, unit[0], unit[1]]
    direction = f0 / f0.norm()

    def response(img):
        return float(
            (viz.capture(model, img, keep_features=True).top.outputs[0, :, unit[0], unit[1]] * direction).sum()
        )

    eps = 1e-6
    for y, x in [(5, 4), (3, 2), (7, 6), (5, 7), (0, 0), (2, 5)]:
        plus, minus = image.clone(), image.clone()
        plus[0, y, x] += eps
        minus[0, y, x] -= eps
        fd = abs((response(plus) - response(minus)) / (2 * eps))
        assert sup.erf[0, y, x].item() == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_effective_sampling_locations_single_tap_model():
    """Every layer's kernel is zero except tap k: only points whose whole path uses tap k matter."""
    k = 2
    layers = []
    for dy, dx in [(1.0, -2.0), (-1.0, 1.0), (2.0, 0.0)]:
        layer = DeformConv2d(1, 1, 3, padding=1, bias=False)
        with torch.no_grad():
            layer.weight.zero_()
            layer.weight.view(-1)[k] = 1.0
            layer.offset_conv.bias.copy_(torch.tensor([dy, dx] * 9))  # integer offsets: exact reads
        layers.append(layer)
    model = Plain(layers).eval()
    image = torch.rand(1, 24, 24) + 0.1
    cap = viz.capture(model, image)
    pts = viz.backproject(cap, (11, 11), method="bilinear")
    sup = unit_support(model, image, (11, 11))
    attr = point_attributions(pts, sup, cap)
    # all-k path: tap k at this level and at every ancestor
    on_path = pts.tap == k
    for _ in range(pts.levels):
        parent_ok = torch.where(pts.parent >= 0, on_path[pts.parent.clamp_min(0)], torch.ones_like(on_path))
        on_path = (pts.tap == k) & parent_ok
    assert (attr[on_path] > 0).all()
    assert (attr[~on_path] == 0).all()
    assert int(on_path.sum()) == 3  # one per level


def test_saliency_region_is_within_tolerance_and_one_step_smaller_is_not():
    from viz.samples import load_scene_samples

    model = viz.load("scene_deform")
    image = load_scene_samples().images[3]
    unit = (8, 5)
    region = saliency_region(model, image, unit, tol=0.1)
    full = viz.capture(model, image, keep_features=True).top.outputs[0, :, unit[0], unit[1]]
    cy, cx = 4 * unit[0] + 1.5, 4 * unit[1] + 1.5
    masks = square_masks((64, 64), (cy, cx), torch.tensor([region.half_size, region.half_size - 1]))
    feats = viz.capture(model, image.unsqueeze(0) * masks.unsqueeze(1), keep_features=True).top.outputs
    err = (feats[:, :, unit[0], unit[1]] - full).norm(dim=1) / full.norm()
    assert err[0] <= 0.1 < err[1]
    assert region.area == int(masks[0].sum())
    assert region.error == pytest.approx(float(err[0]), abs=1e-5)


def test_support_is_thread_safe_on_a_shared_model():
    model = viz.load("deform2_plain")
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(1, 28, 28, generator=g) for _ in range(8)]
    serial = [unit_support(model, im, (6, 8)).erf for im in images]
    got: dict[int, torch.Tensor] = {}

    def work(i: int) -> None:
        got[i] = unit_support(model, images[i], (6, 8)).erf

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        assert torch.equal(got[i], serial[i])
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


def test_torchvision_and_discovered_models_are_supported():
    from models.discovery import discover
    from tests.user_models import FrontAndStack, InlineDeform, TvPair

    torch.manual_seed(0)
    model = discover(
        FrontAndStack([nn.Conv2d(1, 4, 3, padding=1)], [TvPair(4, 4, mask=True), InlineDeform(4, 4)]), 12, 1, 0.0, 1.0
    )
    sup = unit_support(model, torch.rand(1, 12, 12), [(5, 5), (2, 9)])
    assert sup.erf.shape == (2, 12, 12) and (sup.erf.flatten(1).sum(1) > 0).all()
    # the response is linear in the top layer's gates and that layer has no bias (zeros): the
    # top attributions add up to the response exactly (the gated op path is really taken)
    assert torch.allclose(sup.attributions[1].sum(dim=(1, 2, 3, 4)), sup.response, rtol=1e-4)
    assert (sup.attributions[0] != 0).any()


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_support_inside_a_callers_no_grad_or_inference_mode(mode):
    # a script that runs its model under inference_mode may ask for the ERF there too; the
    # image (an inference tensor then) must still be differentiated, and the mode restored
    from models.discovery import discover
    from tests.user_models import FrontAndStack, InlineDeform

    torch.manual_seed(0)
    stack = FrontAndStack([nn.Conv2d(1, 4, 3, padding=1)], [InlineDeform(4, 4), InlineDeform(4, 4)])
    plain = discover(stack, 12, 1, 0.0, 1.0)
    image = torch.rand(1, 12, 12)
    want = unit_support(plain, image, (5, 6))
    with getattr(torch, mode)():
        model = discover(stack, 12, 1, 0.0, 1.0)  # its normalisation buffers are made here
        got = unit_support(model, image.clone(), (5, 6))
        assert not torch.is_grad_enabled()
    assert torch.equal(got.erf, want.erf) and want.erf.sum() > 0
    for a, b in zip(got.attributions, want.attributions, strict=True):
        assert torch.equal(a, b)


def test_the_coarse_to_fine_saliency_search_finds_the_exhaustive_square_with_fewer_passes(monkeypatch):
    import importlib

    from viz.samples import load_scene_samples

    support = importlib.import_module("viz.support")
    model = viz.load("scene_deform")
    images = load_scene_samples().images
    for index, unit in ((3, (8, 5)), (10, (6, 10)), (12, (2, 2))):
        monkeypatch.setattr(support, "EXHAUSTIVE_SQUARES", 10_000)
        every = saliency_region(model, images[index], unit)
        assert len(every.half_sizes) > 24 and every.half_sizes.tolist() == list(range(len(every.half_sizes)))
        monkeypatch.setattr(support, "EXHAUSTIVE_SQUARES", 4)
        fast = saliency_region(model, images[index], unit)
        assert (fast.half_size, fast.box, fast.area) == (every.half_size, every.box, every.area)
        assert fast.error == pytest.approx(every.error, abs=1e-6)
        assert len(fast.half_sizes) < len(every.half_sizes)
        tried = {int(r): float(e) for r, e in zip(fast.half_sizes, fast.errors, strict=True)}
        for r, e in zip(every.half_sizes.tolist(), every.errors.tolist(), strict=True):
            if r in tried:  # the same squares give the same errors
                assert tried[r] == pytest.approx(e, abs=1e-5)
