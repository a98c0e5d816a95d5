"""The app's "Single digit" page: the 28x28 MNIST classifiers, a deformable model beside its
regular twin. What it shows is computed by ``viz.pages``; this module only lays it out.

URL: ``/digits?model=deform_rts&sample=1&unit=7,7&method=bilinear&view=sampling+points``.
"""

from __future__ import annotations

import time

import streamlit as st
import torch

import viz
from ui import inputs as ia
from ui.canvas import drawn_image
from ui.session import (
    Field,
    UrlState,
    cached,
    digit_samples,
    int_in,
    load_model,
    one_of,
    own_checkpoints,
    page_columns,
    parse_unit,
    points_settings,
    shipped_pairs,
    show_unit,
)
from ui.unit import charts, figures, held_frame, unit_sliders, view_choice
from viz.pages import Pair, analyse, digit_tab, input_key, unit_view
from viz.stats import centre_unit
from viz.views import VIEWS, get_view

CANVAS_KEY = "canvas"
SOURCES = ("Sample digit", "Draw", "Upload")
UNIT = ia.UnitState(st.session_state, "unit")  # the selected top-layer unit and its sliders


def url_state(pairs: dict[str, tuple[str, str]]) -> UrlState:
    return UrlState(
        "digits",
        [
            Field("model", "digit_model", one_of(list(pairs))),
            Field("sample", "sample_index", int_in(0, len(digit_samples()) - 1)),
            Field("unit", "unit", parse_unit, show_unit),
            Field("levels", "levels", int_in(1, 3)),
            Field("method", "method", one_of(viz.METHODS)),
            Field("view", "digit_view", one_of(VIEWS)),
        ],
    )


def read_canvas():
    """The drawing canvas (kept across input switches); returns an image or None. Failure to
    load the component is reported."""
    try:
        return drawn_image(CANVAS_KEY, side=280, stroke_width=22)
    except Exception as exc:  # the component could not be registered
        st.warning(f"The drawing canvas is unavailable here ({exc}). Upload an image or pick a sample instead.")
        return None


def digit_input():
    """The input column's choice: a bundled test digit, a drawing or an upload; a ``(1, 28, 28)``
    image or None."""
    source = st.radio("Input", SOURCES, horizontal=True, key="source")
    if source == "Sample digit":
        s = digit_samples()
        st.session_state.setdefault("sample_index", 1)
        idx = int(st.number_input("Bundled test digit (0-99)", 0, len(s) - 1, key="sample_index"))
        st.caption(f"MNIST test #{int(s.test_indices[idx])}, label {int(s.labels[idx])}")
        return s.images[idx]
    if source == "Draw":
        st.caption("Draw a digit (white on black). The Clear button under the canvas starts again.")
        raw = read_canvas()
        image = None
        try:
            image = ia.prepare(raw) if raw is not None else None
        except ia.InputError as exc:
            if "empty" not in str(exc):  # a cleared canvas is black, not an error
                st.warning(str(exc))
        if image is None:
            st.info("The canvas is empty: draw a digit.")
        return image
    up = st.file_uploader("Image of a digit", type=list(ia.UPLOAD_TYPES), key="upload")
    if up is None:
        st.info("Upload a PNG, JPEG, BMP, GIF or WebP image of one digit.")
        return None
    try:
        img, notes = ia.decode_image(up.getvalue(), up.name)
        st.image(ia.preview(img), caption="uploaded")
        try:
            return ia.prepare(img, notes)  # adds what it did (inverted, paper cleaned)
        finally:
            for n in notes:
                st.caption(n)
    except ia.InputError as exc:
        st.error(str(exc))
        return None


def memo(pair: Pair, name: str, params: tuple, build):
    """Rebuild a figure only when its digit or its own settings changed (e.g. clicking a unit
    leaves the density, offset and dilation views untouched)."""
    return cached("figure", (pair.key, name, params), build)


@st.fragment
def unit_views(pair: Pair, deform_model, regular_model, levels: int, method: str, url: UrlState) -> None:
    """Everything that depends on the chosen unit. A fragment: a click, a slider or a tab switch
    reruns only this, not the input column, the prediction or the sidebar."""
    t0 = time.perf_counter()
    unit = st.session_state.get("unit", centre_unit(pair.deform))
    url.set("unit", unit)
    ia.keep_widget_state(st.session_state, ("digit_view", "density_units"))  # choices in closed tabs
    # Lazy tabs: only the open tab's content runs and is sent, so a click redraws one chart,
    # not five (switching tabs reruns the page).
    tab_points, tab_levels, tab_offsets, tab_density, tab_dilation = st.tabs(
        ["Sampling points", "Level by level", "Offset field", "Sampling density", "Effective dilation"],
        key="digit_tabs",
        on_change="rerun",
    )
    with tab_points:
        if tab_points.open:
            view = view_choice("digit_view", url).name

            frame = held_frame(pair, view, levels, method)

            def points_figures():
                shown = unit_view(
                    pair, (deform_model, regular_model), ("deformable", "regular twin"), unit, view, method, levels,
                    frame=frame,
                )  # fmt: skip
                return figures(shown.spec, height=520), shown.found

            figs, found = memo(pair, "points", (unit, levels, method, view), points_figures)
            charts(figs, "points_chart", UNIT.set, "last_click")
            unit_sliders(UNIT, unit, pair.deform.top.out_size)
            st.caption(
                f"Unit {unit}: {found}. First the deformable model, then its regular twin; click or tap a unit to move it."
            )
            if pair.deform.top.modulated and get_view(view).draws_points:  # said where points are drawn
                st.caption(
                    "DCNv2: a point's opacity is its modulation weight (the product of the masks along its path)."
                )

    def tab_chart(tab: str, params: tuple, height: int, key: str, units: str = "all") -> None:
        build = lambda: figures(digit_tab(pair, tab, unit, method, units), height=height)  # noqa: E731
        charts(memo(pair, tab, params, build), key)

    with tab_levels:
        if tab_levels.open:
            st.caption(
                "The recursion: the top layer's 9 samples, then 9 for each of those, and so on. Grey lines join each sample to its parent."
            )
            tab_chart("levels", (unit, method), 420, "levels_chart")
    with tab_offsets:
        if tab_offsets.open:
            st.caption("Per layer, the learned offset averaged over the 9 taps at each unit, in input pixels.")
            tab_chart("offsets", (), 440, "offsets")
    with tab_density:
        if tab_density.open:
            units = st.radio(
                "Units",
                ["all", "digit"],
                horizontal=True,
                key="density_units",
                help="all: every top-layer unit's samples; digit: only units whose centre lies on ink",
            )
            st.caption("How often each pixel is sampled by the chosen units' back-projected points.")
            tab_chart("density", (units, method), 380, "density", units)
    with tab_dilation:
        if tab_dilation.open:
            caps = {"deformable": pair.deform, "regular twin": pair.regular}
            stats = memo(pair, "dilation_stats", (), lambda: {n: viz.dilation_summary(c) for n, c in caps.items()})
            c1, c2 = st.columns(2)
            c1.metric("Deformable, on the digit", f"{stats['deformable']['digit']:.2f} px")
            c2.metric("Deformable, on the background", f"{stats['deformable']['background']:.2f} px")
            st.caption(
                f"Regular twin: {stats['regular twin']['all']:.2f} px everywhere. Effective dilation = mean distance between adjacent taps' samples (Dai et al. 2017)."
            )
            tab_chart("dilation", (), 380, "dilation")
    st.caption(
        f"Server time for these views: {1e3 * (time.perf_counter() - t0):.0f} ms "
        f"(capture of both models {1e3 * pair.seconds:.0f} ms when the digit changed)."
    )


def page() -> None:
    pairs = shipped_pairs(None) | own_checkpoints()["digits"]
    url = url_state(pairs)
    restored = url.restore()
    levels, method = points_settings(3, "levels")
    with st.sidebar:
        st.header("Model")
        st.session_state.setdefault("digit_model", next(iter(pairs)))
        ckpt = st.selectbox("Checkpoint", list(pairs), format_func=lambda k: f"{k}: {pairs[k][0]}", key="digit_model")
    try:
        deform_model = load_model(ckpt)
        regular_model = load_model(pairs[ckpt][1])
    except viz.CheckpointError as exc:
        st.error(f"Could not load the model: {exc}")
        return

    left, right = page_columns()
    with left:
        image = digit_input()
    if image is None:
        with right:
            st.info("Choose a sample digit, draw one, or upload an image to see where the layers look.")
        url.publish(leave_out=("sample", "unit"))
        return

    previous: Pair | None = st.session_state.get("digit_pair")
    pair = cached("pair", input_key(image, ckpt), lambda: analyse(deform_model, regular_model, image, ckpt))
    if previous is None or previous.key != pair.key:
        # a new picture starts at its centre unit (or the link's); another checkpoint on the same picture keeps it
        if "unit" in restored:
            UNIT.set(restored["unit"])
        elif previous is None or not torch.equal(previous.image, pair.image) or "unit" not in st.session_state:
            UNIT.set(centre_unit(pair.deform))
        st.session_state["digit_pair"] = pair
    if (unit := st.session_state["unit"]) != ia.within(unit, pair.deform.top.out_size):
        UNIT.set(ia.within(unit, pair.deform.top.out_size))

    with left:
        st.image(image[0].numpy(), caption="model input (28x28, MNIST format)", width=140, clamp=True)
        p_d, p_r = pair.deform.probabilities[0], pair.regular.probabilities[0]
        c1, c2 = st.columns(2)
        c1.metric("Deformable predicts", int(p_d.argmax()))
        c1.caption(f"with probability {float(p_d.max()):.1%}")
        c2.metric("Regular twin predicts", int(p_r.argmax()))
        c2.caption(f"with probability {float(p_r.max()):.1%}")
        build = lambda: figures(digit_tab(pair, "probabilities", (0, 0)), height=260)  # noqa: E731
        charts(memo(pair, "probs", (), build), "probs")
    url.publish(leave_out=() if st.session_state.get("source", SOURCES[0]) == SOURCES[0] else ("sample",))
    with right:
        unit_views(pair, deform_model, regular_model, levels, method, url)


if __name__ == "__main__":  # run by st.navigation (app.py) as this page's script
    page()
