"""The app's logic without Streamlit: decode inputs safely, analyse a digit with a model pair,
and build the Plotly figures. ``app.py`` only wires these to widgets."""

from __future__ import annotations

import base64
import hashlib
import io
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.graph_objects as go
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

from viz.backproject import backproject, regular_grid
from viz.capture import Capture, capture
from viz.figures import centre_unit, offset_field_figure
from viz.preprocess import MAX_PIXELS, preprocess
from viz.render import add_panel_traces
from viz.stats import dilation_summary, effective_dilation, sampling_density, unit_pixels

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


def prepare(image: Image.Image | np.ndarray | Tensor) -> Tensor:
    """``viz.preprocess``; errors become :class:`InputError` for display."""
    try:
        return preprocess(image)
    except ValueError as exc:
        raise InputError(str(exc)) from None


@dataclass
class Analysis:
    """One digit run through a deformable model and its regular twin."""

    image: Tensor  # (1, 28, 28)
    deform: Capture
    regular: Capture
    seconds: float
    key: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def image_key(image: Tensor, *names: str) -> str:
    h = hashlib.sha256(image.numpy().tobytes())
    for n in names:
        h.update(n.encode())
    return h.hexdigest()[:16]


def analyse(deform: nn.Module, regular: nn.Module, image: Tensor, key: str = "") -> Analysis:
    t0 = time.perf_counter()
    d = capture(deform, image)
    r = capture(regular, image)
    return Analysis(image, d, r, time.perf_counter() - t0, key)


def probabilities_figure(a: Analysis) -> go.Figure:
    fig = go.Figure()
    for cap, name, color in ((a.deform, "deformable", "#e41a1c"), (a.regular, "regular", "#7f7f7f")):
        fig.add_trace(go.Bar(x=list(range(10)), y=cap.probabilities[0].numpy(), name=name, marker_color=color))
    fig.update_layout(
        barmode="group",
        height=230,
        margin={"l": 30, "r": 10, "t": 10, "b": 30},
        xaxis={"dtick": 1, "title": "class"},
        yaxis={"range": [0, 1], "title": "probability"},
        legend={"orientation": "h", "y": 1.15},
    )
    return fig


def points_figure(a: Analysis, unit: tuple[int, int], levels: int, method: str, regular_points: bool) -> go.Figure:
    """The digit, a clickable scatter of top-layer units, and the unit's sampling points.

    Deterministic for given inputs, so Streamlit keeps the click selection between reruns.
    """
    cap = a.regular if regular_points else a.deform
    pts = (
        regular_grid(cap, unit, levels=levels, method=method)
        if regular_points
        else backproject(cap, unit, levels=levels, method=method)
    )
    final = pts.where(level=levels)
    fig = go.Figure()
    fig.add_trace(
        go.Heatmap(
            z=a.image[0].numpy(), colorscale="gray", zmin=0, zmax=1, showscale=False, hoverinfo="skip", name="digit"
        )
    )
    uy, ux = unit_pixels(cap)
    rows, cols = np.meshgrid(np.arange(uy.shape[0]), np.arange(uy.shape[1]), indexing="ij")
    fig.add_trace(
        go.Scatter(
            x=ux.flatten().numpy(),
            y=uy.flatten().numpy(),
            mode="markers",
            marker={"symbol": "square", "size": 17, "color": "rgba(44,160,44,0.07)", "line": {"width": 0}},
            customdata=np.stack([rows.flatten(), cols.flatten()], 1),
            hovertemplate="unit (row %{customdata[0]}, col %{customdata[1]})<extra></extra>",
            name="units (click one)",
        )
    )
    w = pts.weight[final].numpy()
    alpha = (
        np.clip(w / max(float(w.max()), 1e-12), 0.15, 1.0)
        if method == "exact" or cap.top.modulated
        else np.full(len(w), 0.85)
    )
    fig.add_trace(
        go.Scatter(
            x=pts.x[final].numpy(),
            y=pts.y[final].numpy(),
            mode="markers",
            marker={"size": 5, "color": [f"rgba(228,26,28,{v:.2f})" for v in alpha]},
            hoverinfo="skip",
            name=f"{int(final.sum())} sampling points (level {levels})",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=pts.units_xy[:, 0].numpy(),
            y=pts.units_xy[:, 1].numpy(),
            mode="markers",
            marker={"symbol": "square-open", "size": 17, "color": "#2ca02c", "line": {"width": 3}},
            hoverinfo="skip",
            name=f"selected unit {unit}",
        )
    )
    fig.update_xaxes(range=[-0.5, 27.5], constrain="domain", title="x (input pixel)")
    fig.update_yaxes(range=[27.5, -0.5], scaleanchor="x", title="y (input pixel)")
    fig.update_layout(
        height=520,
        margin={"l": 40, "r": 10, "t": 10, "b": 40},
        legend={"orientation": "h", "y": -0.15},
        clickmode="event+select",
        dragmode=False,
    )
    return fig


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


def density_figure(a: Analysis, units: str, method: str) -> go.Figure:
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=["deformable", "regular twin"])
    for i, (cap, name) in enumerate(((a.deform, "deformable"), (a.regular, "regular"))):
        d = sampling_density(cap, units=units, method=method).numpy()
        trace = go.Heatmap(
            z=d,
            colorscale="Hot",
            showscale=i == 0,
            name=name,
            hovertemplate=f"{name}<br>x %{{x}}, y %{{y}}: %{{z:.1f}}<extra></extra>",
        )
        fig.add_trace(trace, row=1, col=i + 1)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=360, margin={"l": 30, "r": 10, "t": 30, "b": 30})
    return fig


def dilation_view(a: Analysis) -> tuple[go.Figure, dict[str, dict[str, float]]]:
    stats = {"deformable": dilation_summary(a.deform), "regular": dilation_summary(a.regular)}
    d = effective_dilation(a.deform).numpy()
    fig = go.Figure(
        go.Heatmap(
            z=d,
            colorscale="Viridis",
            colorbar={"title": "px"},
            hovertemplate="unit row %{y}, col %{x}: %{z:.2f} px<extra></extra>",
        )
    )
    fig.update_layout(
        height=330,
        margin={"l": 30, "r": 10, "t": 10, "b": 30},
        yaxis={"autorange": "reversed", "title": "unit row"},
        xaxis={"title": "unit column"},
    )
    return fig, stats


def offsets_figure(deform: nn.Module, a: Analysis) -> go.Figure:
    spec = offset_field_figure(deform, a.image)
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(spec.panels), subplot_titles=[p.title for p in spec.panels])
    shown: set[str] = set()
    for i, panel in enumerate(spec.panels):
        add_panel_traces(fig, panel, row=1, col=i + 1, shown=shown)
    fig.update_layout(height=380, margin={"l": 30, "r": 10, "t": 40, "b": 30})
    return fig


def default_unit(a: Analysis) -> tuple[int, int]:
    return centre_unit(a.deform)


__all__ = [
    "MAX_PIXELS",
    "MAX_UPLOAD_BYTES",
    "UPLOAD_TYPES",
    "Analysis",
    "InputError",
    "analyse",
    "canvas_image",
    "decode_image",
    "default_unit",
    "density_figure",
    "dilation_view",
    "image_key",
    "offsets_figure",
    "points_figure",
    "prepare",
    "probabilities_figure",
    "unit_from_selection",
]
