"""Seeded transforms move digits the way their names say."""

from __future__ import annotations

import pytest
import torch

from models.data.transforms import affine, describe, parse_augment, random_transform, transformed_test_set


def _peak(img: torch.Tensor) -> tuple[int, int]:
    return divmod(int(img.flatten().argmax()), img.shape[-1])


def _dot(y: int, x: int) -> torch.Tensor:
    im = torch.zeros(1, 1, 28, 28)
    im[0, 0, y, x] = 1.0
    return im


def test_shift_is_rows_then_columns():
    out = affine(_dot(10, 20), torch.tensor([0.0]), torch.tensor([[3.0, -2.0]]), torch.tensor([1.0]))
    assert _peak(out[0, 0]) == (13, 18)


def test_rotation_is_counter_clockwise_on_screen():
    # Right of and above the centre (13.5, 13.5): a quarter turn ccw moves it left and up.
    out = affine(_dot(10, 20), torch.tensor([90.0]), torch.zeros(1, 2), torch.tensor([1.0]))
    assert _peak(out[0, 0]) == (7, 10)


def test_scale_about_centre():
    im = torch.zeros(1, 1, 28, 28)
    im[0, 0, 11:17, 11:17] = 1.0  # 6x6 block centred on the image centre
    out = affine(im, torch.tensor([0.0]), torch.zeros(1, 2), torch.tensor([2.0]))
    assert float(out.sum()) == pytest.approx(4 * float(im.sum()), rel=0.05)


def test_seeded_and_reproducible():
    images = torch.rand(8, 1, 28, 28)
    a = transformed_test_set(images, "rotate+translate")
    b = transformed_test_set(images, "rotate+translate")
    assert torch.equal(a, b) and not torch.equal(a, images)
    c = random_transform(images, "scale", torch.Generator().manual_seed(1))
    d = random_transform(images, "scale", torch.Generator().manual_seed(2))
    assert not torch.equal(c, d)
    assert transformed_test_set(images, "none") is images


def test_parse_and_describe():
    assert parse_augment("rotate+translate+scale") == ("rotate", "translate", "scale")
    assert parse_augment("none") == ()
    assert "rotate U(-60, 60) deg" in describe("rotate")
    for bad in ("spin", "rotate+rotate", "rotate+"):
        with pytest.raises(ValueError, match="bad augmentation"):
            parse_augment(bad)
