"""Scene models: shapes, the contract's geometry, and the digit mode's proofs rerun on them."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d as tv_deform_conv2d

import viz
from models import SceneNet, load_checkpoint, save_checkpoint

TINY = (8, 8, 8, 8, 8)


def _deformed(arch: str) -> SceneNet:
    torch.manual_seed(0)
    model = SceneNet(arch, widths=TINY)
    for name, p in model.named_parameters():
        if "offset_conv" in name or "mask_conv" in name:
            torch.nn.init.normal_(p, std=2.0 if name.endswith("bias") else 0.3)
    return model.eval()


@pytest.mark.parametrize("arch", ["deform", "deform2", "regular"])
def test_shapes_and_geometry(arch):
    model = SceneNet(arch, widths=TINY).eval()
    x = torch.rand(2, 1, 64, 48)
    assert model(x).shape == (2, 11, 64, 48)
    cap = viz.capture(model, x)
    assert [lc.out_size for lc in cap.layers] == [(16, 12)] * 3
    assert cap.top.out_pixel_stride == (4.0, 4.0) and cap.top.out_pixel_offset == (1.5, 1.5)
    assert cap.top.deformable == (arch != "regular") and cap.top.modulated == (arch == "deform2")
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.rand(1, 1, 30, 32))


@pytest.mark.parametrize("method", viz.METHODS)
def test_zero_offsets_give_a_7x7_lattice_of_4px(method):
    model = SceneNet("regular", widths=TINY).eval()
    cap = viz.capture(model, torch.rand(1, 1, 64, 64))
    pts = viz.backproject(cap, (5, 9), method=method)
    cx, cy = 9 * 4 + 1.5, 5 * 4 + 1.5
    assert pts.units_xy.tolist() == [[cx, cy]]
    final = pts.where(level=3)
    lattice = Counter(zip(((pts.x[final] - cx) / 4).tolist(), ((pts.y[final] - cy) / 4).tolist(), strict=True))
    assert set(lattice) == {(float(a), float(b)) for a in range(-3, 4) for b in range(-3, 4)}
    one_d = [1, 3, 6, 7, 6, 3, 1]
    for (a, b), n in lattice.items():
        paths = one_d[int(a) + 3] * one_d[int(b) + 3]
        if method == "exact":
            sel = (pts.x[final] == cx + 4 * a) & (pts.y[final] == cy + 4 * b)
            assert n == 1 and float(pts.weight[final][sel]) == paths
        else:
            assert n == paths
    # The paper's effective dilation of a regular layer: its pixel stride, 4 px, everywhere.
    assert torch.allclose(viz.effective_dilation(cap), torch.full((16, 16), 4.0))


@pytest.mark.parametrize("arch", ["deform", "deform2"])
def test_single_layer_points_reproduce_torchvisions_output(arch):
    """Level-1 points of a scene model's top layer, read bilinearly on its input map and weighted
    by the kernel (and mask), give torchvision's deform_conv2d output at that unit."""
    model = _deformed(arch)
    x = torch.rand(1, 1, 64, 64)
    cap = viz.capture(model, x, keep_features=True)
    top, layer = cap.top, model.top[2]
    offsets = top.offsets_yx.reshape(1, 18, 16, 16)
    mask = top.mask.reshape(1, 9, 16, 16) if top.mask is not None else None
    reference = tv_deform_conv2d(top.inputs, offsets, layer.weight, padding=1, mask=mask)
    assert torch.allclose(top.outputs, reference, atol=1e-4)
    assert offsets.abs().max() > 1.0, "offsets should be large enough to matter"
    h = w = 16
    for unit in [(0, 0), (7, 8), (15, 3)]:
        pts = viz.backproject(cap, unit, levels=1, method="bilinear")
        my, mx = (pts.y - 1.5) / 4.0, (pts.x - 1.5) / 4.0  # pixels back to map coordinates
        grid = torch.stack(((2 * mx + 1) / w - 1, (2 * my + 1) / h - 1), dim=-1).view(1, 1, 9, 2)
        vals = F.grid_sample(top.inputs, grid, align_corners=False)[0, :, 0]  # (C_in, 9)
        value = torch.einsum("ck,ock->o", vals * pts.weight, layer.weight.view(layer.weight.shape[0], -1, 9))
        assert torch.allclose(value, reference[0, :, unit[0], unit[1]], atol=1e-4)


def test_checkpoint_round_trip(tmp_path):
    model = _deformed("deform2")
    path = tmp_path / "scene.pt"
    save_checkpoint(model, path, model.config(), {"note": "test"})
    loaded = load_checkpoint(path)
    assert isinstance(loaded, SceneNet) and loaded.arch == "deform2" and loaded.widths == TINY
    x = torch.rand(1, 1, 32, 32)
    assert torch.equal(loaded(x), model(x))


@pytest.mark.slow
def test_training_learns_and_metrics_are_computed():
    from models.train.scenes import SceneTrainConfig, evaluate_scenes, train_scenes
    from tests.test_scenes import _pool

    digits, labels = _pool(20)
    scene = {"size": 32, "min_digits": 1, "max_digits": 2, "min_height": 10.0, "max_height": 24.0}
    cfg = SceneTrainConfig(arch="deform", steps=60, batch_size=8, lr=1e-2, widths=TINY, scene=scene)
    model, log = train_scenes(cfg, digits, labels, progress=False)
    again, _ = train_scenes(cfg, digits, labels, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))
    assert log["steps"] == 60 and model.top[0].offset_conv.weight.abs().sum() > 0
    from models.data.scenes import SceneConfig, generate
    from models.train.scenes import pixel_loss

    test = generate(digits, labels, 10, seed=77, config=SceneConfig(**scene))
    untrained, _ = train_scenes(SceneTrainConfig(**{**cfg.__dict__, "steps": 0}), digits, labels, progress=False)
    with torch.no_grad():
        before = pixel_loss(untrained(test.images), test.classes, cfg.ink_weight)
        after = pixel_loss(model(test.images), test.classes, cfg.ink_weight)
    assert after < 0.7 * before
    m = evaluate_scenes(model, test)
    assert 0 <= m["digit_accuracy"] <= 1 and 0 <= m["mean_iou"] <= 1
    assert sum(m["digits_by_size"].values()) == m["digits"] == len(test.labels)


def test_scene_metrics_by_hand():
    from models.data.scenes import generate
    from models.train.scenes import scene_metrics
    from tests.test_scenes import _pool

    digits, labels = _pool(10)
    sc = generate(digits, labels, 4, seed=1)
    perfect = F.one_hot(sc.classes, 11).permute(0, 3, 1, 2).float()
    m = scene_metrics(perfect, sc)
    assert m["digit_accuracy"] == 1.0 and m["pixel_accuracy_ink"] == 1.0 and m["mean_iou"] == 1.0
    wrong = perfect.clone()
    wrong[:, [0, 1]] = wrong[:, [1, 0]]  # swap digits 0 and 1 everywhere
    m2 = scene_metrics(wrong, sc)
    n01 = int(((sc.labels == 0) | (sc.labels == 1)).sum())
    assert m2["digit_accuracy"] == pytest.approx(1 - n01 / len(sc.labels))
