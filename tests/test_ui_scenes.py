"""The app's scene mode through AppTest: test scenes, rescaling, drawings, uploads, bad inputs."""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO

APP = str(REPO / "app.py")


def _run() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def _two_digits(mode: str = "L") -> bytes:
    """A big 7 and a small 1 on white paper, dark ink."""
    img = Image.new("L", (400, 300), 255)
    d = ImageDraw.Draw(img)
    d.line([(40, 40), (220, 40), (110, 270)], fill=0, width=22)  # large 7
    d.line([(320, 200), (320, 260)], fill=0, width=10)  # small 1
    buf = io.BytesIO()
    img.convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def test_scene_mode_is_the_default_and_shows_points_reads_and_triplet():
    at = _run()
    assert at.selectbox(key="scene_model").value == "scene_deform"  # the scene page opens first
    text = _captions(at)
    assert "729 sampling points at level 3" in text and "Server time for this update" in text
    assert "lies on digit" in text  # the first unit is on the scene's largest digit
    reads = at.dataframe[0].value
    assert list(reads.columns) == ["digit", "size", "true", "deformable reads", "regular reads"]
    assert len(reads) == 3 and set(reads["size"].str.split().str[0]) >= {"small", "large"}  # scene 10
    assert at.subheader[0].value.startswith("At a glance")


def test_rescaling_a_digit_keeps_the_unit_and_changes_its_points():
    at = _run()
    before = _captions(at)
    unit = at.session_state["scene_unit"]
    at.selectbox(key="scene_digit").set_value(1).run()  # the large 1
    at.slider(key="scene_factor").set_value(0.5).run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.session_state["scene_unit"] == unit
    after = _captions(at)
    assert "digit 2 x0.5" in after and after != before
    at.number_input(key="scene_index").set_value(3).run()  # another scene: the unit is chosen afresh
    assert not at.exception


def test_upload_and_drawing_find_their_digits():
    at = _run()
    at.radio(key="scene_source").set_value("Upload").run()
    at.file_uploader(key="scene_upload").set_value(("two.png", _two_digits(), "image/png")).run()
    assert not at.exception, [e.message for e in at.exception]
    reads = at.dataframe[0].value
    assert len(reads) == 2
    assert sorted(reads["size"].str.split().str[0]) == ["large", "small"]

    at.radio(key="scene_source").set_value("Draw").run()
    assert any("canvas is empty" in i.value for i in at.info)
    rgba = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
    d = ImageDraw.Draw(rgba)
    d.line([(30, 30), (150, 30), (80, 220)], fill=(255, 255, 255, 255), width=14)
    d.line([(210, 170), (210, 220)], fill=(255, 255, 255, 255), width=8)
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    at.session_state["scene_canvas"] = {"png": url}
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert len(at.dataframe[0].value) == 2


def test_bad_scene_uploads_give_messages():
    at = _run()
    at.radio(key="scene_source").set_value("Upload").run()
    for name, data, message in [
        ("notes.png", b"not an image", "not an image file"),
        ("blank.png", _png_blank(), "empty"),
        ("sliver.png", _png_sliver(), None),  # 2000x10: a very wide picture is letterboxed, not a traceback
    ]:
        at.file_uploader(key="scene_upload").set_value((name, data, "image/png")).run()
        assert not at.exception, (name, [e.message for e in at.exception])
        shown = [e.value for e in at.error] + [w.value for w in at.warning]
        if message is not None:
            assert any(message in m for m in shown), (name, shown)
            assert not any("Pick a test scene" in i.value for i in at.info)  # the error alone, no blue box beside


def _png_blank() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (100, 100), 255).save(buf, format="PNG")
    return buf.getvalue()


def _png_sliver() -> bytes:
    img = Image.new("L", (2000, 10), 255)
    ImageDraw.Draw(img).line([(10, 5), (1990, 5)], fill=0, width=3)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _chart_titles(at: AppTest) -> str:
    """The panel titles (annotations) of the unit view: its first two charts, one a model."""
    import json

    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")[:2]]
    texts = (a.get("text", "") for spec in specs for a in spec["layout"].get("annotations", []))
    return " ".join(t.replace("<br>", " ") for t in texts)  # titles are wrapped to fit their chart


def test_every_view_of_a_unit_shows_for_both_models():
    from viz.views import VIEWS

    at = _run()
    for view, short in zip(VIEWS[1:], ("ERF, 90% on", "samples give half", ": saliency "), strict=True):
        at.radio(key="scene_view").set_value(view).run()
        assert not at.exception, [e.message for e in at.exception]
        titles = _chart_titles(at)
        assert titles.count(short) == 2, titles  # the deformable model and its twin
    # the saliency panels name the region's area, for the deformable model and for the twin
    assert len(re.findall(r": saliency \d+ px", _chart_titles(at))) == 2


def test_roi_pooling_section_moves_the_box_and_reads_the_digit():
    at = _run()
    assert "Deformable RoI pooling reads" not in _captions(at)  # its tab is closed: not computed
    at.session_state["scene_tabs"] = "Deformable RoI pooling"
    at.run()
    text = _captions(at)
    assert "Deformable RoI pooling reads" in text and "plain RoI Align" in text
    box = at.selectbox(key="roi_digit")  # named as in the main digit selector
    assert box.options == [o for o in at.selectbox(key="scene_digit").options]
    assert box.options[0].startswith("digit 1: a ") and box.options[0].endswith(" px")
    heights = [int(o.rsplit(", ", 1)[1].split()[0]) for o in box.options]
    assert box.index == heights.index(max(heights))  # it opens on the largest digit
    at.selectbox(key="roi_digit").set_value(0).run()
    assert not at.exception and at.slider(key="roi_shift_x").value == 0.0
    assert not at.subheader or not at.subheader[0].value.startswith("At a glance")  # the overview is closed
    at.slider(key="roi_shift_x").set_value(0.3).run()
    at.slider(key="roi_scale").set_value(1.3).run()
    assert not at.exception, [e.message for e in at.exception]
    assert "Deformable RoI pooling reads" in _captions(at)
    at.session_state["scene_tabs"] = "At a glance: background, small, large"
    at.run()
    at.session_state["scene_tabs"] = "Deformable RoI pooling"
    at.run()
    assert at.slider(key="roi_scale").value == 1.3  # the box kept while the tab was closed


@pytest.mark.parametrize(
    ("name", "family", "one_group"),
    [
        ("scene_dcnv3", "InternImage's DCNv3", "group 1 at the top"),
        ("scene_dcnv4", "FlashInternImage's DCNv4", "group 3 at the top"),
    ],
)
def test_the_grouped_scene_models_offer_their_groups(name, family, one_group):
    at = _run()
    at.selectbox(key="scene_model").set_value(name).run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.selectbox(key="scene_group").value == "all groups"
    assert "46656 sampling points at level 3" in _captions(at) and family in _captions(at)
    at.selectbox(key="scene_group").set_value(one_group).run()
    assert not at.exception, [e.message for e in at.exception]
    assert "11664 sampling points at level 3" in _captions(at)


def test_a_digit_rescaled_into_its_neighbour_is_said_and_colours_are_named_only_where_drawn():
    at = _run()
    at.selectbox(key="scene_digit").set_value(1).run()  # the large 1 beside the 3
    at.slider(key="scene_factor").set_value(2.0).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("now overlaps digit" in w.value for w in at.warning)
    at.slider(key="scene_factor").set_value(1.0).run()
    assert not any("now overlaps digit" in w.value for w in at.warning)
    said = " ".join(c.value for c in at.caption)
    assert "Colours: the model's predicted digit classes" in said  # the points, over the segmentation
    at.radio(key="scene_view").set_value("effective receptive field").run()
    assert "Colours: the model's predicted" not in " ".join(c.value for c in at.caption)  # none drawn
