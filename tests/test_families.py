"""Every DCN family's points are where its operator sampled: stand-ins written from the published
forwards (``examples/dcn_families.py``) are discovered without being named, their level-1 samples
equal a hand computation and reproduce the operator's output, and the exact method's weights
equal the autograd gradient of the unit in a linear setting."""

from __future__ import annotations

import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from examples.dcn_families import (
    Detectron2Net,
    FlashDCN,
    InternDCN,
    MMDetNet,
    PackedDeformConv,
    TinyFlashInternImage,
    TinyInternImage,
    randomise_offsets,
)
from models.contract import SamplingLayer
from models.discovery import DiscoveryError, discover
from models.families import describe, family_of
from models.geometry import dcnv3_grid_yx
from models.nets.scenes import SceneNet
from tests.test_dcnv3 import bilinear
from viz import backproject, capture, regular_grid

STANDINS = {
    "internimage": (lambda: TinyInternImage(), 32, 3, "dcnv3", 2, (4.0, 0.0)),
    "internimage-scaled": (lambda: TinyInternImage(offset_scale=2.0, remove_center=True), 64, 3, "dcnv3", 2, (4.0, 0.0)),
    "internimage-cfs": (lambda: TinyInternImage(center_feature_scale=True), 32, 3, "dcnv3", 2, (4.0, 0.0)),
    "flashinternimage": (lambda: TinyFlashInternImage(dw_kernel_size=3), 32, 3, "dcnv4", 2, (4.0, 0.0)),
    "mmcv-modulated": (lambda: MMDetNet(), 28, 1, "mmcv", 3, (2.0, 0.5)),
    "mmcv-plain": (lambda: MMDetNet(modulated=False, deform_groups=2), 28, 1, "mmcv", 3, (2.0, 0.5)),
    "detectron2-modulated": (lambda: Detectron2Net(), 28, 1, "detectron2", 3, (2.0, 0.5)),
    "detectron2-plain": (lambda: Detectron2Net(modulated=False), 28, 1, "detectron2", 3, (2.0, 0.5)),
}


def build(key: str) -> tuple[nn.Module, int, int]:
    make, size, channels, *_ = STANDINS[key]
    torch.manual_seed(0)
    return randomise_offsets(make().eval(), std=0.3), size, channels


@pytest.mark.parametrize("key", list(STANDINS))
def test_standins_are_discovered_without_names(key):
    model, size, channels = build(key)
    _, _, _, family, count, (stride, offset) = STANDINS[key]
    found = discover(model, size, channels)
    assert [f.kind for f in found.found] == [family] * count
    assert [lay.family for lay in found.sampling_layers()] == [family] * count
    for layer in found.sampling_layers():
        assert layer.pixel_stride == (stride, stride) and layer.pixel_offset == (offset, offset)
    assert family in found.report()


def test_not_stacked_stages_are_refused_and_a_stage_can_be_chosen():
    torch.manual_seed(0)
    model = randomise_offsets(TinyInternImage(second_stage=True).eval())
    with pytest.raises(DiscoveryError, match="levels.0.1.dcn.*levels.1.0.dcn.*not stacked"):
        discover(model, 64, 3)
    stage2 = discover(model, 64, 3, layers=["levels.1.0.dcn", "levels.1.1.dcn"])
    assert [lay.pixel_stride for lay in stage2.sampling_layers()] == [(8.0, 8.0)] * 2


# ---------------------------------------------------------------- level 1 by hand


def _top_call(model: nn.Module, layer: nn.Module, images: torch.Tensor):
    """The top layer's forward arguments and its branch outputs, from a plain run of the model."""
    seen = {}

    def pre(_m, args, kwargs):
        seen["args"], seen["kwargs"] = args, kwargs

    handle = layer.register_forward_pre_hook(pre, with_kwargs=True)
    with torch.no_grad():
        model(images)
    handle.remove()
    return seen["args"], seen["kwargs"]


def hand_level1(found, images, unit):
    """Level-1 samples of ``unit`` from the top layer's own branches and the published formulas,
    as image pixels ``(y, x)`` and weights, one row per (group, point) in the family's order."""
    top = found.sampling_layers()[-1]
    m = top.module
    args, kwargs = _top_call(found, m, images)
    ho, wo = unit
    rows = []
    with torch.no_grad():
        if top.family in ("dcnv3", "dcnv4"):
            x = args[0]
            if top.family == "dcnv3":
                x1 = m.dw_conv(x.permute(0, 3, 1, 2))
                offset = m.offset(x1)[0, ho, wo]
                n_h, n_w = x.shape[1:3]
                weights = torch.softmax(m.mask(x1)[0, ho, wo].view(m.group, -1), dim=-1).flatten()
            else:
                n_h, n_w = kwargs.get("shape", args[1] if len(args) > 1 else None)
                om_in = x
                if m.dw_kernel_size is not None:
                    om_in = m.offset_mask_dw(x.view(1, n_h, n_w, -1).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(1, n_h * n_w, -1)
                om = m.offset_mask(om_in).view(n_h, n_w, -1)[ho, wo]
                p = m.K // m.group
                per_group = om[: 3 * m.group * p].view(m.group, 3 * p)
                offset, weights = per_group[:, : 2 * p].flatten(), per_group[:, 2 * p :].flatten()
            k, s, pad, dil = m.kernel_size, m.offset_scale, m.pad, m.dilation
            c = dil * (k - 1) // 2
            pts = [(i, j) for i in range(k) for j in range(k)]
            if m.remove_center:
                del pts[len(pts) // 2]
            for g in range(m.group):
                for q, (i, j) in enumerate(pts):
                    dx, dy = offset[(g * len(pts) + q) * 2], offset[(g * len(pts) + q) * 2 + 1]
                    xx = wo * m.stride - pad + c + s * (i * dil - c + dx)
                    yy = ho * m.stride - pad + c + s * (j * dil - c + dy)
                    rows.append((float(yy), float(xx), float(weights[g * len(pts) + q])))
        else:  # torchvision layout: per tap (dy, dx), row-major taps
            if top.family == "mmcv":
                raw = m.conv_offset(args[0])[0, :, ho, wo]
                if m.modulated:
                    o1, o2, mk = raw.chunk(3)
                    offset, weights = torch.cat([o1, o2]), torch.sigmoid(mk)
                else:
                    offset, weights = raw, None
            else:  # detectron2: the block passed them as arguments
                offset = args[1][0, :, ho, wo]
                weights = args[2][0, :, ho, wo] if len(args) > 2 else None
            (kh, kw), (sh, sw), (ph, pw), (dh, dw) = top.kernel_size, top.stride, top.padding, top.dilation
            groups = offset.numel() // (2 * kh * kw)
            for g in range(groups):
                for t in range(kh * kw):
                    i, j = divmod(t, kw)
                    dy, dx = offset[g * 2 * kh * kw + 2 * t], offset[g * 2 * kh * kw + 2 * t + 1]
                    w = 1.0 if weights is None else float(weights[g * kh * kw + t])
                    rows.append((float(ho * sh - ph + i * dh + dy), float(wo * sw - pw + j * dw + dx), w))
    t = torch.tensor(rows, dtype=torch.float64)
    (sy, sx), (oy, ox) = top.pixel_stride, top.pixel_offset
    return t[:, 0] * sy + oy, t[:, 1] * sx + ox, t[:, 2]


@pytest.mark.parametrize("key", list(STANDINS))
def test_level1_equals_a_hand_computation(key):
    model, size, channels = build(key)
    found = discover(model, size, channels)
    images = torch.rand(1, channels, size, size, generator=torch.Generator().manual_seed(5))
    cap = capture(found, images)
    h, w = cap.top.out_size
    for unit in ((h // 2, w // 2), (0, w - 1)):
        pts = backproject(cap, unit, levels=1, method="bilinear")  # keeps samples off the map
        y, x, wt = hand_level1(found, images, unit)
        assert len(pts) == len(y) == found.sampling_layers()[-1].taps * cap.top.groups
        torch.testing.assert_close(pts.y.double(), y, rtol=0, atol=1e-4)
        torch.testing.assert_close(pts.x.double(), x, rtol=0, atol=1e-4)
        torch.testing.assert_close(pts.weight.double(), wt, rtol=0, atol=1e-5)
        points = found.sampling_layers()[-1].taps
        assert pts.group.tolist() == [g for g in range(cap.top.groups) for _ in range(points)]
        assert pts.tap.tolist() == list(range(points)) * cap.top.groups


# ---------------------------------------------------------------- level 1 reproduces the operator


class OneLayer(nn.Module):
    """One family layer on an image used directly as its input map (pixel = map unit)."""

    def __init__(self, layer: nn.Module, layout: str) -> None:
        super().__init__()
        self.layer, self.layout = layer, layout

    def forward(self, x):
        n, c, h, w = x.shape
        if self.layout == "channels_last":
            return self.layer(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if self.layout == "tokens":
            return self.layer(x.flatten(2).transpose(1, 2), (h, w)).transpose(1, 2).reshape(n, -1, h, w)
        return self.layer(x)

    def sampling_layers(self) -> list[SamplingLayer]:
        return [describe("layer", self.layer)]


def _reread(cap, pts, value_nhwc: torch.Tensor, groups: int) -> torch.Tensor:
    """Sum over level-1 points of weight * bilinear(value of the point's group), per group: what
    the operator computed at the unit, if the points are where it sampled."""
    cg = value_nhwc.shape[-1] // groups
    out = torch.zeros(value_nhwc.shape[-1], dtype=value_nhwc.dtype)
    for i in range(len(pts)):
        g = int(pts.group[i])
        read = bilinear(value_nhwc[0, :, :, g * cg : (g + 1) * cg], pts.y[i].double(), pts.x[i].double())
        out[g * cg : (g + 1) * cg] += pts.weight[i].double() * read
    return out


@settings(max_examples=15, deadline=None)
@given(
    family=st.sampled_from(["dcnv3", "dcnv4"]),
    k=st.sampled_from([3, 5]),
    dil=st.integers(1, 2),
    group=st.sampled_from([1, 2, 4]),
    scale=st.sampled_from([0.5, 1.0, 1.5, 2.0]),
    remove_center=st.booleans(),
    h=st.integers(4, 9),
    w=st.integers(4, 9),
    seed=st.integers(0, 10_000),
)
def test_level1_reproduces_the_dcnv3_dcnv4_operator(family, k, dil, group, scale, remove_center, h, w, seed):
    torch.manual_seed(seed)
    c = 4 * group
    pad = dil * (k - 1) // 2
    kwargs = dict(kernel_size=k, pad=pad, dilation=dil, group=group, offset_scale=scale, remove_center=remove_center)
    layer = InternDCN(c, **kwargs) if family == "dcnv3" else FlashDCN(c, dw_kernel_size=3, **kwargs)
    randomise_offsets(layer, std=0.5, seed=seed)
    model = OneLayer(layer.double(), "channels_last" if family == "dcnv3" else "tokens").eval()
    images = torch.randn(1, c, h, w, dtype=torch.float64)
    seen = {}
    handle = layer.output_proj.register_forward_pre_hook(lambda _m, a: seen.setdefault("core", a[0]))
    cap = capture(model, images)
    handle.remove()
    unit = (seed % h, (seed // h) % w)
    pts = backproject(cap, unit, levels=1, method="bilinear")
    value = layer.input_proj if family == "dcnv3" else layer.value_proj
    with torch.no_grad():
        v = value(images.permute(0, 2, 3, 1))
    core = seen["core"].reshape(1, h, w, c)[0, unit[0], unit[1]]
    torch.testing.assert_close(_reread(cap, pts, v, group), core, rtol=1e-8, atol=1e-8)


@settings(max_examples=15, deadline=None)
@given(
    k=st.sampled_from([3, 5]),
    stride=st.integers(1, 2),
    dil=st.integers(1, 2),
    groups=st.sampled_from([1, 2]),
    modulated=st.booleans(),
    h=st.integers(5, 9),
    w=st.integers(5, 9),
    seed=st.integers(0, 10_000),
)
def test_level1_reproduces_the_mmcv_operator(k, stride, dil, groups, modulated, h, w, seed):
    """With a depthwise-like kernel of ones per group the op's output is the weighted sum of the
    group's samples: the level-1 points and weights reproduce it."""
    torch.manual_seed(seed)
    pad = dil * (k - 1) // 2
    layer = PackedDeformConv(2 * groups, 2 * groups, k, stride, pad, dil, groups, modulated)
    randomise_offsets(layer, std=0.5, seed=seed)
    with torch.no_grad():  # output channel c reads only input channel c, with weight 1 on every tap
        layer.weight.zero_()
        for ch in range(2 * groups):
            layer.weight[ch, ch] = 1.0
        layer.bias.zero_()
    model = OneLayer(layer.double(), "nchw").eval()
    images = torch.randn(1, 2 * groups, h, w, dtype=torch.float64)
    cap = capture(model, images)
    ho, wo = cap.top.out_size
    unit = (seed % ho, (seed // ho) % wo)
    with torch.no_grad():
        out = model(images)[0, :, unit[0], unit[1]]
    pts = backproject(cap, unit, levels=1, method="bilinear")
    torch.testing.assert_close(_reread(cap, pts, images.permute(0, 2, 3, 1), groups), out, rtol=1e-8, atol=1e-8)


# ---------------------------------------------------------------- exact weights are the gradient


class LinearStack(nn.Module):
    """Three DCNv3 stand-ins in a row, linear: each input_proj averages the channels (so every
    group reads the same map and a unit depends on every group of the layer below, as in a real
    block whose projections mix channels), output_proj identity, no norm or activation."""

    def __init__(self, c: int = 8, group: int = 2, scale: float = 1.0) -> None:
        super().__init__()
        self.dcns = nn.ModuleList([InternDCN(c, group=group, offset_scale=scale) for _ in range(3)])
        for d in self.dcns:
            randomise_offsets(d, std=0.4)
            with torch.no_grad():
                d.input_proj.weight.fill_(1.0 / c)
                d.input_proj.bias.zero_()
                d.output_proj.weight.copy_(torch.eye(c))
                d.output_proj.bias.zero_()
        self.frozen = False

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        for d in self.dcns:
            x = d(x)
        return x.permute(0, 3, 1, 2)

    def sampling_layers(self):
        return [describe(f"dcns.{i}", d) for i, d in enumerate(self.dcns)]


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_exact_weights_equal_the_gradient_in_a_linear_setting(scale):
    """R = mean over channels of the top unit. Each layer's output channel mean is (1/G) * sum
    over its groups and points of weight * bilinear read of the channel mean below, so
    dR/dx[c, u] = (1/C) (1/G)^3 * (the exact method's weight at u), offsets and weights fixed."""
    torch.manual_seed(0)
    c, g = 8, 2
    model = LinearStack(c, g, scale).double().eval()
    images = torch.randn(1, c, 7, 8, dtype=torch.float64)
    unit = (3, 4)
    cap = capture(model, images)
    pts = backproject(cap, unit, method="exact")
    # the same forward with offsets and weights held at their captured values (no gradient path)
    handles = [d.offset.register_forward_hook(lambda _m, _a, out: out.detach()) for d in model.dcns]
    handles += [d.mask.register_forward_hook(lambda _m, _a, out: out.detach()) for d in model.dcns]
    x = images.clone().requires_grad_(True)
    r = model(x)[0, :, unit[0], unit[1]].mean()
    (grad,) = torch.autograd.grad(r, x)
    for handle in handles:
        handle.remove()
    want = torch.zeros(7, 8, dtype=torch.float64)
    top = pts.where(level=3)
    want[pts.y[top].long(), pts.x[top].long()] = pts.weight[top].double() / (c * g**3)
    for ch in range(c):
        torch.testing.assert_close(grad[0, ch], want, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------- what holds for DCNv1/v2


@pytest.mark.parametrize("arch", ["dcnv3", "dcnv4"])
def test_zero_offsets_give_the_scaled_regular_lattice(arch):
    """At initialisation (zero offset branches) every group samples the regular grid: level-1
    points are the grid (with each group's copy), and all levels equal the twin's lattice."""
    torch.manual_seed(0)
    model = SceneNet(arch).eval()
    cap = capture(model, torch.rand(1, 1, 64, 64))
    pts = backproject(cap, (8, 8), method="nearest")
    twin = regular_grid(cap, (8, 8), method="nearest")
    grid = dcnv3_grid_yx(3) * 4 + torch.tensor([8 * 4 + 1.5, 8 * 4 + 1.5])
    lvl1 = pts.where(level=1)
    assert torch.equal(torch.stack([pts.y[lvl1], pts.x[lvl1]], 1), grid.repeat(4, 1))
    for level in (1, 2, 3):
        ours = {(float(a), float(b)) for a, b in zip(pts.y[pts.where(level=level)], pts.x[pts.where(level=level)], strict=True)}
        lattice = {(float(a), float(b)) for a, b in zip(twin.y[twin.where(level=level)], twin.x[twin.where(level=level)], strict=True)}
        assert ours == lattice
    if arch == "dcnv3":  # softmax of zero logits: every point 1/9
        assert torch.allclose(pts.weight[lvl1], torch.full((36,), 1 / 9))


def test_one_group_at_the_top_follows_every_group_below():
    torch.manual_seed(0)
    model = randomise_offsets(SceneNet("dcnv3").eval(), std=0.05)
    cap = capture(model, torch.rand(1, 1, 64, 64))
    pts = backproject(cap, (5, 9), method="bilinear", group=2)
    assert pts.fanout == (9, 36, 36) and len(pts) == 9 + 9 * 36 + 9 * 36 * 36
    assert set(pts.group[pts.where(level=1)].tolist()) == {2}
    assert set(pts.group[pts.where(level=2)].tolist()) == {0, 1, 2, 3}
    every = backproject(cap, (5, 9), method="bilinear")
    mine = every.where(level=1) & (every.group == 2)
    assert torch.equal(every.x[mine], pts.x[pts.where(level=1)])


def test_capture_is_thread_safe_on_a_shared_dcnv3_model():
    torch.manual_seed(0)
    model = randomise_offsets(SceneNet("dcnv3").eval(), std=0.05)
    images = [torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    want = [capture(model, im).top.offsets_yx for im in images]
    errors = []

    def work(i):
        for _ in range(3):
            got = capture(model, images[i]).top.offsets_yx
            if not torch.equal(got, want[i]):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_discovery_of_a_dcnv3_model_inside_no_grad_and_inference_mode(mode):
    model, size, channels = build("internimage")
    with mode():
        found = discover(model, size, channels)
        cap = capture(found, torch.rand(1, channels, size, size))
    assert len(backproject(cap, (4, 4), levels=2)) == 36 + 36 * 36


def test_family_of_needs_the_structure_not_the_name():
    assert family_of(InternDCN(8, group=2)).NAME == "dcnv3"
    assert family_of(FlashDCN(16, group=1)).NAME == "dcnv4"
    assert family_of(PackedDeformConv(4, 4)).NAME == "mmcv"
    assert family_of(nn.Conv2d(3, 3, 3)) is None
    assert family_of(nn.Linear(3, 3)) is None


@pytest.mark.parametrize("key", ["internimage-cfs", "flashinternimage", "mmcv-modulated", "detectron2-plain"])
def test_support_views_recompute_each_family_exactly(key):
    """The ERF / effective-sampling-locations pass recomputes every layer from its record with
    gates of 1: the unit's response equals the norm of its feature in a plain forward pass, and
    the attributions of the top layer's samples add up over groups and points."""
    from viz.support import point_attributions, unit_support

    model, size, channels = build(key)
    found = discover(model, size, channels)
    image = torch.rand(channels, size, size, generator=torch.Generator().manual_seed(2))
    cap = capture(found, image, keep_features=True)
    h, w = cap.top.out_size
    unit = (h // 2, w // 2)
    support = unit_support(found, image, [unit])
    feature = cap.top.outputs[0, :, unit[0], unit[1]]
    torch.testing.assert_close(support.response[0], feature.norm(), rtol=1e-4, atol=1e-5)
    assert support.attributions[-1].shape == (1, cap.top.groups, found.sampling_layers()[-1].taps, h, w)
    assert support.erf[0].abs().sum() > 0
    pts = backproject(cap, unit, levels=1, method="bilinear")
    att = point_attributions(pts, support, cap, 0)
    top_att = support.attributions[-1][0, :, :, unit[0], unit[1]].flatten()
    torch.testing.assert_close(att, top_att)  # level 1 reads the top layer's own samples, in order


# ---------------------------------------------------------------- layouts from first principles


class D2One(nn.Module):
    """detectron2's way: a sibling conv computes offsets (and mask) and passes them as arguments."""

    def __init__(self, c: int, groups: int) -> None:
        super().__init__()
        from examples.dcn_families import D2ModulatedDeformConv

        self.conv2_offset = nn.Conv2d(c, 3 * groups * 9, 3, padding=1)
        self.conv2 = D2ModulatedDeformConv(c, c, deformable_groups=groups)

    def forward(self, x):
        o_x, o_y, m = torch.chunk(self.conv2_offset(x), 3, dim=1)
        return self.conv2(x, torch.cat((o_x, o_y), dim=1), m.sigmoid())

    def sampling_layers(self):
        return [describe("conv2", self.conv2)]


def _unit_shift_model(family: str, groups: int, scale: float, remove_center: bool, g: int, p: int, axis: int):
    """A one-layer model of ``family`` whose offset branch outputs exactly 1 on the channel of
    group ``g``, point ``p``, ``axis`` (0: y, 1: x) and 0 elsewhere; the expected shift in pixels."""
    c = 4 * groups
    if family in ("dcnv3", "dcnv4"):
        points = 9 - int(remove_center)
        kw = dict(group=groups, offset_scale=scale, remove_center=remove_center)
        layer = InternDCN(c, **kw) if family == "dcnv3" else FlashDCN(c, **kw)
        branch = layer.offset if family == "dcnv3" else layer.offset_mask
        nn.init.zeros_(branch.weight)
        nn.init.zeros_(branch.bias)
        with torch.no_grad():  # (dx, dy) pairs: x first
            base = (g * points + p) * 2 if family == "dcnv3" else 3 * points * g + 2 * p
            branch.bias[base + (1 - axis)] = 1.0
            if family == "dcnv4":
                branch.bias[3 * points * g + 2 * points : 3 * points * (g + 1)] = 1.0
        return OneLayer(layer, "channels_last" if family == "dcnv3" else "tokens"), scale
    # torchvision's layout (mmcv, detectron2): per tap (dy, dx)
    if family == "mmcv":
        model = OneLayer(PackedDeformConv(c, c, deform_groups=groups, modulated=True), "nchw")
        branch = model.layer.conv_offset
    else:
        model = D2One(c, groups)
        branch = model.conv2_offset
    nn.init.zeros_(branch.weight)
    nn.init.zeros_(branch.bias)
    with torch.no_grad():
        branch.bias[g * 18 + 2 * p + axis] = 1.0
    return model, 1.0


# torchvision's layout (mmcv, detectron2) has no offset_scale and no removed centre
LAYOUT_CASES = [
    (family, scale, remove_center)
    for family in ("dcnv3", "dcnv4")
    for scale, remove_center in ((0.5, False), (1.0, True), (2.0, False))
] + [("mmcv", 1.0, False), ("detectron2", 1.0, False)]


@pytest.mark.parametrize(("family", "scale", "remove_center"), LAYOUT_CASES)
@pytest.mark.parametrize("axis", [0, 1])
def test_a_unit_offset_moves_exactly_that_sample_along_its_axis(family, scale, remove_center, axis):
    groups, g = 3, 2
    points = 9 - int(remove_center)
    p = points - 2  # a point off the centre, after the removed one where there is one
    model, step = _unit_shift_model(family, groups, scale, remove_center, g, p, axis)
    flat, _ = _unit_shift_model(family, groups, scale, remove_center, g, p, axis)
    with torch.no_grad():  # the same layer with no shift at all
        for name, param in flat.named_parameters():
            if name.rsplit(".", 2)[-2] in ("offset", "offset_mask", "conv_offset", "conv2_offset"):
                keep = param.clone()
                param.zero_()
                if "offset_mask" in name and name.endswith("bias"):  # DCNv4's weights stay 1
                    w = keep.clone()
                    per = w[: 3 * groups * points].view(groups, 3 * points)
                    per[:, : 2 * points] = 0
                    param.copy_(w)
    images = torch.randn(1, 4 * groups, 5, 7)  # H != W
    cap, ref = capture(model.eval(), images), capture(flat.eval(), images)
    for unit in ((2, 3), (0, 6)):
        moved = backproject(cap, unit, levels=1, method="bilinear")
        still = backproject(ref, unit, levels=1, method="bilinear")
        dy, dx = moved.y - still.y, moved.x - still.x
        hit = (moved.group == g) & (moved.tap == p)
        assert int(hit.sum()) == 1
        want = torch.tensor([step, 0.0]) if axis == 0 else torch.tensor([0.0, step])
        torch.testing.assert_close(torch.stack([dy[hit][0], dx[hit][0]]), want)
        assert not dy[~hit].any() and not dx[~hit].any()
