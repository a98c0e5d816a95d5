"""The app's "Your model" page: a user's own model, named on the command line
(``streamlit run app.py -- --model package.module:factory --weights file.pt``), its deformable
layers found by ``models.discovery``.

Beside the model's points the same layers are shown with their offsets set to zero
(``Capture.without_offsets``): where convolutions of that geometry would sample without
deformation. What it shows is computed by ``viz.pages``; this module only lays it out.

URL: ``/your-model?photo=chelsea&unit=3,3&method=bilinear&view=sampling+points``.
"""

from __future__ import annotations

import time

import streamlit as st
import torch

import viz
from models.discovery import DiscoveredModel, DiscoveryError
from ui import inputs as ia
from ui.session import (
    Field,
    UrlState,
    cached,
    digit_samples,
    int_in,
    one_of,
    page_columns,
    parse_unit,
    points_settings,
    show_unit,
    user_model,
)
from ui.unit import charts, figures, group_choice, held_frame, unit_sliders, view_choice
from viz.classes import names_mismatch, top_k, top_k_text
from viz.figures import (
    family_note,
    image_array,
    levels_figure,
    offset_field_figure,
)
from viz.pages import Pair, analyse, input_key, unit_view
from viz.samples import PHOTOS, sample_photo
from viz.views import VIEWS

NAMES = ("your model", "same layers, offsets zero")


def _input(model: DiscoveredModel) -> tuple[torch.Tensor, str] | None:
    # inputs that fit the model: MNIST digits for grey models, natural photos for colour ones
    sample = "Sample photo" if model.in_channels == 3 else "Sample digit"
    source = st.radio("Input", [sample, "Upload"], horizontal=True, key="user_source")
    try:
        if source == "Sample photo":
            name = st.selectbox("Bundled photo", list(PHOTOS), format_func=PHOTOS.get, key="user_photo")
            return viz.prepare_for(model, sample_photo(name)), f"bundled photo: {PHOTOS[name]}"
        if source == "Sample digit":
            s = digit_samples()
            st.session_state.setdefault("user_sample", 1)
            idx = int(st.number_input("Bundled test digit (0-99)", 0, len(s) - 1, key="user_sample"))
            return viz.prepare_for(
                model, s.images[idx, 0].numpy()
            ), f"MNIST test #{int(s.test_indices[idx])}, label {int(s.labels[idx])}"
        up = st.file_uploader("An image", type=list(ia.UPLOAD_TYPES), key="user_upload")
        if up is None:
            st.info("Upload a PNG, JPEG, BMP, GIF or WebP image.")
            return None
        img, notes = ia.decode_image(up.getvalue(), up.name)
        st.image(ia.preview(img), caption="uploaded")
        try:
            return viz.prepare_for(model, img, notes=notes), up.name  # adds what it did to the picture
        finally:
            for n in notes:
                st.caption(n)
    except (ia.InputError, viz.PreprocessError) as exc:
        st.error(str(exc))
        return None


UNIT = ia.UnitState(st.session_state, "user_unit")  # the chosen top-layer unit and its sliders


def url_state() -> UrlState:
    return UrlState(
        "user",
        [
            Field("photo", "user_photo", one_of(list(PHOTOS))),
            Field("sample", "user_sample", int_in(0, len(digit_samples()) - 1)),
            Field("unit", "user_unit", parse_unit, show_unit),
            Field("method", "method", one_of(viz.METHODS)),
            Field("view", "user_view", one_of(VIEWS)),
        ],
    )


def page() -> None:
    url = url_state()
    restored = url.restore()
    try:
        model = user_model()
    except (DiscoveryError, viz.CheckpointError) as exc:
        points_settings(3, "user_levels")
        st.error(f"Could not use your model: {exc}")
        return
    stacked = len(model.sampling_layers())
    levels, method = points_settings(stacked, "user_levels")
    st.caption(f"Your model: {getattr(model, 'source', type(model.model).__name__)}")
    with st.expander("Deformable layers found", expanded=False):
        st.code(model.report(), language=None)
    left, right = page_columns()
    with left:
        got = _input(model)
    if got is None:
        url.publish(leave_out=("photo", "sample", "unit"))
        return
    image, source = got
    t0 = time.perf_counter()
    previous = st.session_state.get("user_pair_key")
    pair = cached("pair", input_key(image, "user"), lambda: analyse(model, None, image, "user"))
    if previous != pair.key:
        st.session_state["user_pair_key"] = pair.key
        UNIT.set(restored.get("user_unit") or (pair.deform.top.out_size[0] // 2, pair.deform.top.out_size[1] // 2))
    full_cap, full_flat = pair.deform, pair.regular
    cap, flat, window = full_cap, full_flat, stacked - 1
    if stacked > viz.deepest_level(full_cap):
        # A deep stack is drawn a window at a time: the unit sits on the chosen layer's output and
        # the levels go down from there.
        names = [f.name for f in model.found]
        with left:
            window = st.selectbox(
                "Back-project from layer",
                list(range(stacked - 1, -1, -1)),
                format_func=lambda i: f"{i + 1} of {stacked}: {names[i]}" + (" (top)" if i == stacked - 1 else ""),
                key="user_window_top",
                help="Your model has more stacked layers than can be drawn at once: choose where the unit is.",
            )
        if window < stacked - 1:
            cap, flat = full_cap.up_to(window), full_flat.up_to(window)
    shown_pair = Pair(pair.key, pair.image, cap, flat, pair.seconds)
    deepest = viz.deepest_level(cap)
    more = viz.path_count(cap, deepest + 1) if levels > deepest and deepest < len(cap.layers) else None
    levels = min(levels, deepest)  # a deep model: more levels would be too many points to draw or compute
    if more or window < stacked - 1:
        st.caption(
            f"Showing layers {window + 1} down to {window + 2 - levels} of your model's {stacked} stacked layers "
            "(1 = bottom)"
            + (
                f": one more would give {more:,} points per unit (at most {viz.POINT_BUDGET:,} are drawn)."
                if more
                else "."
            )
        )
    with left:
        # what the model receives, before its normalisation: in colour for a colour model
        st.image(image_array(image), caption=f"model input ({source})", width=140, clamp=True)
        if cap.logits.dim() == 2:
            best = top_k(cap.probabilities[0], model.class_names, 5)
            if mismatch := names_mismatch(model.class_names, cap.logits.shape[1]):
                st.caption(mismatch)
            # a heading, not st.metric: a class name as long as "Greater Swiss Mountain dog" wraps
            # instead of being cut to "Greater Swiss Mo..."
            st.caption("Your model predicts")
            st.markdown(f"#### {best[0][1]}")
            st.caption(f"Top 5: {top_k_text(best)}" if len(best) > 1 else f"with probability {best[0][2]:.1%}")
    ho, wo = cap.top.out_size
    if (unit := st.session_state["user_unit"]) != ia.within(unit, (ho, wo)):
        unit = ia.within(unit, (ho, wo))
        UNIT.set(unit)
    sample = {"Sample photo": ("sample",), "Sample digit": ("photo",)}.get(st.session_state.get("user_source", ""))
    url.publish(leave_out=sample if sample else ("photo", "sample"))
    with right:
        ia.keep_widget_state(st.session_state, ("user_view",))  # kept while another tab is open
        # lazy tabs: only the open one runs and is sent
        tab_points, tab_levels, tab_offsets = st.tabs(
            ["Sampling points", "Level by level", "Offset field"], key="user_tabs", on_change="rerun"
        )
        with tab_points:
            if tab_points.open:
                chosen = view_choice("user_view", url)
                view = chosen.name
                if window < stacked - 1 and not chosen.draws_points:
                    st.info(f"The {view} is the model's top unit's: choose the top layer to see it.")
                    return
                group = group_choice(cap.top.groups, "user_group") if chosen.draws_points else None
                frame = held_frame(shown_pair, view, levels, method, group, key=(window,))
                shown = cached(
                    "view",
                    (pair.key, unit, view, method, levels, group, window),
                    # the points view also shows the same layers with offsets zero (no model needed there)
                    lambda: unit_view(
                        shown_pair, (model, None), NAMES, unit, view, method, levels, group, False, frame
                    ),
                )
                charts(figures(shown.spec, height=520), "user_points_chart", UNIT.set, "user_last_click")
                unit_sliders(UNIT, unit, (ho, wo))
                said = (
                    f"{shown.found}. First your model, then the same layers with offsets zero"
                    if shown.draws_points
                    else shown.found
                )
                st.caption(
                    f"Unit {unit}: {said}. "
                    + ("" if cap.top.family == "torchvision" else f"{family_note(cap)} ")
                    + "Click or tap a unit to move it."
                )
        with tab_levels:
            if tab_levels.open:
                charts(figures(levels_figure(cap, unit, method), height=420), "user_levels_chart")
        with tab_offsets:
            if tab_offsets.open:
                charts(figures(offset_field_figure(cap), height=440), "user_offsets")
    st.caption(f"Server time for this update: {1e3 * (time.perf_counter() - t0):.0f} ms.")


if __name__ == "__main__":  # run by st.navigation (app.py) as this page's script
    page()
