"""The app's "Your model" mode: a user's own model, named on the command line
(``streamlit run app.py -- --model package.module:factory --weights file.pt``), its deformable
layers found by ``models.discovery``.

Only ``app.py`` imports this module. Beside the model's points the same layers are shown with
their offsets set to zero (``Capture.without_offsets``): where convolutions of that geometry
would sample without deformation. Every chart is a ``viz.figures`` spec.
"""

from __future__ import annotations

import time

import streamlit as st
import torch

import app_inputs as ia
import viz
from app_unit import group_choice, unit_chart, unit_sliders
from models.discovery import DiscoveredModel
from viz.classes import names_mismatch, top_k, top_k_text
from viz.figures import (
    count_note,
    family_note,
    image_array,
    levels_figure,
    offset_field_figure,
)
from viz.render import plotly_figure
from viz.samples import PHOTOS, load_samples, sample_photo
from viz.views import VIEWS, get_view

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
            s = load_samples()
            idx = int(st.number_input("Bundled test digit (0-99)", 0, len(s) - 1, 1, key="user_sample"))
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


def page(model: DiscoveredModel, levels: int, method: str) -> None:
    st.caption(f"Your model: {getattr(model, 'source', type(model.model).__name__)}")
    with st.expander("Deformable layers found", expanded=False):
        st.code(model.report(), language=None)
    stacked = len(model.sampling_layers())
    if levels > stacked:  # the sidebar's slider is made before the model is known
        st.caption(f"Your model has {stacked} stacked deformable layer(s): showing {stacked} level(s), not {levels}.")
        levels = stacked
    left, right = st.columns([1, 2])
    with left:
        got = _input(model)
    if got is None:
        st.stop()
    image, source = got
    t0 = time.perf_counter()
    key = ia.image_key(image, "user")
    cached = st.session_state.get("user_analysis")
    if cached is None or cached[0] != key:
        cap = viz.capture(model, image)
        cached = (key, cap, cap.without_offsets())
        st.session_state["user_analysis"] = cached  # one per session: memory stays bounded
        UNIT.set((cap.top.out_size[0] // 2, cap.top.out_size[1] // 2))
    _, full_cap, full_flat = cached
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
            st.metric("Your model predicts", best[0][1])
            st.caption(f"Top 5: {top_k_text(best)}" if len(best) > 1 else f"with probability {best[0][2]:.1%}")
    ho, wo = cap.top.out_size
    unit = st.session_state["user_unit"]
    if unit[0] >= ho or unit[1] >= wo:
        unit = (min(unit[0], ho - 1), min(unit[1], wo - 1))
        UNIT.set(unit)
    with right:
        ia.keep_widget_state(st.session_state, ("user_view",))  # kept while another tab is open
        # lazy tabs: only the open one runs and is sent
        tab_points, tab_levels, tab_offsets = st.tabs(
            ["Sampling points", "Level by level", "Offset field"], key="user_tabs", on_change="rerun"
        )
        with tab_points:
            if tab_points.open:
                view = st.radio(
                    "View",
                    VIEWS,
                    horizontal=True,
                    key="user_view",
                    help="Where the layers sample, or what the unit really uses (DCNv2's views).",
                )
                shown = get_view(view)
                if window < stacked - 1 and not shown.draws_points:
                    st.info(f"The {view} is the model's top unit's: choose the top layer to see it.")
                    st.stop()
                group = group_choice(cap.top.groups, "user_group") if shown.draws_points else None
                store = st.session_state.setdefault("user_views", {})
                vkey = (key, unit, view, method, levels, group, window)
                if vkey not in store:
                    store.clear()  # one at a time per session: memory stays bounded
                    # the points view also shows the same layers with offsets zero (no model needed there)
                    pairs = [(model, cap, NAMES[0])] + ([(None, flat, NAMES[1])] if shown.draws_points else [])
                    store[vkey] = [
                        {**shown.compute(m, c, unit, method, levels, group), "title": n} for m, c, n in pairs
                    ]
                entries = store[vkey]
                fig = plotly_figure(shown.figure(entries, unit, overlay=False), interactive=True, height=520)
                unit_chart(fig, "user_points_chart", "user_last_click", UNIT.set)
                unit_sliders(UNIT, unit, (ho, wo))
                said = (
                    f"{count_note(entries[0]['pts'])}. Left your model, right the same layers with offsets zero"
                    if shown.draws_points
                    else shown.plain(entries[0]).rstrip(".")
                )
                st.caption(
                    f"Unit {unit}: {said}. "
                    + ("" if cap.top.family == "torchvision" else f"{family_note(cap)} ")
                    + "Click a unit to move it."
                )
        with tab_levels:
            if tab_levels.open:
                st.plotly_chart(
                    plotly_figure(levels_figure(cap, unit, method), interactive=True, height=420), key="user_levels"
                )
        with tab_offsets:
            if tab_offsets.open:
                st.plotly_chart(
                    plotly_figure(offset_field_figure(cap), interactive=True, height=440), key="user_offsets"
                )
    st.caption(f"Server time for this update: {1e3 * (time.perf_counter() - t0):.0f} ms.")
