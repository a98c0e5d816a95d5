"""The drawing canvas, kept across reruns: switching to another input and back restores the
drawing (the component forgets it when it leaves the page). Only the app's pages import this."""

from __future__ import annotations

from typing import Any

import streamlit as st
from PIL import Image

import app_inputs as ia

RUN_KEY = "app_canvas__full_run"


def new_full_run() -> None:
    """Count the app's full script runs (called once at the top of app.py; fragment reruns do
    not run it), so a canvas can tell whether it was on the page in the previous full run."""
    st.session_state[RUN_KEY] = st.session_state.get(RUN_KEY, 0) + 1


def drawn_image(key: str, **canvas_args: Any) -> Image.Image | None:
    """Show ``st_canvas(**canvas_args, key=key)`` and return what is drawn (None when empty).

    The canvas's objects and last image are kept in the session under ``key``: a canvas shown
    again after the user switched away starts from the saved drawing, and its picture is used
    until the component sends a fresh one.

    The saved drawing is handed to the component only when it comes back on the page, and the
    same value is passed while it stays: a component whose arguments change is drawn again and
    sends its value again, which reruns the page, which (with the newest drawing as argument)
    changed the arguments again: an endless rerun loop once anything re-mounted the canvas.

    Raises:
        ImportError: the component could not be loaded (the caller says so to the user).
    """
    from streamlit_drawable_canvas import st_canvas

    run = st.session_state.get(RUN_KEY, 0)
    saved = st.session_state.get(f"{key}__objects")
    if st.session_state.get(f"{key}__shown_in_run") != run - 1:  # (re)appearing: restore
        st.session_state[f"{key}__initial"] = saved
    st.session_state[f"{key}__shown_in_run"] = run
    result = st_canvas(initial_drawing=st.session_state[f"{key}__initial"], key=key, **canvas_args)
    if result.json_data is not None:
        st.session_state[f"{key}__objects"] = result.json_data
    raw = ia.canvas_image(result._image_data_url)
    objects = (result.json_data or saved or {}).get("objects") or []
    if raw is not None:
        st.session_state[f"{key}__image"] = raw
    elif objects:  # restored from the session: the component has not sent its picture yet
        raw = st.session_state.get(f"{key}__image")
    return raw
