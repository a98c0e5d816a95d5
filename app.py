"""deformscope: watch where deformable layers look, on scenes of digits of many sizes or on
one digit.

streamlit run app.py
streamlit run app.py -- --model package.module:factory --weights file.pt   # your own model
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import streamlit as st
import torch

import app_inputs as ia
import app_scenes
import app_user
import viz
from app_canvas import drawn_image, new_full_run
from app_unit import unit_chart, unit_sliders
from models.catalog import TWINS
from models.discovery import DiscoveryError
from models.runtime import add_device_argument, describe_device, resolve_device
from viz.figures import (
    GRID_GREY,
    POINT_RED,
    count_note,
    density_figure,
    dilation_figure,
    levels_figure,
    offset_field_figure,
    probabilities_figure,
)
from viz.render import plotly_figure
from viz.samples import load_samples
from viz.user_model import add_model_arguments, model_from_args
from viz.views import VIEWS, get_view

st.set_page_config(page_title="deformscope", layout="wide")
new_full_run()


@st.cache_resource
def freeze_startup_heap() -> None:
    """Once per server, on the first run: exempt what the imports built from garbage collection.

    Streamlit collects garbage after every run (gc.collect(2)); with torch, torchvision and
    plotly loaded that walked ~390k objects, 190 ms per click or stroke on a 2-core machine, and
    more while the browser drew on the same cores. Frozen, they are skipped (the collection
    takes ~3 ms) and they live as long as the server anyway; everything made later is still
    collected as before. Libraries otherwise imported on first use are imported first, so that
    they are frozen too (torchvision alone adds ~150k objects)."""
    import pandas  # noqa: F401  (st.dataframe's)
    import torchvision  # noqa: F401  (the layer contract's, models.contract)

    gc.collect()
    gc.freeze()


freeze_startup_heap()

MODEL_PAIRS = {name: (desc, twin) for name, (twin, desc) in TWINS.items() if not name.startswith(("scene_", "roi_"))}
CANVAS_KEY = "canvas"


@st.cache_resource
def device() -> torch.device:
    """Where the models run: ``--device`` (default auto: the GPU when there is one)."""
    return resolve_device(cli_args().device)


@st.cache_resource(show_spinner="Loading checkpoints...")
def load_model(name: str):
    # Shared by every browser session: viz.capture records per call, so sharing is safe.
    return viz.load(name, device())


def cli_args() -> argparse.Namespace:
    """Options after ``--`` on the streamlit command line: only these may name user code."""
    p = argparse.ArgumentParser(prog="streamlit run app.py --")
    add_model_arguments(p)
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="a deformscope checkpoint of yours (python -m models.train): listed beside the shipped ones",
    )
    p.add_argument("--twin", default=None, help="its regular twin (default: the shipped regular model of its family)")
    add_device_argument(p)
    return p.parse_known_args(sys.argv[1:])[0]


@st.cache_resource(show_spinner=False)
def load_user_model(argv: tuple[str, ...], _progress=None):
    # Keyed by the command line (model, weights, input size...), shared by every session like the
    # shipped models; _progress (not part of the key) hears each step while it loads.
    return model_from_args(cli_args(), progress=_progress)


def user_model():
    """The model named by --model; the first time a session asks, a status line names the step
    that runs (building, finding the layers, probing) until it is ready."""
    argv = tuple(sys.argv[1:])
    if st.session_state.get("user_model_ready"):
        return load_user_model(argv)
    with st.status("Loading your model...", expanded=False) as status:

        def step(sentence: str) -> None:
            status.update(label=sentence[0].upper() + sentence[1:] + "...")

        model = load_user_model(argv, _progress=step)
        status.update(
            label=f"Your model is ready: {len(model.sampling_layers())} stacked deformable layer(s) found",
            state="complete",
        )
    st.session_state["user_model_ready"] = True
    return model


@st.cache_resource
def samples():
    return load_samples()


def read_canvas():
    """The drawing canvas (kept across input switches); returns an image or None. Failure to
    load the component is reported."""
    try:
        return drawn_image(CANVAS_KEY, side=280, stroke_width=22)
    except Exception as exc:  # the component could not be registered
        st.warning(f"The drawing canvas is unavailable here ({exc}). Upload an image or pick a sample instead.")
        return None


def memo(name: str, params: tuple, build):
    """Rebuild a figure only when its digit or its own settings changed (e.g. clicking a unit
    leaves the density, offset and dilation views untouched)."""
    store = st.session_state.setdefault("figure_cache", {})
    key = (st.session_state["analysis"].key, name, params)
    if key not in store:
        if len(store) > 64:
            store.clear()
        store[key] = build()
    return store[key]


UNIT = ia.UnitState(st.session_state, "unit")  # the selected top-layer unit and its sliders


st.title("deformscope: where does a deformable convolution look?")
with st.expander("What am I looking at?", expanded=False):
    st.markdown(
        "A deformable convolution (Dai et al., *Deformable Convolutional Networks*, ICCV 2017; "
        "DCNv2 adds a modulation mask) lets each of a 3x3 kernel's 9 taps move by a learned offset. "
        "These models end in three stacked 3x3 deformable layers, so one unit of the top layer "
        "depends on 9 x 9 x 9 = **729 sampling points**. Red dots are those points, back-projected to "
        "input pixels exactly as the operator sampled them (tested against `torchvision.ops.deform_conv2d`); "
        "the green square is the unit. Click a unit to move it. The regular twin samples a fixed 7x7 lattice.\n\n"
        "**Scenes** (the default) are 64x64 canvases with digits of very different sizes, labelled pixel by pixel "
        "by a dense model, as in the paper's segmentation setting: there the points reach wide on the background, "
        "gather on small digits and spread over large ones. **Single digit** shows the 28x28 MNIST classifiers."
    )

USER_MODEL = cli_args().model
with st.sidebar:
    mode = st.radio(
        "Mode",
        ["Your model", "Scenes", "Single digit"] if USER_MODEL else ["Scenes", "Single digit"],
        key="mode",
        help="Scenes: dense models on canvases with digits of many sizes. Single digit: the 28x28 MNIST classifiers."
        + (" Your model: the one named by --model on the command line." if USER_MODEL else ""),
    )
    try:
        st.caption(f"Models run on {describe_device(device())}.")
    except ValueError as exc:  # --device cuda on a machine without a GPU
        st.error(str(exc))
        st.stop()
    st.header("Points")
    stacked = 3  # the shipped models' stacked layers; a model of yours may have more or fewer
    if mode == "Your model":
        try:
            stacked = len(user_model().sampling_layers())
        except (DiscoveryError, viz.CheckpointError):
            pass  # said on the page below
    levels = st.slider(
        "Levels (layers back-projected)",
        1,
        max(stacked, 2),
        min(3, stacked),
        key="levels" if mode != "Your model" else "user_levels",
        help="How many stacked layers the points go back through (9 samples a layer, x groups).",
        disabled=stacked < 2,
    )
    method = st.radio(
        "Reading between units",
        viz.METHODS,
        index=1,
        key="method",
        help="nearest: round (public MXNet-demo style); bilinear: interpolate offsets; exact: expand to the 4 neighbours with weights",
    )

DEFAULT_TWINS = {"digits": "regular_plain", "scenes": "scene_regular"}


def own_checkpoints() -> dict[str, dict[str, tuple[str, str]]]:
    """The user's checkpoints named with ``--checkpoint``, by family: path -> (description, twin)."""
    args = cli_args()
    out: dict[str, dict[str, tuple[str, str]]] = {"digits": {}, "scenes": {}}
    for path in args.checkpoint:
        try:
            model = load_model(path)
        except viz.CheckpointError as exc:
            st.sidebar.error(f"--checkpoint {path}: {exc}")
            continue
        family = getattr(model, "family", "digits")
        if family not in out:
            st.sidebar.error(f"--checkpoint {path}: a {family} model; the app shows digit and scene models")
            continue
        out[family][path] = (f"yours, {model.arch}", args.twin or DEFAULT_TWINS[family])
    return out


OWN = own_checkpoints()
if mode == "Scenes":
    app_scenes.page(load_model, levels, method, OWN["scenes"])
    st.stop()
if mode == "Your model":
    try:
        the_model = user_model()
    except (DiscoveryError, viz.CheckpointError) as exc:
        st.error(f"Could not use your model: {exc}")
        st.stop()
    app_user.page(the_model, levels, method)
    st.stop()

with st.sidebar:
    st.header("Model")
    pairs = MODEL_PAIRS | OWN["digits"]
    ckpt = st.selectbox("Checkpoint", list(pairs), format_func=lambda k: f"{k}: {pairs[k][0]}")

try:
    deform_model = load_model(ckpt)
    regular_model = load_model(pairs[ckpt][1])
except viz.CheckpointError as exc:
    st.error(f"Could not load the model: {exc}")
    st.stop()

left, right = st.columns([1, 2])
image = None
with left:
    source = st.radio("Input", ["Sample digit", "Draw", "Upload"], horizontal=True, key="source")
    if source == "Sample digit":
        s = samples()
        idx = st.number_input("Bundled test digit (0-99)", 0, len(s) - 1, 1, key="sample_index")
        image = s.images[int(idx)]
        st.caption(f"MNIST test #{int(s.test_indices[int(idx)])}, label {int(s.labels[int(idx)])}")
    elif source == "Draw":
        st.caption("Draw a digit (white on black). The Clear button under the canvas starts again.")
        raw = read_canvas()
        try:
            image = ia.prepare(raw) if raw is not None else None
        except ia.InputError as exc:
            if "empty" not in str(exc):  # a cleared canvas is black, not an error
                st.warning(str(exc))
        if image is None:
            st.info("The canvas is empty: draw a digit.")
    else:
        up = st.file_uploader("Image of a digit", type=list(ia.UPLOAD_TYPES), key="upload")
        if up is not None:
            try:
                img, notes = ia.decode_image(up.getvalue(), up.name)
                st.image(ia.preview(img), caption="uploaded")
                try:
                    image = ia.prepare(img, notes)  # adds what it did (inverted, paper cleaned)
                finally:
                    for n in notes:
                        st.caption(n)
            except ia.InputError as exc:
                st.error(str(exc))
                image = None
        else:
            st.info("Upload a PNG, JPEG, BMP, GIF or WebP image of one digit.")

if image is None:
    with right:
        st.info("Choose a sample digit, draw one, or upload an image to see where the layers look.")
    st.stop()

key = ia.image_key(image, ckpt)
cached = st.session_state.get("analysis")
if cached is None or cached.key != key:
    new = ia.analyse(deform_model, regular_model, image, key)
    # a new picture starts at its centre unit; another checkpoint on the same picture keeps the unit
    if cached is None or not torch.equal(cached.image, image) or "unit" not in st.session_state:
        UNIT.set(ia.default_unit(new))
    cached = new
    st.session_state["analysis"] = cached
analysis = cached
caps = {"deformable": analysis.deform, "regular twin": analysis.regular}

with left:
    st.image(image[0].numpy(), caption="model input (28x28, MNIST format)", width=140, clamp=True)
    p_d, p_r = analysis.deform.probabilities[0], analysis.regular.probabilities[0]
    c1, c2 = st.columns(2)
    c1.metric("Deformable predicts", int(p_d.argmax()))
    c1.caption(f"with probability {float(p_d.max()):.1%}")
    c2.metric("Regular twin predicts", int(p_r.argmax()))
    c2.caption(f"with probability {float(p_r.max()):.1%}")
    st.plotly_chart(
        memo(
            "probs",
            (),
            lambda: plotly_figure(
                probabilities_figure(caps, {"deformable": POINT_RED, "regular twin": GRID_GREY}),
                interactive=True,
                height=260,
            ),
        ),
        key="probs",
    )


@st.fragment
def unit_views(analysis: ia.Analysis, deform_model, regular_model, levels: int, method: str) -> None:
    """Everything that depends on the chosen unit. A fragment: a click, a slider or a tab switch
    reruns only this, not the input column, the prediction or the sidebar."""
    t0 = time.perf_counter()
    caps = {"deformable": analysis.deform, "regular twin": analysis.regular}
    unit = st.session_state.get("unit", ia.default_unit(analysis))
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
            view = st.radio(
                "View",
                VIEWS,
                horizontal=True,
                key="digit_view",
                help="Where the layers sample, or what the unit really uses (DCNv2's views).",
            )

            def points_figure():
                shown = get_view(view)
                entries = [
                    {**shown.compute(m, c, unit, method, levels), "title": n}
                    for m, c, n in (
                        (deform_model, analysis.deform, "deformable"),
                        (regular_model, analysis.regular, "regular twin"),
                    )
                ]
                # the points drawn are the points counted: computed once, for both
                note = count_note(entries[0]["pts"]) if shown.draws_points else shown.plain(entries[0]).rstrip(".")
                return plotly_figure(shown.figure(entries, unit), interactive=True, height=520), note

            fig, note = memo("points", (unit, levels, method, view), points_figure)
            unit_chart(fig, "points_chart", "last_click", UNIT.set)
            unit_sliders(UNIT, unit, analysis.deform.top.out_size)
            st.caption(f"Unit {unit}: {note}. Left the deformable model, right its regular twin.")
            if analysis.deform.top.modulated:
                st.caption(
                    "DCNv2: a point's opacity is its modulation weight (the product of the masks along its path)."
                )
    with tab_levels:
        if tab_levels.open:
            st.caption(
                "The recursion: the top layer's 9 samples, then 9 for each of those, and so on. Grey lines join each sample to its parent."
            )
            st.plotly_chart(
                memo(
                    "levels",
                    (unit, method),
                    lambda: plotly_figure(levels_figure(analysis.deform, unit, method), interactive=True, height=420),
                ),
                key="levels_chart",
            )
    with tab_offsets:
        if tab_offsets.open:
            st.caption("Per layer, the learned offset averaged over the 9 taps at each unit, in input pixels.")
            st.plotly_chart(
                memo(
                    "offsets",
                    (),
                    lambda: plotly_figure(offset_field_figure(analysis.deform), interactive=True, height=440),
                ),
                key="offsets",
            )
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
            st.plotly_chart(
                memo(
                    "density",
                    (units, method),
                    lambda: plotly_figure(density_figure(caps, units, method), interactive=True, height=380),
                ),
                key="density",
            )
    with tab_dilation:
        if tab_dilation.open:
            stats = memo("dilation_stats", (), lambda: {name: viz.dilation_summary(cap) for name, cap in caps.items()})
            c1, c2 = st.columns(2)
            c1.metric("Deformable, on the digit", f"{stats['deformable']['digit']:.2f} px")
            c2.metric("Deformable, on the background", f"{stats['deformable']['background']:.2f} px")
            st.caption(
                f"Regular twin: {stats['regular twin']['all']:.2f} px everywhere. Effective dilation = mean distance between adjacent taps' samples (Dai et al. 2017)."
            )
            st.plotly_chart(
                memo(
                    "dilation",
                    (),
                    lambda: plotly_figure(dilation_figure(analysis.deform), interactive=True, height=380),
                ),
                key="dilation",
            )
    st.caption(
        f"Server time for these views: {1e3 * (time.perf_counter() - t0):.0f} ms "
        f"(capture of both models {1e3 * analysis.seconds:.0f} ms when the digit changed)."
    )


with right:
    unit_views(analysis, deform_model, regular_model, levels, method)
