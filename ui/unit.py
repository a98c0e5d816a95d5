"""The chosen unit on a page: the points chart whose clicks choose it, and the two sliders that
show and set it. Every page (digits, scenes, your model) draws its unit view with these; only
the app's pages import this."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from ui import inputs as ia
from ui.session import cached
from ui.touch import on_tap
from viz import views
from viz.figures import FigureSpec, split_panels
from viz.pages import Pair, frame_levels, unit_frame
from viz.render import plotly_figure, title_line_count
from viz.views import View

#: No Plotly toolbar: it covered the panels' titles (on a phone, the whole top of a chart), and
#: the pages need neither zoom nor pan (their axes hold still; viz.export writes files).
CHART_CONFIG = {"displayModeBar": False}


#: Characters a chart's title and legend lines hold, by how many charts share the row (the
#: narrowest case: a 1400 px window with the sidebar open, the charts in the page's right column).
TEXT_CHARS = {1: 64, 2: 34, 3: 22}


def figures(spec: FigureSpec, height: int | None = None) -> list:
    """Plotly figures of ``spec``, one per panel (:func:`viz.figures.split_panels`), for
    :func:`charts`, their titles and legends wrapped to fit a chart of that many in a row; build
    them once and keep them while nothing they show changes."""
    parts = split_panels(spec)
    chars = TEXT_CHARS.get(len(parts), min(TEXT_CHARS.values()))
    lines = title_line_count(spec, chars)  # the same room above each, so that the panels line up
    return [plotly_figure(part, True, height, text_chars=chars, title_lines=lines) for part in parts]


def charts(
    figs: list,
    key: str,
    set_unit: Callable[[tuple[int, int]], None] | None = None,
    last_click_key: str | None = None,
) -> None:
    """One chart per figure, side by side in columns: Streamlit stacks columns one per row on a
    narrow screen, so a phone shows each panel at full width. The first chart has ``key`` (the
    others ``key_2``, ...), so ``.st-key-<key>`` finds the deformable model's. With ``set_unit``
    every chart is clickable: a click (or a tap) on a unit calls it before the rerun that draws it
    (see :func:`ui.inputs.click_handler`)."""
    cols = st.columns(len(figs)) if len(figs) > 1 else [st.container()]
    for i, (col, fig) in enumerate(zip(cols, figs, strict=True)):
        chart_key = key if i == 0 else f"{key}_{i + 1}"
        # theme=None: the figure carries its own few styles; Streamlit's theme drew each chart twice
        options: dict = {"config": CHART_CONFIG, "theme": None}
        if set_unit is not None:
            on_tap(chart_key, set_unit)  # a tap on a touch screen too (ui.touch)
            last = f"{last_click_key or key + '_last'}_{i}"
            options |= {
                "on_select": ia.click_handler(st.session_state, chart_key, last, set_unit),
                "selection_mode": "points",
            }
        with col:
            st.plotly_chart(fig, key=chart_key, **options)


def held_frame(
    pair: Pair, view: str, levels: int | None, method: str, group: int | None = None, key: tuple = ()
) -> tuple[float, float, float, float]:
    """The page's axes for ``view`` of every unit of the pair's input (:func:`viz.pages.unit_frame`
    at the level the view draws), computed once per session for each input, level, method and
    group (``key``: what else tells the pair's captures apart, e.g. a window of a deep stack)."""
    at = frame_levels(view, levels)
    return cached("frame", (pair.key, *key, at, method, group), lambda: unit_frame(pair, at, method, group))


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
