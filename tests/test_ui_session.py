"""What the pages share (ui.session): one bounded result store, and the URL's query parameters as
the pages' shareable state (a copied link opens the same picture, unit, method and view)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO
from ui import session

APP = str(REPO / "app.py")


def test_cached_builds_once_and_keeps_the_last_few_of_each_kind(monkeypatch):
    monkeypatch.setattr(session.st, "session_state", {})
    monkeypatch.setitem(session.CACHE_LIMITS, "pair", 2)
    built = []

    def build(k):
        return lambda: built.append(k) or f"result {k}"

    assert session.cached("pair", 1, build(1)) == "result 1"
    assert session.cached("pair", 1, build(1)) == "result 1" and built == [1]  # computed once
    session.cached("view", 1, build("v"))  # another kind does not count against pairs
    session.cached("pair", 2, build(2))
    session.cached("pair", 3, build(3))  # the oldest pair goes
    store = session.st.session_state["results"]
    assert sorted(k for k in store if k[0] == "pair") == [("pair", 2), ("pair", 3)]
    assert ("view", 1) in store


@pytest.mark.parametrize(
    ("parse", "good", "value", "bad"),
    [
        (session.parse_unit, "7,3", (7, 3), "7"),
        (session.int_in(0, 99), "42", 42, "100"),
        (session.float_in(0.4, 2.0), "1.5", 1.5, "3"),
        (session.one_of(("nearest", "bilinear")), "nearest", "nearest", "cubic"),
    ],
)
def test_query_values_parse_or_refuse(parse, good, value, bad):
    assert parse(good) == value
    with pytest.raises(ValueError):
        parse(bad)


def test_a_link_opens_the_same_scene_unit_method_and_view():
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(
        {"scene": "3", "digit": "1", "scale": "1.5", "unit": "5,6", "method": "exact", "view": "saliency region"}
    )
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.number_input(key="scene_index").value == 3
    assert at.selectbox(key="scene_digit").value == 1 and at.slider(key="scene_factor").value == 1.5
    assert at.radio(key="method").value == "exact" and at.radio(key="scene_view").value == "saliency region"
    said = " ".join(c.value for c in at.caption)
    assert "Unit (5, 6) lies on" in said and "square around it" in said and "test scene 3, digit 2 x1.5" in said
    # and the page writes what it shows back, so the address can be copied again
    assert {k: at.query_params[k] for k in ("scene", "digit", "scale", "unit", "method", "view")} == {
        "scene": "3", "digit": "1", "scale": "1.5", "unit": "5,6", "method": "exact", "view": "saliency region",
    }  # fmt: skip


def test_the_address_follows_the_choices():
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert at.query_params["scene"] == "10" and at.query_params["view"] == "sampling points"
    at.number_input(key="scene_index").set_value(4).run()
    at.radio(key="scene_view").set_value("effective receptive field").run()
    assert at.query_params["scene"] == "4" and at.query_params["view"] == "effective receptive field"
    at.switch_page("ui/digits.py").run()
    at.slider(key="unit_row").set_value(2).run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.query_params["unit"] == "2,7" and at.query_params["sample"] == "1" and "scene" not in at.query_params
    at.radio(key="source").set_value("Draw").run()  # a drawing cannot travel in a link
    assert "sample" not in at.query_params and "unit" not in at.query_params


def test_a_link_with_nonsense_is_said_and_the_rest_is_used():
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update({"scene": "3", "unit": "here", "view": "x-ray"})
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    warned = " ".join(w.value for w in at.warning)
    assert "not understood" in warned and "unit" in warned and "view" in warned and "scene" not in warned
    assert at.number_input(key="scene_index").value == 3
    assert at.radio(key="scene_view").value == "sampling points"


PAGE = '''
import streamlit as st

from ui.session import Field, UrlState, cached, int_in, load_model, scene_samples
from viz.figures import dilation_figure
from viz.pages import analyse, input_key
from viz.render import plotly_figure


def page() -> None:
    url = UrlState("dilation", [Field("scene", "dilation_scene", int_in(0, 499))])
    url.restore()
    st.session_state.setdefault("dilation_scene", 10)
    idx = st.number_input("Test scene", 0, 499, key="dilation_scene")
    image = scene_samples().images[idx]
    deform, regular = load_model("scene_deform"), load_model("scene_regular")
    pair = cached("pair", input_key(image, "scene_deform"), lambda: analyse(deform, regular, image, "scene_deform"))
    st.plotly_chart(plotly_figure(dilation_figure(pair.deform), interactive=True))
    url.publish()


if __name__ == "__main__":
    page()
'''


def test_a_new_page_is_one_module_and_one_navigation_line(tmp_path):
    """The architecture page's worked example: a page module and its line in the navigation get
    an address whose query state opens the same scene."""
    (tmp_path / "dilation.py").write_text(PAGE)
    (tmp_path / "app.py").write_text(
        "import streamlit as st\n"
        "st.navigation([st.Page('dilation.py', title='Dilation map', url_path='dilation')]).run()\n"
    )
    at = AppTest.from_file(str(tmp_path / "app.py"), default_timeout=120)
    at.query_params["scene"] = "12"
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.number_input(key="dilation_scene").value == 12 and at.query_params["scene"] == "12"
    assert len(at.get("plotly_chart")) == 1
