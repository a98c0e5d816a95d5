"""The pages' input handling, without Streamlit (so tests can call it directly): decode uploads
safely, read the canvas, parse chart selections, keep the chosen unit and its sliders in step.
Only the app's pages import this module."""

from __future__ import annotations

import base64
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from viz.preprocess import MAX_PIXELS, preprocess

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
UPLOAD_TYPES = ("png", "jpg", "jpeg", "bmp", "gif", "webp")


class InputError(ValueError):
    """An input the app cannot use; the message is shown to the user as is."""


def decode_image(data: bytes, name: str = "upload") -> tuple[Image.Image, list[str]]:
    """Bytes of an image file -> a fully loaded PIL image and notes for the user.

    Raises :class:`InputError` for empty, oversized, non-image, truncated or bomb-sized files.
    """
    if not data:
        raise InputError(f"{name} is empty (0 bytes).")
    if len(data) > MAX_UPLOAD_BYTES:
        raise InputError(f"{name} is {len(data) / 1e6:.1f} MB; the limit is {MAX_UPLOAD_BYTES / 1e6:.0f} MB.")
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise InputError(
                    f"{name} is {w}x{h} pixels; images above {MAX_PIXELS / 1e6:.0f} megapixels are refused."
                )
            if getattr(img, "n_frames", 1) > 1:
                notes.append(f"{name} is animated ({img.n_frames} frames): the first frame is used.")
                img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img)  # phone photos: the orientation the camera meant
        except InputError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(f"{name} decodes to a huge image (possible decompression bomb); refused.") from None
        except UnidentifiedImageError:
            raise InputError(f"{name} is not an image file that can be read (PNG, JPEG, BMP, GIF or WebP).") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"{name} could not be decoded ({exc}); it may be truncated or corrupt.") from None
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        notes.append("16-bit image: scaled to 8 bits.")
    if img.mode == "CMYK":
        notes.append("CMYK image: converted to RGB.")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        notes.append("Transparent image: the opaque strokes are taken as the digit.")
    return img, notes


def preview(img: Image.Image, box: int = 140) -> Image.Image:
    """A copy that fits in a ``box`` x ``box`` square whatever the aspect ratio (at least 1 px
    each way), in a mode browsers show: previews never push the page off screen or send a
    huge image to the browser."""
    shown = img.convert("RGBA" if "A" in img.getbands() or "transparency" in img.info else "RGB")
    w, h = shown.size
    scale = min(box / w, box / h, 1.0)
    return shown.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)


def canvas_image(image_data_url: str | None) -> Image.Image | None:
    """The canvas's PNG data URL -> image, or None when nothing was drawn yet."""
    if not image_data_url or ";base64," not in image_data_url:
        return None
    raw = base64.b64decode(image_data_url.split(";base64,", 1)[1])
    img = Image.open(io.BytesIO(raw))
    img.load()
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 4 and int(arr[..., 3].max()) == 0:
        return None  # fully transparent: an empty canvas
    return img


def prepare(image: Image.Image | np.ndarray | Tensor, notes: list[str] | None = None) -> Tensor:
    """``viz.preprocess`` (``notes`` gets what it did to the picture, for the user); errors
    become :class:`InputError` for display."""
    try:
        return preprocess(image, notes)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def unit_from_selection(event: Any) -> tuple[int, int] | None:
    """The clicked unit from ``st.plotly_chart(..., on_select="rerun")``'s return value.

    Streamlit passes each point's ``customdata`` as a list or as a mapping keyed by position
    (``{"0": row, "1": col}``); both are accepted. Anything else gives None, never an error.
    """
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        points = getattr(getattr(event, "selection", None), "points", None)
    for p in points or []:
        cd = p.get("customdata") if isinstance(p, dict) else None
        if isinstance(cd, dict):
            cd = [v for _, v in sorted(cd.items(), key=lambda kv: int(kv[0]))]
        if isinstance(cd, list | tuple) and len(cd) == 2:
            try:
                return int(cd[0]), int(cd[1])
            except (TypeError, ValueError):
                continue
    return None


def new_click(event: Any, state: dict, key: str) -> tuple[int, int] | None:
    """The unit a chart selection asks for, once. A Plotly chart keeps its selection across
    reruns, so the last click handled is remembered in ``state[key]`` and not reported again."""
    clicked = unit_from_selection(event)
    if clicked is None or clicked == state.get(key):
        return None
    state[key] = clicked
    return clicked


@dataclass(frozen=True)
class UnitState:
    """A page's chosen top-layer unit in session state ``state``: the unit under ``key``, and
    the keyed state of its two sliders under ``row_key`` / ``col_key``, kept in step."""

    state: Any
    key: str

    @property
    def row_key(self) -> str:
        return f"{self.key}_row"

    @property
    def col_key(self) -> str:
        return f"{self.key}_col"

    def set(self, unit: tuple[int, int]) -> None:
        """Choose ``unit``; the sliders follow it."""
        self.state[self.key] = unit
        self.state[self.row_key], self.state[self.col_key] = unit

    def from_sliders(self) -> None:
        """The sliders' ``on_change``: the unit is set before the rerun that draws it (no second
        rerun)."""
        self.state[self.key] = (self.state[self.row_key], self.state[self.col_key])


def click_handler(
    state: Any, chart_key: str, last_key: str, set_unit: Callable[[tuple[int, int]], None]
) -> Callable[[], None]:
    """An ``on_select`` callback for the chart ``chart_key``: the clicked unit is set before the
    script reruns, so one rerun draws it (reading the click in the script body would need a
    second rerun to redraw, doubling what a click costs)."""

    def on_select() -> None:
        clicked = new_click(state.get(chart_key), state, last_key)
        if clicked is not None:
            set_unit(clicked)

    return on_select


def within(unit: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """``unit`` moved onto a top layer of ``size`` units (the nearest unit there): a unit kept
    from another picture, model or window, or read from a link, may lie off it."""
    return min(max(int(unit[0]), 0), size[0] - 1), min(max(int(unit[1]), 0), size[1] - 1)


def keep_widget_state(state: Any, keys: tuple[str, ...]) -> None:
    """Carry the choices of widgets ``keys`` over a run that does not draw them (a closed lazy
    tab): Streamlit drops an undrawn widget's state, unless the key is assigned afresh, as
    Streamlit's docs advise."""
    for k in keys:
        if k in state:
            state[k] = state[k]


__all__ = [
    "UnitState",
    "click_handler",
    "keep_widget_state",
    "within",
    "MAX_PIXELS",
    "MAX_UPLOAD_BYTES",
    "UPLOAD_TYPES",
    "InputError",
    "canvas_image",
    "decode_image",
    "new_click",
    "prepare",
    "preview",
    "unit_from_selection",
]
