"""The chosen unit on a page: the points chart whose clicks choose it, and the two sliders that
show and set it. Every page (digits, scenes, your model) draws its unit view with these; only
the app's pages import this."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from ui import inputs as ia
from viz import views
from viz.views import View


def unit_chart(fig, chart_key: str, last_click_key: str, set_unit: Callable[[tuple[int, int]], None]) -> None:
    """Draw ``fig`` (a Plotly figure with a ``units`` layer); a click on a unit calls
    ``set_unit`` before the rerun that draws it (see :func:`ui.inputs.click_handler`)."""
    st.plotly_chart(
        fig,
        key=chart_key,
        on_select=ia.click_handler(st.session_state, chart_key, last_click_key, set_unit),
        selection_mode="points",
    )


def unit_sliders(unit: ia.UnitState, chosen: tuple[int, int], out_size: tuple[int, int]) -> None:
    """Row and column sliders over a top layer of ``out_size`` units, showing ``chosen`` (their
    state is dropped while another tab is open, so it is set afresh) and choosing a unit when
    moved."""
    c1, c2 = st.columns(2)
    unit.set(chosen)
    c1.slider("Unit row", 0, out_size[0] - 1, key=unit.row_key, on_change=unit.from_sliders)
    c2.slider("Unit column", 0, out_size[1] - 1, key=unit.col_key, on_change=unit.from_sliders)


def group_choice(groups: int, key: str) -> int | None:
    """For a grouped top layer (DCNv3/DCNv4): which group to keep at the top, None for all."""
    if groups <= 1:
        return None
    choice = st.selectbox(
        "Group",
        ["all groups", *(f"group {g} at the top" for g in range(groups))],
        key=key,
        help="A grouped layer (DCNv3/DCNv4) samples G x P points per unit; one group at the top is easier to read. "
        "The layers below always follow every group.",
    )
    return None if choice == "all groups" else int(choice.split()[1])


def view_choice(key: str, url) -> View:
    """The view radio above a unit chart (every view of ``viz.views``); the choice goes into the
    page's address (``url``: its :class:`ui.session.UrlState`)."""
    name = st.radio(
        "View",
        views.VIEWS,  # read at the call: the registry is the one list of views
        horizontal=True,
        key=key,
        help="Where the layers sample, or what the unit really uses (DCNv2's views): the gradient of its response "
        "per pixel, its samples weighted by gradient x value, the smallest region that keeps its response.",
    )
    url.set("view", name)
    return views.get_view(name)
