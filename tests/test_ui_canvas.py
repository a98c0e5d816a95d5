"""The canvas wrapper: what it hands the component, what it returns, and that a drawing survives
leaving the page. The component itself is replaced by a stand-in that records its arguments
and answers like the browser side (a PNG data URL when a stroke ends, "" after Clear)."""

from __future__ import annotations

import base64
import io

from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest


def _script():
    import streamlit as st

    from ui import canvas as app_canvas

    app_canvas.new_full_run()
    if st.session_state.get("show", True):
        img = app_canvas.drawn_image("c", side=64, stroke_width=5)
        st.session_state["got"] = None if img is None else img.size


class _Result:
    def __init__(self, png):
        self.png = png


def _stand_in(key, data, default, on_png_change):
    import streamlit as st

    st.session_state.setdefault("calls", []).append(dict(data))
    return _Result(st.session_state.get("sent"))


def _png_url() -> str:
    img = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    ImageDraw.Draw(img).line([(10, 10), (50, 50)], fill=(255, 255, 255, 255), width=5)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_canvas_returns_strokes_keeps_them_away_and_clears(monkeypatch):
    from ui import canvas as app_canvas

    monkeypatch.setattr(app_canvas, "_COMPONENT", _stand_in)
    at = AppTest.from_function(_script).run()
    assert not at.exception and at.session_state["got"] is None  # nothing drawn yet
    calls = at.session_state["calls"]
    assert calls[-1]["initial"] is None and calls[-1]["width"] == 64 and calls[-1]["stroke_width"] == 5
    url = _png_url()
    at.session_state["sent"] = url  # a stroke ended
    at.run()
    assert at.session_state["got"] == (64, 64)
    at.run()
    assert at.session_state["calls"][-1]["initial"] is None  # unchanged while shown: no redraw
    at.session_state["show"] = False  # another input: the canvas leaves the page
    at.session_state["sent"] = None  # and its value with it
    at.run()
    at.session_state["show"] = True
    at.run()
    assert at.session_state["calls"][-1]["initial"] == url  # back: it starts from the drawing
    assert at.session_state["got"] == (64, 64)  # which is analysed before any new stroke
    at.session_state["sent"] = ""  # Clear
    at.run()
    assert at.session_state["got"] is None
