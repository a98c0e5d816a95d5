"""Scene generator invariants: labels under ink, boxes hold their ink, determinism, splits."""

from __future__ import annotations

import pytest
import torch

from models.data.scenes import BACKGROUND, INK, SIZE_EDGES, SceneConfig, generate, size_class


def _pool(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic 'digits': random blobs with a solid bar, labels 0-9 (no MNIST needed)."""
    g = torch.Generator().manual_seed(seed)
    digits = torch.zeros(n, 1, 28, 28)
    for i in range(n):
        top, left = int(torch.randint(2, 8, (1,), generator=g)), int(torch.randint(6, 14, (1,), generator=g))
        digits[i, 0, top : top + 20, left : left + 6] = 1.0
        digits[i, 0, top : top + 4, left - 4 : left + 10] = 0.8
    return digits, torch.arange(n) % 10


def test_labels_sit_under_ink_and_boxes_hold_their_ink():
    digits, labels = _pool()
    sc = generate(digits, labels, 30, seed=5)
    assert sc.images.shape == (30, 1, 64, 64) and sc.classes.shape == (30, 64, 64)
    inked = sc.images[:, 0] > INK
    assert torch.equal(sc.classes != BACKGROUND, inked)
    assert torch.equal(sc.instances >= 0, inked)
    for d in range(len(sc.labels)):
        s, i = int(sc.scene[d]), int(sc.index[d])
        mine = sc.instances[s] == i
        assert (sc.classes[s][mine] == sc.labels[d]).all()
        x0, y0, x1, y1 = sc.boxes[d].long().tolist()
        ys, xs = mine.nonzero(as_tuple=True)
        if len(ys):  # fully covered digits own no pixel
            assert ys.min() >= y0 and ys.max() < y1 and xs.min() >= x0 and xs.max() < x1
        assert sc.heights[d] == y1 - y0
        assert labels[sc.source[d]] == sc.labels[d]


def test_scenes_are_deterministic_and_addressable_one_by_one():
    digits, labels = _pool()
    a = generate(digits, labels, 6, seed=3)
    b = generate(digits, labels, 6, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.boxes, b.boxes)
    one = generate(digits, labels, 1, seed=3, start=4)
    assert torch.equal(one.images[0], a.images[4])
    assert torch.equal(one.boxes, a.subset([4]).boxes)
    assert not torch.equal(generate(digits, labels, 6, seed=4).images, a.images)


def test_sizes_span_the_configured_range_and_digits_per_scene():
    digits, labels = _pool()
    cfg = SceneConfig(size=64, min_digits=1, max_digits=4, min_height=10, max_height=54)
    sc = generate(digits, labels, 200, seed=1, config=cfg)
    counts = torch.bincount(sc.scene, minlength=200)
    assert counts.min() >= 1 and counts.max() <= 4
    assert sc.heights.min() <= 12 and sc.heights.max() >= 45  # about 10 px to 50+ px: 4x and more
    assert (sc.heights >= 9).all() and (sc.heights <= 54).all()
    assert set(size_class(sc.heights).tolist()) == {0, 1, 2}
    assert size_class(torch.tensor([SIZE_EDGES[0] - 1.0, float(SIZE_EDGES[0]), float(SIZE_EDGES[1])])).tolist() == [
        0,
        1,
        2,
    ]


def test_boxes_overlap_at_most_the_limit():
    digits, labels = _pool()
    sc = generate(digits, labels, 100, seed=2, config=SceneConfig(max_overlap=0.1))
    for s in range(len(sc)):
        b = sc.boxes[sc.digits_of(s)]
        for i in range(len(b)):
            for j in range(i + 1, len(b)):
                iw = (torch.minimum(b[i, 2], b[j, 2]) - torch.maximum(b[i, 0], b[j, 0])).clamp_min(0)
                ih = (torch.minimum(b[i, 3], b[j, 3]) - torch.maximum(b[i, 1], b[j, 1])).clamp_min(0)
                area = torch.minimum(
                    (b[i, 2] - b[i, 0]) * (b[i, 3] - b[i, 1]), (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1])
                )
                # boxes are re-tightened after placement, so they can only shrink: never above the limit
                assert float(iw * ih / area) <= 0.1 + 1e-6


def test_rotation_and_bad_configs():
    digits, labels = _pool()
    straight = generate(digits, labels, 3, seed=9)
    rotated = generate(digits, labels, 3, seed=9, config=SceneConfig(rotate=45))
    assert not torch.equal(straight.images, rotated.images)
    with pytest.raises(ValueError, match="max_height"):
        SceneConfig(size=32, max_height=54)
    with pytest.raises(ValueError, match="min_digits"):
        SceneConfig(min_digits=0)


def test_test_scenes_are_made_of_the_named_test_digits(mnist_dir):
    import torch.nn.functional as F

    from models.data.mnist import load_mnist
    from models.data.scenes import _crop
    from models.train.scenes import test_scenes

    test = load_mnist(mnist_dir, train=False)
    sc = test_scenes(test.images, test.labels, count=20)
    assert torch.equal(sc.labels, test.labels[sc.source])
    assert torch.equal(sc.images, test_scenes(test.images, test.labels, count=20).images)
    checked = 0
    for d in range(len(sc.labels)):
        x0, y0, x1, y1 = sc.boxes[d].long().tolist()
        glyph = sc.images[int(sc.scene[d]), 0, y0:y1, x0:x1]
        src = _crop(test.images[int(sc.source[d]), 0])
        owned = sc.instances[int(sc.scene[d]), y0:y1, x0:x1]
        if ((owned >= 0) & (owned != sc.index[d])).sum() > 0.2 * (owned == sc.index[d]).sum():
            continue  # largely covered by another digit's box
        back = F.interpolate(glyph[None, None], size=src.shape, mode="bilinear", align_corners=False)[0, 0]
        corr = torch.corrcoef(torch.stack([back.flatten(), src.flatten()]))[0, 1]
        assert corr > 0.8, f"digit {d} does not look like MNIST test digit {int(sc.source[d])}"
        checked += 1
    assert checked >= 10, checked


def test_rescale_digit_grows_and_shrinks_one_digit_about_its_centre():
    from models.data.scenes import rescale_digit

    digits, labels = _pool()
    sc = generate(digits, labels, 40, seed=11)
    s = next(i for i in range(len(sc)) if len(sc.digits_of(i)) >= 2)
    d0 = int(sc.digits_of(s)[0])
    box = sc.boxes[d0]
    for factor in (0.5, 1.6):
        image, new_box = rescale_digit(sc.images[s, 0], sc.instances[s], 0, factor)
        h_old, h_new = float(box[3] - box[1]), float(new_box[3] - new_box[1])
        if factor > 1 and h_old * factor > 60:
            continue  # clipped by the canvas
        assert h_new == pytest.approx(h_old * factor, abs=3)
        centre_old = (box[:2] + box[2:]) / 2
        centre_new = (new_box[:2] + new_box[2:]) / 2
        assert torch.allclose(centre_old, centre_new, atol=2.5)
        # the other digits' ink is untouched where the rescaled digit does not reach
        others = (sc.instances[s] >= 1) & (image < sc.images[s, 0] - 1e-6)
        assert not others.any()
    with pytest.raises(ValueError, match="owns no pixel"):
        rescale_digit(sc.images[s, 0], sc.instances[s], 9, 2.0)


def test_a_photographed_scene_on_uneven_paper_gives_the_twin_no_stray_classes(monkeypatch):
    """A wide photo of two digits on shaded, textured paper, letterboxed onto the scene canvas:
    with the paper cleaned, the regular twin labels only the two digits' classes; left as it
    was, the paper's shading gave it classes of digits that are not there."""
    import importlib

    import numpy as np
    from PIL import Image

    import viz
    from tests.test_preprocess import paper_photo

    preprocess = importlib.import_module("viz.preprocess")
    samples = viz.load_samples()
    canvas = np.zeros((120, 300))
    for index, (y, x, size) in ((1, (20, 40, 80)), (3, (30, 180, 60))):
        digit = Image.fromarray((samples.images[index, 0].numpy() * 255).astype(np.uint8)).resize((size, size))
        canvas[y : y + size, x : x + size] = np.asarray(digit, dtype=np.float64) / 255
    photo = paper_photo(canvas)
    twin = viz.load("scene_regular")
    truth = {int(samples.labels[1]), int(samples.labels[3])}

    def classes() -> set[int]:
        predicted = viz.capture(twin, preprocess.preprocess_scene(photo)).predictions[0]
        return {int(c) for c in predicted.unique()} - {10}  # 10: background

    assert classes() == truth
    monkeypatch.setattr(preprocess, "UNEVEN_PAPER", 10.0)  # the paper left as it is
    assert classes() - truth
