"""The app's "Scenes" page (the default): dense models on 64x64 canvases with digits of many
sizes, where the paper's adaptation shows. What it shows is computed by ``viz.pages``; this
module only lays it out.

URL: ``/?model=scene_deform&scene=10&digit=0&scale=1.0&unit=6,10&method=bilinear&view=sampling+points``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import streamlit as st
from torch import Tensor, nn

import viz
from models.catalog import TWINS
from models.data.scenes import rescale_digit
from ui import inputs as ia
from ui.canvas import drawn_image
from ui.session import (
    Field,
    UrlState,
    cached,
    float_in,
    int_in,
    load_model,
    one_of,
    own_checkpoints,
    page_columns,
    parse_unit,
    points_settings,
    scene_samples,
    shipped_pairs,
    show_unit,
)
from ui.unit import charts, figures, group_choice, held_frame, view_choice
from viz.pages import (
    Pair,
    analyse,
    input_key,
    roi_view,
    scene_glance,
    scene_picks,
    scene_reads,
    scene_unit_words,
    unit_view,
)
from viz.preprocess import SCENE_SIZE, preprocess_scene
from viz.scene_stats import ink_boxes, overlapping_boxes
from viz.views import VIEWS

CANVAS_SIDE = 256  # the drawing canvas: 4 screen pixels per scene pixel
SOURCES = ("Test scene", "Draw", "Upload")
ROI_KEYS = ("roi_digit", "roi_shift_x", "roi_shift_y", "roi_scale")


def url_state(models: list[str]) -> UrlState:
    n = len(scene_samples())
    return UrlState(
        "scenes",
        [
            Field("model", "scene_model", one_of(models)),
            Field("scene", "scene_index", int_in(0, n - 1)),
            Field("digit", "scene_digit", int_in(0, 3)),
            Field("scale", "scene_factor", float_in(0.4, 2.0), lambda v: f"{v:g}"),
            Field("unit", "scene_unit", parse_unit, show_unit),
            Field("levels", "levels", int_in(1, 3)),
            Field("method", "method", one_of(viz.METHODS)),
            Field("view", "scene_view", one_of(VIEWS)),
        ],
    )


@dataclass
class SceneInput:
    """A 64x64 scene and its digits' boxes (annotated, or found from the ink)."""

    image: Tensor  # (1, S, S)
    boxes: Tensor  # (D, 4) x0, y0, x1, y1
    labels: list[int | None]  # true labels where known
    source: str  # what the user sees as the input's name
    base: str  # the input before any rescaling: a new base resets the chosen unit

    @property
    def heights(self) -> Tensor:
        """``(D,)`` the digits' heights in pixels."""
        return self.boxes[:, 3] - self.boxes[:, 1]


def _bundled_input() -> SceneInput | None:
    scenes = scene_samples()
    st.session_state.setdefault("scene_index", 10)
    idx = int(st.number_input(f"Test scene (0-{len(scenes) - 1})", 0, len(scenes) - 1, key="scene_index"))
    digits = scenes.digits_of(idx)
    image, boxes = scenes.images[idx], scenes.boxes[digits].clone()
    labels = [int(v) for v in scenes.labels[digits]]
    heights = scenes.heights[digits]
    described = [f"{lab} ({int(h)} px)" for lab, h in zip(labels, heights.tolist(), strict=True)]
    st.caption("Digits: " + ", ".join(described) + ". Box height: small < 20 px <= medium < 34 px <= large.")
    if st.session_state.get("scene_digit", 0) >= len(labels):  # a link's digit this scene lacks
        st.session_state["scene_digit"] = 0
    pick = st.selectbox(
        "Rescale one digit",
        list(range(len(labels))),
        format_func=lambda k: f"digit {k + 1}: a {labels[k]}, {int(heights[k])} px",
        key="scene_digit",
    )
    st.session_state.setdefault("scene_factor", 1.0)
    factor = st.slider(
        "Its scale", 0.4, 2.0, step=0.1, key="scene_factor", help="Redraw the digit smaller or larger about its centre"
    )
    if factor != 1.0:
        new, box = rescale_digit(image[0], scenes.instances[idx], int(pick), float(factor))
        image = new.unsqueeze(0)
        boxes[int(pick)] = box
        if touching := overlapping_boxes(boxes, int(pick)):
            st.warning(
                f"At {factor:g}x digit {int(pick) + 1} now overlaps digit "
                + " and ".join(str(k + 1) for k in touching)
                + ": their ink mixes, so the models (and the table) may read them as one."
            )
    name = f"test scene {idx}" + (f", digit {pick + 1} x{factor:g}" if factor != 1 else "")
    return SceneInput(image, boxes, labels, name, f"test scene {idx}")


def _drawn_input() -> SceneInput | None:
    st.caption("Draw several digits of different sizes (white on black).")
    width = st.slider("Pen width", 4, 20, 9, key="scene_pen")
    try:
        raw = drawn_image("scene_canvas", side=CANVAS_SIDE, stroke_width=width)
    except Exception as exc:  # the component could not be registered
        st.warning(f"The drawing canvas is unavailable here ({exc}). Pick a test scene or upload an image.")
        return None
    if raw is None:
        st.info("The canvas is empty: draw a few digits, some small and some large.")
        return None
    try:
        image = preprocess_scene(raw, SCENE_SIZE)
    except ValueError as exc:
        st.warning(str(exc))
        return None
    boxes = ink_boxes(image)
    return SceneInput(image, boxes, [None] * len(boxes), "your drawing", "drawing")


def _uploaded_input() -> SceneInput | None:
    up = st.file_uploader("Image with several digits", type=list(ia.UPLOAD_TYPES), key="scene_upload")
    if up is None:
        st.info("Upload a PNG, JPEG, BMP, GIF or WebP picture of a few digits.")
        return None
    try:
        img, notes = ia.decode_image(up.getvalue(), up.name)
        try:
            image = preprocess_scene(img, SCENE_SIZE, notes)  # adds what it did (inverted, paper cleaned)
        finally:
            for n in notes:
                st.caption(n)
    except (ia.InputError, ValueError) as exc:
        st.error(str(exc))
        return None
    boxes = ink_boxes(image)
    return SceneInput(image, boxes, [None] * len(boxes), up.name, f"upload {up.file_id}")


def _set_unit(unit: tuple[int, int]) -> None:
    st.session_state["scene_unit"] = unit


def roi_section(inp: SceneInput) -> None:
    """Deformable RoI pooling on this scene: pick a digit's box, move or resize it, and see the
    bins move and both poolings' predictions."""
    st.subheader("Deformable RoI pooling: where the bins move")
    if not len(inp.boxes):
        st.caption("No digit boxes in this picture.")
        return
    try:
        deform, plain = load_model("roi_deform"), load_model(TWINS["roi_deform"][0])
    except viz.CheckpointError as exc:
        st.warning(f"The RoI models could not be loaded: {exc}")
        return
    heights = inp.heights

    def named(i: int) -> str:  # the words of the main digit selector
        label = inp.labels[i]
        return f"digit {i + 1}: " + (f"a {label}, " if label is not None else "") + f"{int(heights[i])} px"

    # Defaults go into the session state, not into the widgets: the closed tab keeps the choices by
    # assigning the state, and a widget given a value as well logs a warning. The largest digit
    # first (the smallest is the hardest to see); a new picture with fewer digits starts over.
    if st.session_state.get("roi_digit") not in range(len(inp.boxes)):
        st.session_state["roi_digit"] = int(heights.argmax())
    for key, default in (("roi_shift_x", 0.0), ("roi_shift_y", 0.0), ("roi_scale", 1.0)):
        st.session_state.setdefault(key, default)
    # the digit on a row of its own: in a quarter of the row its name ("digit 1: a 3, 14 px") was cut
    k = st.selectbox("Box of digit", range(len(inp.boxes)), format_func=named, key="roi_digit")
    c2, c3, c4 = st.columns(3)
    shift = (
        c2.slider("Move right (x its width)", -0.5, 0.5, step=0.05, key="roi_shift_x"),
        c3.slider("Move down (x its height)", -0.5, 0.5, step=0.05, key="roi_shift_y"),
    )
    scale = c4.slider("Scale", 0.5, 1.5, step=0.05, key="roi_scale")
    x0, y0, x1, y1 = inp.boxes[int(k)].tolist()
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2 + shift[0] * w, (y0 + y1) / 2 + shift[1] * h
    box = (cx - scale * w / 2, cy - scale * h / 2, cx + scale * w / 2, cy + scale * h / 2)
    spec, words = roi_view(deform, plain, inp.image, box, int(k), inp.labels[int(k)])
    charts(figures(spec, height=360), "roi_chart")
    st.caption(words)


@st.fragment
def unit_panel(
    pair: Pair,
    models: tuple[nn.Module, nn.Module],
    names: tuple[str, str],
    inp: SceneInput,
    levels: int,
    method: str,
    overlay: bool,
    url: UrlState,
) -> None:
    """The chosen unit's view and caption. A fragment: a click or a view switch reruns only this,
    not the input column, the overview or the RoI section."""
    name, twin = names
    unit = ia.within(st.session_state["scene_unit"], pair.deform.top.out_size)
    url.set("unit", unit)
    chosen = view_choice("scene_view", url)
    view = chosen.name
    group = group_choice(pair.deform.top.groups, "scene_group") if chosen.draws_points else None
    frame = held_frame(pair, view, levels, method, group)
    shown = cached(
        "view",
        (pair.key, unit, view, method, levels, group, overlay),
        lambda: unit_view(pair, models, (name, f"{twin} (twin)"), unit, view, method, levels, group, overlay, frame),
    )
    charts(figures(shown.spec, height=520), "scene_chart", _set_unit, "scene_last_click")
    st.caption(scene_unit_words(pair, shown, inp.boxes, unit, method, levels, group, overlay))


def page() -> None:
    """The scene page: the model and overlay in the sidebar, the input on the left, the unit view,
    the glance triplet and the RoI tab on the right."""
    own = own_checkpoints()["scenes"]
    choices = shipped_pairs("scene_") | own
    url = url_state(list(choices))
    restored = url.restore()
    levels, method = points_settings(3, "levels")
    with st.sidebar:
        st.session_state.setdefault("scene_model", next(iter(choices)))
        name = st.selectbox(
            "Scene model", list(choices), format_func=lambda k: f"{k}: {choices[k][0]}", key="scene_model"
        )
        overlay = st.toggle("Segmentation overlay", value=True, key="scene_overlay")
    twin = choices[name][1]
    try:
        deform, regular = load_model(name), load_model(twin)
    except viz.CheckpointError as exc:
        st.error(f"Could not load the scene models: {exc}")
        return
    left, right = page_columns()
    with left:
        source = st.radio("Input", SOURCES, horizontal=True, key="scene_source")
        inp = {"Test scene": _bundled_input, "Draw": _drawn_input, "Upload": _uploaded_input}[source]()
    if inp is None:
        refused = source == "Upload" and st.session_state.get("scene_upload") is not None  # its error is shown
        if not refused:
            with right:
                st.info("Pick a test scene, draw a few digits or upload a picture to see where the layers look.")
        url.publish(leave_out=("scene", "digit", "scale", "unit"))
        return
    t0 = time.perf_counter()
    key = input_key(inp.image, name, twin)
    pair = cached("pair", key, lambda: analyse(deform, regular, inp.image, name, twin))
    picks = scene_picks(pair, inp.boxes)
    if st.session_state.get("scene_base") != inp.base or "scene_unit" not in st.session_state:
        # a new picture: start on its largest digit (or the link's unit); rescaling or drawing on keeps the unit
        st.session_state["scene_base"] = inp.base
        _set_unit(restored.get("scene_unit") or picks["large"] or picks["small"] or picks["background"] or (8, 8))
    bundled = source == SOURCES[0]
    url.publish(leave_out=() if bundled else ("scene", "digit", "scale"))

    with right:  # the main view first: what a stroke or a click is for reaches the page soonest
        unit_panel(pair, (deform, regular), (name, twin), inp, levels, method, overlay, url)
    with left:
        st.image(inp.image[0].numpy(), caption=f"model input ({SCENE_SIZE}x{SCENE_SIZE})", width=256, clamp=True)
        st.caption(f"Input: {inp.source}.")
        rows = scene_reads(pair, inp.boxes, inp.labels)
        if rows:
            # short headers and columns sized in pixels: the 1400 px layout cut the last column off
            column = st.column_config.TextColumn
            st.dataframe(
                rows,
                hide_index=True,
                key="scene_reads",
                column_config={
                    "digit": st.column_config.NumberColumn("#", width=34),
                    "size": column("size", width=104),
                    "true": column("true", width=44),
                    "deformable reads": column("deform.", help="what the deformable model reads", width=62),
                    "regular reads": column("regular", help="what the regular twin reads", width=60),
                },
            )
        else:
            st.caption("No separate digits found in the ink.")

    with right:
        ia.keep_widget_state(st.session_state, ROI_KEYS)  # kept while their tab is closed
        # lazy tabs: a new drawing redraws the main view and the open tab, not both extra views
        glance, roi = st.tabs(
            ["At a glance: background, small, large", "Deformable RoI pooling"], key="scene_tabs", on_change="rerun"
        )
        with glance:
            if glance.open:
                st.subheader("At a glance: a background unit, a small digit, a large digit")
                # the deformable row only: the twin is already beside the main view
                triplet = scene_glance(pair, picks, method, name)
                if triplet.panels:
                    charts(figures(triplet, height=330), "scene_triplet")
        with roi:
            if roi.open:
                roi_section(inp)
        st.caption(
            f"Server time for this update: {1e3 * (time.perf_counter() - t0):.0f} ms "
            f"(capture of both models {1e3 * pair.seconds:.0f} ms when the scene changed)."
        )


if __name__ == "__main__":  # run by st.navigation (app.py) as this page's script
    page()
