"""The drawing canvas, kept across reruns: switching to another input and back restores the
drawing (the component forgets it when it leaves the page). Only the app's pages import this."""

from __future__ import annotations

from typing import Any

import streamlit as st
from PIL import Image

import app_inputs as ia


def drawn_image(key: str, **canvas_args: Any) -> Image.Image | None:
    """Show ``st_canvas(**canvas_args, key=key)`` and return what is drawn (None when empty).

    The canvas's objects and last image are kept in the session under ``key``: a canvas shown
    again after the user switched away starts from the saved drawing, and its picture is used
    until the component sends a fresh one.

    Raises:
        ImportError: the component could not be loaded (the caller says so to the user).
    """
    from streamlit_drawable_canvas import st_canvas

    saved = st.session_state.get(f"{key}__objects")
    result = st_canvas(initial_drawing=saved, key=key, **canvas_args)
    if result.json_data is not None:
        st.session_state[f"{key}__objects"] = result.json_data
    raw = ia.canvas_image(result._image_data_url)
    objects = (result.json_data or saved or {}).get("objects") or []
    if raw is not None:
        st.session_state[f"{key}__image"] = raw
    elif objects:  # restored from the session: the component has not sent its picture yet
        raw = st.session_state.get(f"{key}__image")
    return raw
