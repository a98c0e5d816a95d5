from __future__ import annotations

import pytest
import torch
from torch import nn

import viz
from examples.dcn_resnet import dcn_resnet
from models.discovery import DiscoveryError, discover
from tests.user_models import FrontAndStack, InlineDeform, TvPair, torchvision_twin

EXAMPLE_WEIGHTS = "examples/dcn_resnet_digits.pt"


def _grid(model):
    return [(lay.pixel_stride, lay.pixel_offset) for lay in model.sampling_layers()]


@pytest.mark.parametrize("name", ["deform_rts", "deform2_plain", "scene_deform2"])
def test_torchvision_twin_of_a_shipped_model_gives_the_same_points(name):
    shipped = viz.load(name)
    size = 28 if shipped.family == "digits" else 64
    found = discover(torchvision_twin(shipped), size, mean=0.0, std=1.0)  # shipped nets normalise inside
    assert [f.kind for f in found.found] == ["torchvision DeformConv2d"] * 3
    assert [f.modulated for f in found.found] == [lay.modulated for lay in shipped.sampling_layers()]
    assert _grid(found) == _grid(shipped)
    x = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(3))
    want, got = viz.capture(shipped, x), viz.capture(found, x)
    assert torch.allclose(got.logits, want.logits, atol=1e-4)
    unit = (got.top.out_size[0] // 2 - 1, got.top.out_size[1] // 2 + 2)
    for method in viz.METHODS:
        for image in (0, 1):
            a = viz.backproject(want, unit, method=method, image=image)
            b = viz.backproject(got, unit, method=method, image=image)
            assert a.x.shape == b.x.shape
            assert torch.allclose(a.x, b.x, atol=1e-5) and torch.allclose(a.y, b.y, atol=1e-5)
            assert torch.allclose(a.weight, b.weight, atol=1e-5)


def test_inline_op_calls_are_found_and_read_from_the_ops_arguments():
    torch.manual_seed(0)
    model = FrontAndStack([nn.Conv2d(1, 4, 3, padding=1)], [InlineDeform(4, 4), InlineDeform(4, 4, modulated=False)])
    found = discover(model, 12, mean=0.0, std=1.0)
    assert [f.kind for f in found.found] == ["module calling deform_conv2d"] * 2
    assert [f.modulated for f in found.found] == [True, False]
    x = torch.rand(1, 1, 12, 12)
    cap = viz.capture(found, x)
    feats = model.front(x)
    out = model.layers[0].conv_offset(feats)
    want_offset = torch.cat(torch.chunk(out[:, :18], 2, dim=1), dim=1)
    assert torch.allclose(cap.layers[0].offsets_yx.reshape(1, 18, 12, 12), want_offset)
    assert torch.allclose(cap.layers[0].mask.reshape(1, 9, 12, 12), torch.sigmoid(out[:, 18:]))
    assert cap.layers[1].mask is None and cap.layers[1].deformable


# Known geometry, worked by hand: input-map unit (i, j) of the bottom deformable layer sits at
# (stride * i + offset) on the image; the second layer's follows from the first's conv.
GEOMETRY_CASES = {
    # conv k3 s2 p1: unit i covers 2i-1..2i+1 -> (2, 0)
    "strided conv": lambda: ([nn.Conv2d(1, 4, 3, 2, 1)], (32, 32), [TvPair(4, 4), TvPair(4, 4)], [((2, 2), (0, 0))] * 2),
    # conv k4 s2 p1: 2i-1..2i+2 -> centre 2i + 0.5
    "even kernel": lambda: ([nn.Conv2d(1, 4, 4, 2, 1)], (32, 32), [TvPair(4, 4), TvPair(4, 4)], [((2, 2), (0.5, 0.5))] * 2),
    # max-pool 2 then conv k3 p0: pool unit at 2i + 0.5, conv unit i at pool units i..i+2 -> 2i + 2.5
    "pool then valid conv": lambda: (
        [nn.MaxPool2d(2), nn.Conv2d(1, 4, 3)], (32, 32), [TvPair(4, 4), TvPair(4, 4)], [((2, 2), (2.5, 2.5))] * 2,
    ),
    # dilated k3 d2 p2 keeps positions; avg-pool 3 stride 3: units at 3i + 1
    "dilation and avg-pool": lambda: (
        [nn.Conv2d(1, 4, 3, padding=2, dilation=2), nn.AvgPool2d(3)], (36, 36),
        [TvPair(4, 4), TvPair(4, 4)], [((3, 3), (1, 1))] * 2,
    ),
    # non-square input, kernel (3, 5), stride (2, 1), padding (0, 2): rows 2i + 1, columns j
    "non-square": lambda: (
        [nn.Conv2d(1, 4, (3, 5), (2, 1), (0, 2))], (41, 24), [TvPair(4, 4), TvPair(4, 4)], [((2, 1), (1, 0))] * 2,
    ),
    # the deformable layers themselves stride and dilate: the second sits on a coarser grid
    "deformable stride and dilation": lambda: (
        [nn.Conv2d(1, 4, 3, padding=1)], (40, 40), [TvPair(4, 4, stride=2, padding=1), TvPair(4, 4, padding=2, dilation=2)],
        [((1, 1), (0, 0)), ((2, 2), (0, 0))],
    ),
    # an inline op layer with stride 2 and dilation 2 (padding 2): output unit i reads 2i-2..2i+2 -> 2i
    "inline op with stride": lambda: (
        [nn.Conv2d(1, 4, 3, padding=1)], (40, 40), [InlineDeform(4, 4, stride=2, dilation=2), InlineDeform(4, 4)],
        [((1, 1), (0, 0)), ((2, 2), (0, 0))],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(GEOMETRY_CASES))
def test_probed_geometry_equals_the_known_geometry(case):
    torch.manual_seed(0)
    front, size, layers, want = GEOMETRY_CASES[case]()
    found = discover(FrontAndStack(front, layers), size, mean=0.0, std=1.0)
    assert _grid(found) == [((float(s[0]), float(s[1])), (float(o[0]), float(o[1]))) for s, o in want]
    assert "probed" in found.geometry_method
    cap = viz.capture(found, torch.rand(1, 1, *size))
    assert cap.top.in_size == found.found[-1].in_size


def test_residual_bottlenecks_count_as_stacked_and_the_grid_is_not_size_division():
    found = discover(dcn_resnet(), 28)
    assert [f.name for f in found.found] == ["stage2.0.conv2", "stage2.1.conv2", "stage2.2.conv2"]
    # 28 -> 14 by a strided 3x3 (padding 1): unit i at pixel 2i, not 2i + 0.5 as 28/14 would suggest
    assert _grid(found) == [((2.0, 2.0), (0.0, 0.0))] * 3


def test_fields_cut_by_the_border_on_one_side_are_placed_from_their_free_edges():
    # at 14x14 the central units' fields (13 px) touch the border, each on one side only: their
    # free edges place the grid without a larger image
    front = [nn.Conv2d(1, 4, 5, padding=2), nn.Conv2d(4, 4, 5, padding=2), nn.Conv2d(4, 4, 5, padding=2)]
    found = discover(FrontAndStack(front, [TvPair(4, 4), TvPair(4, 4)]), 14, mean=0.0, std=1.0)
    assert _grid(found) == [((1.0, 1.0), (0.0, 0.0))] * 2
    assert "probe image" not in found.geometry_method


def test_the_probe_grows_the_image_when_receptive_fields_cover_it():
    # at 12x12 the central units' fields (13 px) are cut on both sides; the probe enlarges the image
    front = [nn.Conv2d(1, 4, 5, padding=2), nn.Conv2d(4, 4, 5, padding=2), nn.Conv2d(4, 4, 5, padding=2)]
    found = discover(FrontAndStack(front, [TvPair(4, 4), TvPair(4, 4)]), 12, mean=0.0, std=1.0)
    assert _grid(found) == [((1.0, 1.0), (0.0, 0.0))] * 2
    assert "probe image 24x24" in found.geometry_method


def test_one_forward_and_one_backward_of_one_image_per_probed_unit():
    from models.discovery.probe import PROBE_LOG

    found = discover(dcn_resnet(), 28)
    assert len(PROBE_LOG) == 1  # linearised: no second, thorough probe was needed
    images, size, how = PROBE_LOG[0]
    assert (size, how) == ((28, 28), "linearised")
    assert images == 2 * 3 + 2  # 2 images for each of 3 central units of the bottom layer, 1 for each of 2 pairs above
    assert _grid(found) == [((2.0, 2.0), (0.0, 0.0))] * 3


class GatedReLU(nn.Module):
    """A ReLU the linearised probe does not know: it blocks the gradient where its input is negative."""

    def forward(self, x):
        return x * (x > 0)


def test_a_nonlinearity_the_fast_probe_does_not_know_falls_back_to_the_thorough_probe():
    from models.discovery.probe import PROBE_LOG

    torch.manual_seed(0)
    front = [nn.Conv2d(1, 4, 3, padding=1), GatedReLU(), nn.Conv2d(4, 4, 3, padding=1), GatedReLU()]
    found = discover(FrontAndStack(front, [TvPair(4, 4), TvPair(4, 4)]), 24, mean=0.0, std=1.0)
    assert _grid(found) == [((1.0, 1.0), (0.0, 0.0))] * 2
    # in its one image a gate blocked part of a field: the union over 8 images per unit decided
    assert [how for _, _, how in PROBE_LOG] == ["linearised", "8 images per unit"]


def test_given_geometry_overrides_the_probe():
    found = discover(dcn_resnet(), 28, geometry=((2, 2), (0.5, 0.5)))
    assert _grid(found) == [((2.0, 2.0), (0.5, 0.5))] * 3
    assert found.geometry_method.startswith("given")


@pytest.mark.parametrize(
    ("between", "message"),
    [
        (nn.Conv2d(4, 4, 3, padding=1), "widens the receptive field"),
        (nn.MaxPool2d(2), "outputs a (16, 16) map but 'layers.1.conv' reads a (8, 8)"),
        (nn.Sequential(nn.MaxPool2d(3, 1, 1)), "widens the receptive field"),
    ],
)
def test_layers_that_are_not_stacked_are_refused_by_name(between, message):
    torch.manual_seed(0)
    model = FrontAndStack([nn.Conv2d(1, 4, 3, padding=1)], [TvPair(4, 4), TvPair(4, 4)], [between])
    with pytest.raises(DiscoveryError, match="'layers.0.conv' and 'layers.1.conv' are not stacked") as info:
        discover(model, 16, mean=0.0, std=1.0)
    assert message in str(info.value)
    # the stacked subset the message asks for works
    assert len(discover(model, 16, mean=0.0, std=1.0, layers=["layers.1.conv"]).sampling_layers()) == 1


class Flip(nn.Module):
    def forward(self, x):
        return torch.flip(x, dims=(3,))


class PadsFirst(InlineDeform):
    def forward(self, x):
        return super().forward(nn.functional.pad(x, (1, 1, 1, 1)))


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = TvPair(4, 4)

    def forward(self, x):
        return self.layer(self.layer(x)).mean(dim=(2, 3))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (lambda: FrontAndStack([nn.Conv2d(1, 4, 3, padding=1), Flip()], [TvPair(4, 4)]), "runs against the image"),
        (lambda: FrontAndStack([nn.Conv2d(1, 4, 3, padding=1)], [nn.Conv2d(4, 4, 3, padding=1)]), "no deformable layer found"),
        (lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), PadsFirst(4, 4)), "does not pass its own input"),
        (lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), Twice()), "2 times in one forward pass"),
        (lambda: FrontAndStack([nn.Conv2d(3, 4, 3, padding=1)], [TvPair(4, 4)]), "random example input of shape"),
    ],
)  # fmt: skip
def test_what_cannot_be_back_projected_is_refused_with_a_message(model, message):
    torch.manual_seed(0)
    with pytest.raises(DiscoveryError, match=message):
        discover(model(), 16, mean=0.0, std=1.0)


def test_the_example_loads_through_the_user_path_with_its_shipped_weights():
    model = viz.load_user_model("examples.dcn_resnet:dcn_resnet", weights=EXAMPLE_WEIGHTS)
    assert "stage2.2.conv2" in model.report()
    from viz.samples import load_samples

    s = load_samples()
    x = torch.stack([viz.prepare_for(model, s.images[i, 0].numpy()) for i in range(20)])
    cap = viz.capture(model, x)
    assert (cap.predictions == s.labels[:20]).float().mean() >= 0.9  # it was trained: it reads digits
    assert cap.top.offsets_yx.abs().mean() > 0.05  # and its offsets moved
    pts = viz.backproject(cap, (7, 7))
    assert pts.count(level=3) == 729


def test_user_model_loading_errors_are_clear(tmp_path):
    from models import CheckpointError

    with pytest.raises(DiscoveryError, match="package.module:factory"):
        viz.load_user_model("examples.dcn_resnet")
    with pytest.raises(DiscoveryError, match="cannot import"):
        viz.load_user_model("no_such_package.mod:make")
    with pytest.raises(DiscoveryError, match="has no 'nope'"):
        viz.load_user_model("examples.dcn_resnet:nope")
    bad = tmp_path / "w.pt"
    torch.save({"stem.0.weight": torch.zeros(3)}, bad)
    with pytest.raises(CheckpointError, match="do not fit the model"):
        viz.load_user_model("examples.dcn_resnet:dcn_resnet", weights=bad)
    evil = tmp_path / "evil.pt"
    torch.save({"x": Flip()}, evil)
    with pytest.raises(CheckpointError, match="only plain tensors are loaded"):
        viz.load_user_model("examples.dcn_resnet:dcn_resnet", weights=evil)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_discovery_inside_a_callers_no_grad_or_inference_mode(mode):
    # the probe differentiates; a script that wraps its model inside no_grad or inference_mode
    # used to get "needs the model to run ... and it failed" for a model that runs fine
    torch.manual_seed(0)
    model = FrontAndStack([nn.Conv2d(1, 4, 3, 2, 1)], [TvPair(4, 4), TvPair(4, 4)])
    want = discover(model, 32, mean=0.0, std=1.0)
    with getattr(torch, mode)():
        got = discover(model, 32, mean=0.0, std=1.0)
        assert not torch.is_grad_enabled()
    assert [(s.pixel_stride, s.pixel_offset) for s in got.layers] == [((2, 2), (0, 0))] * 2
    assert [(s.pixel_stride, s.pixel_offset) for s in got.layers] == [
        (s.pixel_stride, s.pixel_offset) for s in want.layers
    ]
    assert not got.mean.is_inference()


def test_a_model_made_inside_inference_mode_is_refused_by_name_and_the_user_path_builds_outside():
    from examples.dcn_resnet import dcn_resnet
    from viz.support import unit_support

    with torch.inference_mode():
        made_inside = dcn_resnet()
        with pytest.raises(
            DiscoveryError, match=r"'stem.0.weight' \(and \d+ more\) was made inside torch.inference_mode"
        ):
            discover(made_inside)
        # load_user_model builds the model itself, outside the caller's inference mode
        model = viz.load_user_model("examples.dcn_resnet:dcn_resnet", weights=EXAMPLE_WEIGHTS)
        assert unit_support(model, torch.rand(1, 28, 28), (7, 7)).erf.sum() > 0
