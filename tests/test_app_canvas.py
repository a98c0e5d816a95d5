"""The canvas wrapper: the drawing survives leaving the page, and the component's arguments do
not change while it stays on the page (changing them re-draws the component, which sends its
value again and reruns the page: an endless loop)."""

from __future__ import annotations

import sys
import types

from streamlit.testing.v1 import AppTest


def _script():
    import streamlit as st

    from app_canvas import drawn_image, new_full_run

    new_full_run()
    if st.session_state.get("show", True):
        drawn_image("c", height=10, width=10)


def test_canvas_arguments_fixed_while_shown_and_restored_when_back(monkeypatch):
    passed = []

    class Result:
        _image_data_url = None

        def __init__(self, n: int) -> None:
            self.json_data = {"objects": [f"stroke {k}" for k in range(n)]}  # one more stroke per run

    def fake_canvas(initial_drawing=None, key=None, **kwargs):
        passed.append(initial_drawing)
        return Result(len(passed))

    # the component itself cannot load outside a server: a stand-in module records its arguments
    monkeypatch.setitem(sys.modules, "streamlit_drawable_canvas", types.SimpleNamespace(st_canvas=fake_canvas))
    at = AppTest.from_function(_script).run()
    at.run()
    at.run()
    assert not at.exception
    assert passed == [None, None, None]  # drawn on, but the component's argument never changed
    at.session_state["show"] = False
    at.run()  # another input: the canvas leaves the page
    at.session_state["show"] = True
    at.run()
    assert passed[-1] == {"objects": ["stroke 0", "stroke 1", "stroke 2"]}  # back: the saved drawing
    at.run()
    assert passed[-1] == passed[-2]  # and fixed again while it stays
