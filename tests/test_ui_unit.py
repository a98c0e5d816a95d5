"""The unit picker every page draws: sliders that show the chosen unit, span the top layer and
choose a unit when moved; the chart keyed as the pages' browser tests look it up."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _script():
    import plotly.graph_objects as go
    import streamlit as st

    from ui import inputs as ia
    from ui.unit import unit_chart, unit_sliders

    unit = ia.UnitState(st.session_state, "u")
    chosen = st.session_state.get("u", (2, 5))
    unit_chart(go.Figure(go.Scatter(x=[0, 1], y=[0, 1])), "pick_chart", "pick_last", unit.set)
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
