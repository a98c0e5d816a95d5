"""deformscope: watch where deformable layers look, on scenes of digits of many sizes, on one
digit, or in a model of yours.

streamlit run app.py
streamlit run app.py -- --model package.module:factory --weights file.pt   # your own model

This file only builds the navigation: each page is a module of ``ui`` with its own URL
(``/`` scenes, ``/digits``, ``/your-model``); what they share lives in ``ui.session``.
"""

from __future__ import annotations

import streamlit as st

from models.runtime import describe_device
from ui.canvas import new_full_run
from ui.inputs import keep_widget_state
from ui.session import NARROW_CSS, SHARED_KEYS, cli_args, device, freeze_startup_heap
from ui.touch import touch_taps

st.set_page_config(page_title="deformscope", layout="wide")
st.html(NARROW_CSS)  # a phone shows each page's charts before its inputs
touch_taps()  # a tap on a unit selects it, as a click does
new_full_run()
freeze_startup_heap()

YOURS = bool(cli_args().model)  # a model of yours opens first
PAGES = [st.Page("ui/user.py", title="Your model", url_path="your-model", default=True)] if YOURS else []
PAGES += [
    st.Page("ui/scenes.py", title="Scenes", url_path="scenes", default=not YOURS),
    st.Page("ui/digits.py", title="Single digit", url_path="digits"),
]
page = st.navigation(PAGES, position="sidebar")
keep_widget_state(st.session_state, SHARED_KEYS)  # the points settings stay as they were on another page

st.title("deformscope: where does a deformable convolution look?")
with st.expander("What am I looking at?", expanded=False):
    st.markdown(
        "A deformable convolution (Dai et al., *Deformable Convolutional Networks*, ICCV 2017; "
        "DCNv2 adds a modulation mask) lets each of a 3x3 kernel's 9 taps move by a learned offset. "
        "These models end in three stacked 3x3 deformable layers, so one unit of the top layer "
        "depends on 9 x 9 x 9 = **729 sampling points**. Red dots are those points, back-projected to "
        "input pixels exactly as the operator sampled them (tested against `torchvision.ops.deform_conv2d`); "
        "the green square is the unit. Click (or tap) a unit to move it; the axes are in input pixels and hold still "
        "while you do. The regular twin samples a fixed 7x7 lattice.\n\n"
        "**Scenes** (the default) are 64x64 canvases with digits of very different sizes, labelled pixel by pixel "
        "by a dense model, as in the paper's segmentation setting: there the points reach wide on the background, "
        "gather on small digits and spread over large ones. **Single digit** shows the 28x28 MNIST classifiers. "
        "Each page's address holds its picture, unit, method and view: copy it to share what you see."
    )
with st.sidebar:
    try:
        st.caption(f"Models run on {describe_device(device())}.")
    except ValueError as exc:  # --device cuda on a machine without a GPU
        st.error(str(exc))
        st.stop()
page.run()
