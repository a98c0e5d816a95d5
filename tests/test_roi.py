"""viz.roi: the drawn bins are where the pooling samples; RoI models load and predict."""

from __future__ import annotations

import torch
from torchvision.ops import roi_align

from models.nets.roi import GAMMA, RoiNet, jitter_boxes
from viz.roi import roi_bins


def _model(dx: float = 0.0, dy: float = 0.0) -> RoiNet:
    torch.manual_seed(0)
    model = RoiNet("deform", widths=(4, 4, 4, 4, 8), hidden=16).eval()
    with torch.no_grad():  # the head's last layer is zero: its bias alone sets every bin's offset
        model.pool.offset_fc[-1].bias.copy_(torch.tensor([dy] * 9 + [dx] * 9))
    return model


def test_untrained_bins_tile_the_box():
    bins = roi_bins(_model(), torch.rand(1, 32, 32), (4.0, 6.0, 16.0, 24.0))
    assert torch.equal(bins.moved, bins.regular)
    # pixel-centre coordinates: the box [4, 16) x [6, 24) spans 3.5 .. 15.5 and 5.5 .. 23.5
    assert torch.allclose(bins.regular[0, 0], torch.tensor([3.5, 5.5, 7.5, 11.5]))
    assert torch.allclose(bins.regular[2, 2], torch.tensor([11.5, 17.5, 15.5, 23.5]))


def test_moved_bins_are_where_the_pooling_samples():
    model = _model(dx=2.0, dy=-1.0)
    image = torch.rand(1, 32, 32)
    box = (4.0, 6.0, 16.0, 24.0)
    bins = roi_bins(model, image, box)
    # an x offset of 2 (normalised) moves by gamma * 2 * width = 2.4 px; a y offset of -1 by -1.8 px
    assert torch.allclose(bins.moved[..., 0] - bins.regular[..., 0], torch.full((3, 3), 2 * GAMMA * 12))
    assert torch.allclose(bins.moved[..., 1] - bins.regular[..., 1], torch.full((3, 3), -GAMMA * 18))
    feats = model.features(image.unsqueeze(0))
    pooled = model.pooled(feats, torch.tensor([[0.0, *box]]))
    for i in range(3):
        for j in range(3):
            x0, y0, x1, y1 = (bins.moved[i, j] + 0.5).tolist()  # back to image coordinates
            ref = roi_align(feats, torch.tensor([[0.0, x0, y0, x1, y1]]), 1, 0.25, 2, True)
            assert torch.allclose(pooled[0, :, i, j], ref[0, :, 0, 0], atol=1e-5)


def test_jitter_stays_within_its_amount():
    boxes = torch.tensor([[10.0, 10.0, 30.0, 50.0]]).repeat(500, 1)
    j = jitter_boxes(boxes, torch.Generator().manual_seed(0), 0.3)
    w, h = j[:, 2] - j[:, 0], j[:, 3] - j[:, 1]
    assert w.min() >= 14 - 1e-4 and w.max() <= 26 + 1e-4 and h.min() >= 28 - 1e-4 and h.max() <= 52 + 1e-4
    cx = (j[:, 0] + j[:, 2]) / 2
    assert (cx - 20).abs().max() <= 6 + 1e-4 and (cx - 20).abs().max() > 5  # up to 30% of the width
