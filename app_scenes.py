"""The app's scene mode: dense models on multi-digit canvases, where the paper's adaptation shows.

Only ``app.py`` imports this module; it is the one other place that knows Streamlit. Every
chart is a ``viz.figures`` spec drawn by ``viz.render.plotly_figure``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import streamlit as st
import torch
from torch import Tensor, nn

import app_inputs as ia
import viz
from app_canvas import drawn_image
from app_unit import group_choice, unit_chart
from models.catalog import TWINS
from models.scenes import BACKGROUND, rescale_digit, size_class
from viz.backproject import path_count
from viz.figures import (
    family_note,
    roi_figure,
    scene_receptive_field_figure,
)
from viz.preprocess import SCENE_SIZE, preprocess_scene
from viz.render import plotly_figure
from viz.roi import roi_bins
from viz.samples import load_scene_samples
from viz.scene_stats import ink_boxes, pick_units, unit_digits
from viz.views import VIEWS, get_view

SCENE_MODELS = {name: desc for name, (_, desc) in TWINS.items() if name.startswith("scene_")}
CANVAS_SIDE = 256  # the drawing canvas: 4 screen pixels per scene pixel
SIZE_NAMES = ("small", "medium", "large")
MAX_ANALYSES = 8  # per browser session: bounded memory however long someone plays
ROI_KEYS = ("roi_digit", "roi_shift_x", "roi_shift_y", "roi_scale")


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


@dataclass
class SceneAnalysis:
    key: str
    deform: viz.Capture
    regular: viz.Capture
    seconds: float


@st.cache_resource
def scene_samples():
    return load_scene_samples()


def _key(image: Tensor, *names: str) -> str:
    h = hashlib.sha256(image.numpy().tobytes())
    for n in names:
        h.update(n.encode())
    return h.hexdigest()[:16]


def _bundled_input() -> SceneInput | None:
    scenes = scene_samples()
    idx = int(st.number_input(f"Test scene (0-{len(scenes) - 1})", 0, len(scenes) - 1, 10, key="scene_index"))
    digits = scenes.digits_of(idx)
    image, boxes = scenes.images[idx], scenes.boxes[digits].clone()
    labels = [int(v) for v in scenes.labels[digits]]
    heights = scenes.heights[digits]
    described = [f"{lab} ({int(h)} px)" for lab, h in zip(labels, heights.tolist(), strict=True)]
    st.caption("Digits: " + ", ".join(described) + ". Box height: small < 20 px <= medium < 34 px <= large.")
    pick = st.selectbox(
        "Rescale one digit",
        list(range(len(labels))),
        format_func=lambda k: f"digit {k + 1}: a {labels[k]}, {int(heights[k])} px",
        key="scene_digit",
    )
    factor = st.slider(
        "Its scale", 0.4, 2.0, 1.0, 0.1, key="scene_factor", help="Redraw the digit smaller or larger about its centre"
    )
    if factor != 1.0:
        new, box = rescale_digit(image[0], scenes.instances[idx], int(pick), float(factor))
        image = new.unsqueeze(0)
        boxes[int(pick)] = box
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


def _analysis(deform: nn.Module, regular: nn.Module, inp: SceneInput, names: tuple[str, str]) -> SceneAnalysis:
    key = _key(inp.image, *names)
    store: dict[str, SceneAnalysis] = st.session_state.setdefault("scene_analyses", {})
    if key not in store:
        t0 = time.perf_counter()
        batch = inp.image.unsqueeze(0)
        a = SceneAnalysis(key, viz.capture(deform, batch), viz.capture(regular, batch), 0.0)
        a.seconds = time.perf_counter() - t0
        while len(store) >= MAX_ANALYSES:
            store.pop(next(iter(store)))
        store[key] = a
    return store[key]


def _votes(cap: viz.Capture, boxes: Tensor) -> list[int | None]:
    """The digit each box is read as: majority of predicted digit classes over the box's ink."""
    pred = cap.logits[0, :BACKGROUND].argmax(0)
    ink = cap.images[0, 0] > 0.3
    out: list[int | None] = []
    for x0, y0, x1, y1 in boxes.long().tolist():
        votes = pred[y0:y1, x0:x1][ink[y0:y1, x0:x1]]
        out.append(int(torch.bincount(votes, minlength=10).argmax()) if votes.numel() else None)
    return out


def _set_unit(unit: tuple[int, int]) -> None:
    st.session_state["scene_unit"] = unit


def views(
    a,
    models: tuple[nn.Module, nn.Module],
    names: tuple[str, str],
    unit,
    view: str,
    method: str,
    levels: int,
    group: int | None,
) -> list[dict]:
    """A view's results for a unit of both models, kept per analysis (a few per session): the
    points view's points are computed here once, drawn and counted from here."""
    store = st.session_state.setdefault("scene_views", {})
    key = (a.key, unit, view, method, levels, group)
    if key not in store:
        if len(store) >= MAX_ANALYSES:
            store.clear()
        shown = get_view(view)
        caps = (a.deform, a.regular)
        store[key] = [
            {**shown.compute(m, c, unit, method, levels, group), "title": n}
            for m, c, n in zip(models, caps, names, strict=True)
        ]
    return store[key]


def roi_section(load_model, inp: SceneInput) -> None:
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
    c1, c2, c3, c4 = st.columns(4)
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
    k = c1.selectbox("Box of digit", range(len(inp.boxes)), format_func=named, key="roi_digit")
    shift = (
        c2.slider("Move right (x its width)", -0.5, 0.5, step=0.05, key="roi_shift_x"),
        c3.slider("Move down (x its height)", -0.5, 0.5, step=0.05, key="roi_shift_y"),
    )
    scale = c4.slider("Scale", 0.5, 1.5, step=0.05, key="roi_scale")
    x0, y0, x1, y1 = inp.boxes[int(k)].tolist()
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2 + shift[0] * w, (y0 + y1) / 2 + shift[1] * h
    box = (cx - scale * w / 2, cy - scale * h / 2, cx + scale * w / 2, cy + scale * h / 2)
    bins_d, bins_p = roi_bins(deform, inp.image, box), roi_bins(plain, inp.image, box)
    spec = roi_figure(
        [{"title": f"digit {int(k) + 1}", "image": inp.image[0].numpy(), "deform": bins_d, "plain": bins_p}]
    )
    st.plotly_chart(plotly_figure(spec, interactive=True, height=360), key="roi_chart")
    truth = "" if inp.labels[int(k)] is None else f" (true label {inp.labels[int(k)]})"
    st.caption(
        f"Deformable RoI pooling reads {bins_d.prediction}, plain RoI Align {bins_p.prediction}{truth}. "
        "Grey: the box's 3x3 bins; red: where the learned offsets moved them (0.1 x the box size per unit offset). "
        "Move or scale the box to see the bins go back to the digit."
    )


@st.fragment
def unit_panel(
    a, models: tuple[nn.Module, nn.Module], names: tuple[str, str], inp, levels: int, method: str, overlay: bool
) -> None:
    """The chosen unit's view and caption. A fragment: a click or a view switch reruns only this,
    not the input column, the overview or the RoI section."""
    deform, regular = models
    name, twin = names
    heights = inp.heights
    ho, wo = a.deform.top.out_size
    unit = st.session_state["scene_unit"]
    unit = (min(unit[0], ho - 1), min(unit[1], wo - 1))
    view = st.radio(
        "View",
        VIEWS,
        horizontal=True,
        key="scene_view",
        help="Where the layers sample, or what the unit really uses (DCNv2's views): the gradient of its response "
        "per pixel, its samples weighted by gradient x value, the smallest region that keeps its response.",
    )
    shown = get_view(view)
    group = group_choice(a.deform.top.groups, "scene_group") if shown.draws_points else None
    entries = views(a, (deform, regular), (name, f"{twin} (twin)"), unit, view, method, levels, group)
    spec = shown.figure(entries, unit, overlay=overlay)
    fig = plotly_figure(spec, interactive=True)
    unit_chart(fig, "scene_chart", "scene_last_click", _set_unit)
    d = unit_digits(a.deform, inp.boxes)[unit]
    where = (
        "the background"
        if d < 0
        else f"digit {int(d) + 1} ({SIZE_NAMES[int(size_class(heights[int(d) : int(d) + 1]))]}, {int(heights[d])} px)"
    )
    dil_d = float(viz.effective_dilation(a.deform)[unit])
    dil_r = float(viz.effective_dilation(a.regular)[unit])
    # what is said is what is shown: the points view counts its points, the other views say what they found
    what = (
        f"{path_count(a.deform, levels, group)} sampling points at level {levels} ({method} method); "
        if shown.draws_points
        else f"{shown.plain(entries[0]).rstrip('.')}; "
    )
    st.caption(
        f"Unit {unit} lies on {where}: {what}"
        f"effective dilation of its top-layer filter {dil_d:.1f} px (regular twin {dil_r:.1f} px). "
        + ("" if a.deform.top.family == "torchvision" else f"{family_note(a.deform)} ")
        + "Click any unit to move it. Colours: the model's predicted digit classes."
    )


def page(load_model, levels: int, method: str, own: dict[str, tuple[str, str]] | None = None) -> None:
    """The scene mode, below the page title; ``load_model(name)`` is the app's cached loader;
    ``own``: the user's scene checkpoints from the command line, path -> (description, twin)."""
    choices = {name: (desc, TWINS[name][0]) for name, desc in SCENE_MODELS.items()} | (own or {})
    with st.sidebar:
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
    left, right = st.columns([1, 2])
    with left:
        source = st.radio("Input", ["Test scene", "Draw", "Upload"], horizontal=True, key="scene_source")
        inp = {"Test scene": _bundled_input, "Draw": _drawn_input, "Upload": _uploaded_input}[source]()
    if inp is None:
        refused = source == "Upload" and st.session_state.get("scene_upload") is not None  # its error is shown
        if not refused:
            with right:
                st.info("Pick a test scene, draw a few digits or upload a picture to see where the layers look.")
        return
    t0 = time.perf_counter()
    a = _analysis(deform, regular, inp, (name, twin))
    heights = inp.heights
    picks = pick_units(a.deform, inp.boxes, heights)
    if st.session_state.get("scene_base") != inp.base or "scene_unit" not in st.session_state:
        # a new picture: start on its largest digit; rescaling or drawing on keeps the unit
        st.session_state["scene_base"] = inp.base
        _set_unit(picks["large"] or picks["small"] or picks["background"] or (8, 8))

    with right:  # the main view first: what a stroke or a click is for reaches the page soonest
        unit_panel(a, (deform, regular), (name, twin), inp, levels, method, overlay)
    with left:
        st.image(inp.image[0].numpy(), caption=f"model input ({SCENE_SIZE}x{SCENE_SIZE})", width=256, clamp=True)
        st.caption(f"Input: {inp.source}.")
        read_d, read_r = _votes(a.deform, inp.boxes), _votes(a.regular, inp.boxes)
        rows = []
        for k in range(len(inp.boxes)):
            h = int(heights[k])
            rows.append(
                {
                    "digit": k + 1,
                    "size": f"{SIZE_NAMES[int(size_class(heights[k : k + 1]))]} ({h} px)",
                    "true": "" if inp.labels[k] is None else str(inp.labels[k]),
                    "deformable reads": "" if read_d[k] is None else str(read_d[k]),
                    "regular reads": "" if read_r[k] is None else str(read_r[k]),
                }
            )
        if rows:
            st.dataframe(rows, hide_index=True, key="scene_reads")
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
                triplet = scene_receptive_field_figure(a.deform, None, [picks], method, names=(name, ""))
                if triplet.panels:
                    st.plotly_chart(plotly_figure(triplet, interactive=True, height=330), key="scene_triplet")
        with roi:
            if roi.open:
                roi_section(load_model, inp)
        st.caption(
            f"Server time for this update: {1e3 * (time.perf_counter() - t0):.0f} ms "
            f"(capture of both models {1e3 * a.seconds:.0f} ms when the scene changed)."
        )
