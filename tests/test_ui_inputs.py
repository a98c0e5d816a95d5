"""The app's logic, directly: decoding, selection parsing, figures."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from ui import inputs as ia


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


def test_preview_fits_a_box_whatever_the_aspect_ratio():
    for size in [(2000, 10), (10, 2000), (9000, 9000), (1, 1), (140, 140)]:
        shown = ia.preview(Image.new("L", size, 128))
        assert max(shown.size) <= 140 and min(shown.size) >= 1
        assert shown.mode in ("RGB", "RGBA")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view": a phone held upright
    buf = io.BytesIO()
    Image.new("L", (60, 30), 255).save(buf, format="JPEG", exif=exif.tobytes())
    img, _ = ia.decode_image(buf.getvalue(), "phone.jpg")
    assert img.size == (30, 60)  # applied: upright, as the camera meant


def test_unit_state_keeps_the_unit_and_its_sliders_in_step():
    state: dict = {}
    unit = ia.UnitState(state, "user_unit")
    unit.set((3, 5))
    assert state == {"user_unit": (3, 5), "user_unit_row": 3, "user_unit_col": 5}
    state["user_unit_col"] = 9  # a slider moved
    unit.from_sliders()
    assert state["user_unit"] == (3, 9)


def test_a_unit_off_the_top_layer_moves_to_the_nearest_unit_on_it():
    assert ia.within((3, 5), (14, 14)) == (3, 5)
    assert ia.within((20, -2), (14, 14)) == (13, 0)  # a link's or another picture's unit
    assert ia.within((7, 7), (4, 6)) == (3, 5)
