"""The Streamlit page through AppTest: bundled digits, clicks via sliders, bad inputs."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import streamlit as st
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

import viz
from tests.conftest import REPO

APP = str(REPO / "app.py")


PAGES = {"Scenes": "ui/scenes.py", "Single digit": "ui/digits.py"}


def _run(mode: str = "Single digit") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception, [e.message for e in at.exception]
    if mode != "Scenes":
        at.switch_page(PAGES[mode]).run()
        assert not at.exception, [e.message for e in at.exception]
    return at


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _png(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _seven(mode: str = "L", size: int = 160) -> Image.Image:
    img = Image.new("L", (size, size), 255)
    ImageDraw.Draw(img).line([(30, 25), (120, 25), (60, 140)], fill=0, width=14)
    return img.convert(mode) if mode != "L" else img


def test_bundled_digit_shows_prediction_and_points():
    at = _run()
    assert _metric(at, "Deformable predicts") == "2"  # sample 1 is a 2
    assert _metric(at, "Regular twin predicts") == "2"
    assert any("Unit (7, 7): 729 sampling points (level 3)" in c.value for c in at.caption)
    assert any("Server time for these views" in c.value for c in at.caption)
    at.number_input(key="sample_index").set_value(0).run()  # sample 0 is a 7
    assert not at.exception and _metric(at, "Deformable predicts") == "7"


def test_unit_sliders_and_levels_move_the_points():
    at = _run()
    at.slider(key="unit_row").set_value(3).run()
    assert any("Unit (3," in c.value for c in at.caption)
    at.slider(key="levels").set_value(2).run()
    assert any("81 sampling points (level 2)" in c.value for c in at.caption)
    for method in viz.METHODS:
        at.radio(key="method").set_value(method).run()
        assert not at.exception


@pytest.mark.parametrize("ckpt", ["deform_plain", "deform2_plain"])
def test_every_checkpoint_pair(ckpt):
    at = _run()
    at.sidebar.selectbox[0].set_value(ckpt).run()
    assert not at.exception and _metric(at, "Deformable predicts") == "2"


def _upload(data: bytes, name: str, mime: str = "image/png") -> AppTest:
    at = _run()
    at.radio(key="source").set_value("Upload").run()
    at.file_uploader(key="upload").set_value((name, data, mime)).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_good_uploads_of_every_kind():
    frames = [_seven(), Image.new("L", (160, 160), 0)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    rgba = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).line([(30, 25), (120, 25), (60, 140)], fill=(0, 0, 0, 255), width=14)
    cases = {
        "seven.png": (_png(_seven()), None),
        "seven.jpg": (_png(_seven("RGB"), "JPEG"), None),
        "seven.bmp": (_png(_seven(), "BMP"), None),
        "seven.webp": (_png(_seven("RGB"), "WEBP"), None),
        "anim.gif": (buf.getvalue(), "animated"),
        "cmyk.jpg": (_png(_seven("CMYK"), "JPEG"), "CMYK"),
        "clear.png": (_png(rgba), "Transparent"),
        "deep.png": (_png(Image.fromarray(np.asarray(_seven(), dtype=np.uint16) * 257)), "16-bit"),
    }
    for name, (data, note) in cases.items():
        at = _upload(data, name)
        assert _metric(at, "Deformable predicts") == "7", name
        if note:
            assert any(note in c.value for c in at.caption), name


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("notes.png", b"this is not an image", "not an image file"),
        ("cut.png", _png(_seven())[:300], "truncated or corrupt"),
        ("blank.png", _png(Image.new("L", (100, 100), 255)), "empty"),
        ("bomb.png", _png(Image.new("1", (8000, 8000))), "megapixels are refused"),
    ],
)
def test_bad_uploads_give_a_message_not_a_traceback(name, data, message):
    at = _upload(data, name)
    shown = [e.value for e in at.error] + [w.value for w in at.warning]
    assert any(message in m for m in shown), shown
    assert not at.metric  # nothing analysed; the page stays usable
    at.radio(key="source").set_value("Sample digit").run()
    assert not at.exception and _metric(at, "Deformable predicts") == "2"


def test_canvas_empty_then_drawn():
    at = _run()
    at.radio(key="source").set_value("Draw").run()
    assert any("canvas is empty" in i.value for i in at.info)
    said = " | ".join(c.value for c in at.caption)
    assert "Clear button" in said and "trash" not in said  # the canvas's own words (app_canvas: a Clear button)
    rgba = Image.new("RGBA", (280, 280), (0, 0, 0, 255))
    ImageDraw.Draw(rgba).line([(60, 50), (200, 50), (110, 240)], fill=(255, 255, 255, 255), width=22)
    url = "data:image/png;base64," + base64.b64encode(_png(rgba)).decode()
    at.session_state["canvas"] = {"png": url}  # what the canvas sends when a stroke ends
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert _metric(at, "Deformable predicts") == "7"


def test_missing_and_corrupt_checkpoints(tmp_path, monkeypatch):
    st.cache_resource.clear()
    monkeypatch.setattr(viz, "CHECKPOINT_DIR", tmp_path)
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    assert any("Could not load the scene models" in e.value and "scene_deform" in e.value for e in at.error)
    at.switch_page("ui/digits.py").run()
    assert not at.exception
    assert any("Could not load the model" in e.value and "deform_rts" in e.value for e in at.error)
    (tmp_path / "deform_rts.pt").write_bytes(b"garbage")
    st.cache_resource.clear()
    at = _run()
    assert any("truncated, corrupt" in e.value for e in at.error)
    st.cache_resource.clear()


def test_odd_aspect_uploads_show_a_bounded_preview_not_a_traceback():
    for size in [(2000, 10), (10, 2000)]:
        img = Image.new("L", size, 255)
        ImageDraw.Draw(img).line([(0, 0), size], fill=0, width=4)
        at = _upload(_png(img), f"{size[0]}x{size[1]}.png")
        assert not at.exception, [e.message for e in at.exception]
        assert not at.error  # a thin line is still a usable digit picture; the preview fits 140x140


def test_cleared_canvas_shows_the_prompt_not_a_warning():
    at = _run()
    at.radio(key="source").set_value("Draw").run()
    rgba = Image.new("RGBA", (280, 280), (0, 0, 0, 255))
    ImageDraw.Draw(rgba).line([(60, 50), (200, 50), (110, 240)], fill=(255, 255, 255, 255), width=22)
    at.session_state["canvas"] = {"png": "data:image/png;base64," + base64.b64encode(_png(rgba)).decode()}
    at.run()
    assert _metric(at, "Deformable predicts") == "7"
    at.session_state["canvas"] = {"png": ""}  # what the Clear button sends
    at.run()
    assert not at.exception
    assert any("canvas is empty" in i.value for i in at.info)
    assert not at.warning and not at.metric
    at.radio(key="source").set_value("Sample digit").run()
    if "canvas" in at.session_state:  # the unmounted component's value is gone, as in the browser
        del at.session_state["canvas"]
    at.radio(key="source").set_value("Draw").run()
    assert any("canvas is empty" in i.value for i in at.info)  # cleared stays cleared


def test_switching_checkpoint_keeps_the_unit():
    at = _run()
    at.slider(key="unit_row").set_value(4).run()
    at.slider(key="unit_col").set_value(9).run()
    at.sidebar.selectbox[0].set_value("deform_plain").run()
    assert not at.exception
    assert any("Unit (4, 9):" in c.value for c in at.caption)


def test_digit_mode_views_of_a_unit():
    import json

    from viz.views import VIEWS

    at = _run()
    at.radio(key="digit_view").set_value(VIEWS[1]).run()
    assert not at.exception, [e.message for e in at.exception]
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")[1:]]  # after the probabilities
    assert len(specs) == 2  # one chart a model
    assert sum("ERF, 90% on" in a["text"] for spec in specs for a in spec["layout"]["annotations"]) == 2
    assert sum(t["type"] == "heatmap" for spec in specs for t in spec["data"]) == 2  # deformable and twin


def test_switching_input_source_and_back_keeps_the_drawing():
    at = _run()
    at.radio(key="source").set_value("Draw").run()
    rgba = Image.new("RGBA", (280, 280), (0, 0, 0, 255))
    ImageDraw.Draw(rgba).line([(60, 50), (200, 50), (110, 240)], fill=(255, 255, 255, 255), width=22)
    url = "data:image/png;base64," + base64.b64encode(_png(rgba)).decode()
    at.session_state["canvas"] = {"png": url}  # what the canvas sends when a stroke ends
    at.run()
    assert _metric(at, "Deformable predicts") == "7"
    at.radio(key="source").set_value("Sample digit").run()
    assert _metric(at, "Deformable predicts") == "2"
    if "canvas" in at.session_state:  # what the browser does: the unmounted component's value is gone
        del at.session_state["canvas"]
    at.radio(key="source").set_value("Draw").run()
    assert not at.exception, [e.message for e in at.exception]
    assert not any("canvas is empty" in i.value for i in at.info)
    assert _metric(at, "Deformable predicts") == "7"  # the drawing came back


def test_only_the_open_tab_runs_and_choices_survive_a_tab_switch():
    from viz.views import VIEWS

    at = _run()
    at.slider(key="unit_row").set_value(4).run()
    at.radio(key="digit_view").set_value(VIEWS[1]).run()
    labels = [m.label for m in at.metric]
    assert "Deformable, on the digit" not in labels  # the dilation tab is closed: not computed
    assert len(at.get("plotly_chart")) == 3  # the probabilities and the unit's view (a chart a model)
    at.session_state["digit_tabs"] = "Effective dilation"
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert "Deformable, on the digit" in [m.label for m in at.metric]
    assert not any("Unit (" in c.value for c in at.caption)  # the points tab is closed
    at.session_state["digit_tabs"] = "Sampling points"
    at.run()
    assert at.radio(key="digit_view").value == VIEWS[1]  # the view chosen before the switch
    assert at.slider(key="unit_row").value == 4 and any("Unit (4, " in c.value for c in at.caption)


def test_a_photo_of_a_digit_on_paper_is_cleaned_and_says_so():
    from tests.test_preprocess import paper_photo

    strokes = 1 - np.asarray(_seven(size=200), dtype=np.float64) / 255  # _seven draws dark on white
    strokes = np.pad(strokes, ((30, 30), (60, 60)))
    photo = Image.fromarray((paper_photo(strokes) * 255).astype(np.uint8))
    at = _upload(_png(photo.convert("RGB"), "JPEG"), "photo.jpg")
    assert _metric(at, "Deformable predicts") == "7"
    said = " | ".join(c.value for c in at.caption)
    assert "inverted to white on black" in said and "Uneven paper" in said
    at = _upload(_png(Image.fromarray(255 - np.asarray(_seven()))), "white_on_black.png")
    said = " | ".join(c.value for c in at.caption)
    assert "inverted" not in said and "Uneven paper" not in said
