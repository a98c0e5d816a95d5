"""The app's logic, directly: decoding, selection parsing, figures."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

import viz
from viz import interactive as ia
from viz.samples import load_samples


def test_decode_limits():
    with pytest.raises(ia.InputError, match="empty"):
        ia.decode_image(b"", "e.png")
    with pytest.raises(ia.InputError, match="limit"):
        ia.decode_image(b"0" * (ia.MAX_UPLOAD_BYTES + 1), "big.png")
    buf = io.BytesIO()
    Image.new("1", (5000, 5000)).save(buf, format="PNG")
    with pytest.raises(ia.InputError, match="megapixels"):
        ia.decode_image(buf.getvalue(), "bomb.png")


def test_unit_from_selection_reads_customdata():
    event = {"selection": {"points": [{"curve_number": 1, "customdata": [3, 11]}]}}
    assert ia.unit_from_selection(event) == (3, 11)
    as_mapping = {"selection": {"points": [{"customdata": {"0": 4, "1": 9}}]}}
    assert ia.unit_from_selection(as_mapping) == (4, 9)
    assert ia.unit_from_selection({"selection": {"points": [{"customdata": None}, {"customdata": ["a", 1]}]}}) is None
    assert ia.unit_from_selection({"selection": {"points": []}}) is None
    assert ia.unit_from_selection(None) is None


def test_points_figure_is_deterministic_and_has_clickable_units():
    models = viz.load("deform_rts"), viz.load("regular_rts")
    a = ia.analyse(*models, load_samples().images[1])
    f1 = ia.points_figure(a, (5, 6), 3, "bilinear", False)
    f2 = ia.points_figure(a, (5, 6), 3, "bilinear", False)
    assert f1.to_json() == f2.to_json()
    units = f1.data[1]
    assert units.type == "scatter" and len(units.x) == 196
    assert units.customdata[6 * 14 + 3].tolist() == [6, 3]
    assert (units.x[6 * 14 + 3], units.y[6 * 14 + 3]) == (6.5, 12.5)  # x = 2*col + 0.5, y = 2*row + 0.5
    pts = viz.backproject(a.deform, (5, 6))
    assert torch.allclose(torch.as_tensor(f1.data[2].x, dtype=torch.float32), pts.x[pts.level == 3])
    regular = ia.points_figure(a, (5, 6), 2, "nearest", True)
    assert len(regular.data[2].x) == 81
