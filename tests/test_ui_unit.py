"""The unit picker every page draws: sliders that show the chosen unit, span the top layer and
choose a unit when moved; the chart keyed as the pages' browser tests look it up."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _script():
    import numpy as np
    import streamlit as st

    from ui import inputs as ia
    from ui.unit import charts, figures, unit_sliders
    from viz.figures import FigureSpec, Layer, Panel

    unit = ia.UnitState(st.session_state, "u")
    chosen = st.session_state.get("u", (2, 5))
    cells = Layer("units", np.array([0.0, 1.0]), np.array([0.0, 1.0]), "units", "#2ca02c", custom=[(0, 0), (1, 1)])
    spec = FigureSpec("t", "two panels", "", [Panel("left", None, [cells]), Panel("right", None, [cells])], ncols=2)
    charts(figures(spec), "pick_chart", unit.set, "pick_last")
    unit_sliders(unit, chosen, (6, 9))
    st.caption(f"unit {st.session_state['u']}")


def test_sliders_show_the_unit_span_the_layer_and_choose_a_unit():
    at = AppTest.from_function(_script).run()
    assert not at.exception
    row, col = at.slider(key="u_row"), at.slider(key="u_col")
    assert (row.value, col.value) == (2, 5)
    assert (row.min, row.max, col.min, col.max) == (0, 5, 0, 8)
    assert at.caption[0].value == "unit (2, 5)"
    at.slider(key="u_col").set_value(7).run()
    assert at.session_state["u"] == (2, 7) and at.caption[0].value == "unit (2, 7)"
    at.slider(key="u_row").set_value(4).run()
    assert at.session_state["u"] == (4, 7) and (at.slider(key="u_row").value, at.slider(key="u_col").value) == (4, 7)


def test_a_figure_of_two_panels_is_two_clickable_charts_without_a_toolbar():
    import json

    at = AppTest.from_function(_script).run()
    assert not at.exception, [e.message for e in at.exception]
    shown = at.get("plotly_chart")
    assert len(shown) == 2  # one chart a panel: narrow screens stack them
    assert [json.loads(c.proto.spec)["layout"]["annotations"][0]["text"] for c in shown] == ["left", "right"]
    assert all(json.loads(c.proto.config)["displayModeBar"] is False for c in shown)
    assert all(c.proto.selection_mode for c in shown)  # both answer clicks
