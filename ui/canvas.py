"""The drawing canvas: a small Streamlit component of our own (a ``<canvas>``, a pen and a Clear
button) that sends its picture the moment a stroke ends, kept across reruns: switching to
another input and back restores the drawing. Only the app's pages import this.

Why not streamlit-drawable-canvas: it sends a drawing only 200 ms after its last change (a
fixed debounce in its frontend), a fifth of the app's whole budget for a stroke, and it
re-sent its value whenever its arguments changed, which once made an endless rerun loop.
"""

from __future__ import annotations

from typing import Any

import streamlit as st
from PIL import Image

from ui import inputs as ia

RUN_KEY = "ui_canvas__full_run"

_HTML = '<div class="dscanvas"><canvas></canvas><div><button type="button">Clear</button></div></div>'
_CSS = """
.dscanvas canvas { touch-action: none; cursor: crosshair; border: 1px solid #ccc; display: block; }
.dscanvas button { margin-top: 4px; }
"""
# Draws segment by segment; on pointer-up the picture goes to Python at once as a PNG data URL
# (state "png"); Clear sends "" (empty), told apart from None (nothing drawn since it appeared).
_JS = """
export default function (component) {
  const { data, setStateValue, parentElement } = component;
  const root = parentElement.querySelector(".dscanvas");
  let s = root.__ds;
  if (!s) {
    const canvas = root.querySelector("canvas");
    canvas.width = data.width; canvas.height = data.height;
    canvas.style.width = data.width + "px"; canvas.style.height = data.height + "px";
    const ctx = canvas.getContext("2d");
    const clear = () => { ctx.fillStyle = data.background; ctx.fillRect(0, 0, canvas.width, canvas.height); };
    clear();
    s = root.__ds = { canvas, ctx, drawing: false, last: null };
    if (data.initial) { const img = new Image(); img.onload = () => ctx.drawImage(img, 0, 0); img.src = data.initial; }
    const at = (e) => { const r = canvas.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; };
    const segment = (a, b) => {
      ctx.beginPath(); ctx.lineCap = "round"; ctx.lineJoin = "round";
      ctx.lineWidth = s.width; ctx.strokeStyle = s.color;
      ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
    };
    canvas.addEventListener("pointerdown", (e) => {
      s.drawing = true; canvas.setPointerCapture(e.pointerId);
      const p = at(e); segment(p, [p[0] + 0.01, p[1]]); s.last = p;
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!s.drawing) return;
      const p = at(e); segment(s.last, p); s.last = p;
    });
    const end = () => {
      if (!s.drawing) return;
      s.drawing = false; s.send("png", canvas.toDataURL("image/png"));
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    root.querySelector("button").addEventListener("click", () => { clear(); s.send("png", ""); });
  }
  s.width = data.stroke_width; s.color = data.stroke_color; s.send = setStateValue;
}
"""
_COMPONENT: Any = None


def _canvas_component() -> Any:
    """The component, registered once per server process."""
    global _COMPONENT
    if _COMPONENT is None:
        import streamlit.components.v2 as components

        _COMPONENT = components.component("deformscope_canvas", html=_HTML, css=_CSS, js=_JS, isolate_styles=False)
    return _COMPONENT


def new_full_run() -> None:
    """Count the app's full script runs (called once at the top of app.py; fragment reruns do
    not run it), so a canvas can tell whether it was on the page in the previous full run."""
    st.session_state[RUN_KEY] = st.session_state.get(RUN_KEY, 0) + 1


def drawn_image(
    key: str, side: int, stroke_width: int, stroke_color: str = "#FFFFFF", background: str = "#000000"
) -> Image.Image | None:
    """Show the canvas (``side`` x ``side`` screen pixels) and return what is drawn (None when
    empty).

    The last picture is kept in the session under ``key``: a canvas shown again after the user
    switched away starts from it (handed over only when the canvas comes back, and the same
    value while it stays, so the component is not drawn again for nothing).
    """
    run = st.session_state.get(RUN_KEY, 0)
    saved = st.session_state.get(f"{key}__png")
    if st.session_state.get(f"{key}__shown_in_run") != run - 1:  # (re)appearing: restore
        st.session_state[f"{key}__initial"] = saved
    st.session_state[f"{key}__shown_in_run"] = run
    data = {
        "width": side,
        "height": side,
        "stroke_width": stroke_width,
        "stroke_color": stroke_color,
        "background": background,
        "initial": st.session_state[f"{key}__initial"],
    }
    result = _canvas_component()(key=key, data=data, default={"png": None}, on_png_change=lambda: None)
    png = result.png
    if png is not None:  # a stroke ("" after Clear); None: nothing drawn since it appeared
        st.session_state[f"{key}__png"] = png or None
        saved = png or None
    return ia.canvas_image(saved)
