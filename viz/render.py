"""Draw :class:`viz.figures.FigureSpec` objects: matplotlib (Agg) for PNG/SVG, Plotly for HTML.
Neither needs a browser. Files are written atomically (temporary file, then rename)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from models.runtime import atomic_write
from viz.figures import FigureSpec, Layer, Panel

FORMATS = ("png", "svg", "html")


#: Above this many points a layer is drawn with WebGL (``scattergl``).
WEBGL_POINTS = 5000


def _mpl_layer(ax, layer: Layer) -> None:
    if layer.kind == "points":
        colors = np.zeros((len(layer.x), 4))
        colors[:] = _rgba(layer.color)
        if layer.alphas is not None:
            colors[:, 3] = layer.alphas
        ax.scatter(
            layer.x,
            layer.y,
            s=layer.sizes if layer.sizes is not None else 6,
            c=colors,
            linewidths=0,
            label=layer.label,
            zorder=3,
        )
    elif layer.kind == "unit":
        ax.scatter(
            layer.x,
            layer.y,
            s=90,
            marker="s",
            facecolors="none",
            edgecolors=layer.color,
            linewidths=2,
            label=layer.label,
            zorder=4,
        )
    elif layer.kind == "segments":
        from matplotlib.collections import LineCollection

        segs = np.stack([np.stack([layer.x, layer.y], 1), np.stack([layer.x2, layer.y2], 1)], 1)
        ax.add_collection(
            LineCollection(segs, colors=layer.color, linewidths=0.4, alpha=0.6, label=layer.label, zorder=2)
        )
    elif layer.kind == "arrows":
        ax.quiver(
            layer.x,
            layer.y,
            layer.x2,
            layer.y2,
            color=layer.color,
            angles="xy",
            scale_units="xy",
            scale=1,
            width=0.004,
            label=layer.label,
        )
    elif layer.kind == "curve":
        ax.plot(layer.x, layer.y, marker="o", color=layer.color, label=layer.label)
    elif layer.kind == "units":
        pass  # clickable cells only mean something in an interactive figure
    elif layer.kind == "bars":
        ax.bar(layer.x + layer.offset, layer.y, width=0.35, color=layer.color, label=layer.label)
    else:
        raise ValueError(f"unknown layer kind {layer.kind!r}")


def _rgba(color: str) -> tuple[float, float, float, float]:
    from matplotlib.colors import to_rgba

    return to_rgba(color)


def _mpl_panel(ax, panel: Panel, legend: bool = True) -> None:
    if panel.image is not None:
        h, w = panel.image.shape[:2]
        # the image keeps its own pixel frame; panel.extent only sets the axes (it may be larger)
        frame = (-0.5, w - 0.5, h - 0.5, -0.5)
        if panel.image.ndim == 3:  # colour, as the model received it
            ax.imshow(np.clip(panel.image, 0, 1), extent=frame, interpolation="nearest")
        else:
            ax.imshow(panel.image, cmap="gray", vmin=0, vmax=1, extent=frame, interpolation="nearest")
    if panel.heat is not None:
        h, w = panel.heat.shape
        frame = panel.extent or (-0.5, w - 0.5, h - 0.5, -0.5)
        if panel.heat_origin is not None:  # its own pixel grid (a density over grown axes)
            ox, oy = panel.heat_origin
            frame = (ox - 0.5, ox + w - 0.5, oy + h - 0.5, oy - 0.5)
        im = ax.imshow(panel.heat, cmap=panel.heat_colors, extent=frame, interpolation="nearest")
        ax.figure.colorbar(im, ax=ax, label=panel.heat_title, shrink=0.8)
    for layer in panel.layers:
        _mpl_layer(ax, layer)
    if panel.xrange is not None:
        ax.set_xlim(*panel.xrange)
    if panel.yrange is not None:
        ax.set_ylim(*panel.yrange)
    if panel.extent is not None:
        x0, x1, y0, y1 = panel.extent
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_aspect("equal")
    # a title longer than its panel wraps: on a row of panels it ran into its neighbour's, and the
    # last one's off the figure
    ax.set_title(_wrap(panel.title, TITLE_CHARS, floor=0), fontsize=9)
    ax.set_xlabel(panel.xlabel, fontsize=8)
    ax.set_ylabel(panel.ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    if legend and panel.layers:
        ax.legend(loc="upper right", fontsize=6, framealpha=0.7)


def render_matplotlib(
    spec: FigureSpec, path: Path, fmt: str = "png", panel_inches: float = 3.2, dpi: int = 110
) -> Path:
    import matplotlib.pyplot as plt

    fig = matplotlib_figure(spec, panel_inches)
    metadata = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata))
    plt.close(fig)
    return path


def matplotlib_figure(spec: FigureSpec, panel_inches: float = 3.2):
    """The spec as a matplotlib figure (Agg), as PNG and SVG files draw it; the caller closes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(spec.panels)
    ncols = min(spec.ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel_inches * ncols, panel_inches * nrows + 1.0), squeeze=False, layout="constrained"
    )
    labels_all = {layer.label for p in spec.panels for layer in p.layers}
    # one legend for the whole figure, above the panels, whenever its entries are few: inside an
    # axes a legend covered points (scene_dilation's its top right dots)
    images = len(labels_all) <= 8
    for i, (ax, panel) in enumerate(zip(axes.flat, spec.panels, strict=False)):
        # one legend per distinct set of labels keeps panels readable; over images, one legend for
        # the whole figure above the panels instead, so that it never hides the image or the points
        labels = tuple(layer.label for layer in panel.layers)
        earlier = {tuple(layer.label for layer in p.layers) for p in spec.panels[:i]}
        _mpl_panel(ax, panel, legend=labels not in earlier and not images)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    legend_shown = False
    if images:
        entries: dict[str, object] = {}
        for ax in list(axes.flat)[:n]:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                if label and not label.startswith("_"):
                    entries.setdefault(label, handle)
        if entries:
            _figure_legend(fig, entries, spec.title)
            legend_shown = True  # the title heads the legend: a suptitle would collide with it
    if not legend_shown:
        fig.suptitle(spec.title, fontsize=12)
    fig.supxlabel(_wrap(spec.caption, int(15 * panel_inches * ncols)), fontsize=7.5)
    return fig


def _figure_legend(fig, entries: dict[str, object], title: str, max_columns: int = 4):
    """One legend above the panels, headed by ``title``, in as many columns (up to
    ``max_columns``) as fit the figure's width: long labels, such as a user model's padding
    counts, would otherwise run off both edges. Returns the legend."""

    def legend(ncols: int):
        return fig.legend(
            list(entries.values()), list(entries), loc="outside upper center", ncols=ncols,
            fontsize=7, frameon=False, title=title, title_fontsize=12,
        )  # fmt: skip

    renderer = fig.canvas.get_renderer()
    for ncols in range(min(max_columns, len(entries)), 1, -1):
        tried = legend(ncols)
        if tried.get_window_extent(renderer).width <= fig.bbox.width:
            return tried
        tried.remove()
    return legend(1)


#: Characters a panel title's line holds in a matplotlib figure (9 pt on a 3.2 in panel).
TITLE_CHARS = 36


def _wrap(text: str, width: int, floor: int = 40) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width=max(floor, width)))


def plotly_figure(
    spec: FigureSpec,
    interactive: bool = False,
    height: int | None = None,
    text_chars: int | None = None,
    title_lines: int = 1,
):
    """A Plotly figure of the spec. ``interactive=True`` (the app): no title or caption (the page
    shows them), width follows the page, clicks select points (``units`` layers carry their
    (row, col) as customdata), no drag-zoom. ``text_chars``: panel titles and legend entries are
    wrapped to lines of at most this many characters (Plotly does not wrap, and a chart a third
    of a page wide holds about 24); ``title_lines``: room above the panels for at least that
    many title lines (charts side by side then line up)."""
    # built as plain data and validated once: building it trace by trace with make_subplots and
    # update_* re-validated every property on every call (~45 ms per figure, the app's largest
    # server cost after the capture)
    return go.Figure(plotly_dict(spec, interactive, height, text_chars, title_lines))


def title_line_count(spec: FigureSpec, text_chars: int | None) -> int:
    """How many lines the longest panel title of ``spec`` takes, wrapped to ``text_chars``."""
    return max((_lines(p.title, text_chars).count("<br>") + 1 for p in spec.panels if p.title), default=1)


def _lines(text: str, chars: int | None) -> str:
    """``text`` wrapped to lines of at most ``chars`` characters, joined by Plotly's ``<br>``."""
    if not chars or len(text) <= chars:
        return text
    import textwrap

    return "<br>".join(textwrap.wrap(text, width=chars, break_long_words=True))


def plotly_dict(
    spec: FigureSpec,
    interactive: bool = False,
    height: int | None = None,
    text_chars: int | None = None,
    title_lines: int = 1,
) -> dict:
    """The spec as a Plotly figure in its JSON form: ``{"data": [...], "layout": {...}}``, one
    subplot per panel on a grid of ``spec.ncols`` columns."""
    n = len(spec.panels)
    ncols = min(spec.ncols, n)
    nrows = math.ceil(n / ncols)
    # colour bars sit between panels: leave them room
    h_gap = 0.22 if any(p.heat is not None for p in spec.panels) else 0.12 / max(ncols - 1, 1) + 0.04
    v_gap = 0.3 / nrows
    width = (1 - h_gap * (ncols - 1)) / ncols
    tall = (1 - v_gap * (nrows - 1)) / nrows
    data: list[dict] = []
    layout: dict = {"annotations": [], "barmode": "group"}
    if interactive:
        # a few settings in place of a template: validating Plotly's template cost ~8 ms a chart,
        # and Streamlit's theme (which would restyle it) draws every chart a second time
        layout |= {
            "paper_bgcolor": "white", "plot_bgcolor": "white",
            "font": {"family": "Source Sans Pro, sans-serif", "size": 12, "color": "#31333f"},
        }  # fmt: skip
    else:
        layout["template"] = "plotly_white"
    shown: set[str] = set()
    for i, panel in enumerate(spec.panels):
        r, c = divmod(i, ncols)
        x_dom = [c * (width + h_gap), c * (width + h_gap) + width]
        y_top = 1 - r * (tall + v_gap)
        y_dom = [y_top - tall, y_top]
        suffix = "" if i == 0 else str(i + 1)
        xaxis, yaxis = _panel_axes(panel, f"x{suffix}")
        if interactive and panel.extent is not None:
            # an image's axes are its pixels (the page says so): their titles took a small chart's
            # room and ran into its tick labels
            xaxis["title"] = yaxis["title"] = {"text": ""}
        layout[f"xaxis{suffix}"] = {**xaxis, "anchor": f"y{suffix}", "domain": x_dom}
        layout[f"yaxis{suffix}"] = {**yaxis, "anchor": f"x{suffix}", "domain": y_dom}
        if panel.title:
            title = _lines(panel.title, text_chars)
            title_lines = max(title_lines, title.count("<br>") + 1)
            layout["annotations"].append(
                {
                    "text": title, "x": sum(x_dom) / 2, "y": y_top, "xref": "paper", "yref": "paper",
                    "xanchor": "center", "yanchor": "bottom", "showarrow": False, "font": {"size": 13},
                }
            )  # fmt: skip
        # a colour bar stands just right of its own panel, as tall as the panel's row
        colorbar = {"x": x_dom[1] + 0.01, "y": sum(y_dom) / 2, "len": 0.9 * tall}
        for trace in panel_traces(panel, shown, colorbar):
            if text_chars and trace.get("showlegend", True) and trace.get("name"):
                trace = {**trace, "name": _lines(trace["name"], text_chars + 4)}
            data.append({**trace, "xaxis": f"x{suffix}", "yaxis": f"y{suffix}"})
    if interactive:
        height = height or 460 * nrows + 60
        # the tick labels, and an x axis title where one is drawn (charts that are not images)
        below = 26 + (34 if any(p.xlabel and p.extent is None for p in spec.panels) else 0)
        layout |= {
            "height": height,
            # the top margin holds the panel titles, however many lines they were wrapped to
            "margin": {"l": 40, "r": 10, "t": 24 + 17 * title_lines, "b": 44},
            # the legend just under the x tick labels (image panels have no axis titles here);
            # Plotly grows the bottom margin to hold it. In fractions of the plot area's height:
            # if the area is squeezed to keep pixels square, the axis moves up, away from it
            "legend": {
                "orientation": "h",
                "x": 0,
                "yanchor": "top",
                "y": -below / max(height - 68 - 17 * title_lines, 60),
            },
            "clickmode": "event+select",
            "dragmode": False,
        }
        return {"data": data, "layout": layout}
    # the caption under the lowest panels' axis titles, wrapped to the figure's width (Plotly
    # does not wrap), with the bottom margin grown to hold it
    lines = _wrap(spec.caption, (330 * ncols) // 6).split("\n")
    layout |= {
        "title": {"text": spec.title},
        "height": 330 * nrows + 120 + 14 * len(lines),
        "width": 330 * ncols + 80,
        "margin": {"b": 70 + 14 * len(lines)},
    }
    layout["annotations"].append(
        {
            "text": "<br>".join(lines), "xref": "paper", "yref": "paper", "x": 0, "y": 0, "yanchor": "top",
            "yshift": -50, "xanchor": "left", "showarrow": False, "align": "left", "font": {"size": 10},
        }
    )  # fmt: skip
    return {"data": data, "layout": layout}


def _panel_axes(panel: Panel, x_id: str) -> tuple[dict, dict]:
    """The panel's x and y axis settings: titles, ranges, and for image panels equal pixel
    aspect (the y axis scaled to its own x axis)."""
    # the light grid of Plotly's white template (no automargin: its relayout passes cost a chart
    # 100 ms and more; the interactive margins below hold tick labels and axis titles)
    grid = {"gridcolor": "#e6e9ef", "zeroline": False}
    xaxis: dict = {"title": {"text": panel.xlabel}, **grid}
    yaxis: dict = {"title": {"text": panel.ylabel}, **grid}
    if panel.extent is not None:
        x0, x1, y0, y1 = panel.extent
        xaxis |= {"range": [x0, x1], "constrain": "domain"}
        yaxis |= {"range": [y0, y1], "scaleanchor": x_id, "constrain": "domain"}
    if panel.xrange is not None:
        xaxis["range"] = list(panel.xrange)
    if panel.yrange is not None:
        yaxis["range"] = list(panel.yrange)
    return xaxis, yaxis


def panel_traces(panel: Panel, shown: set[str] | None = None, colorbar: dict | None = None) -> list[dict]:
    """Plotly traces (JSON form) drawing one panel: its image, heat map, segmentation overlay and
    layers. A layer's label enters the legend once: labels already in ``shown`` (updated here)
    are drawn without a legend entry. ``colorbar``: where the heat map's colour bar goes
    (Plotly's x, y, len)."""
    shown = shown if shown is not None else set()
    traces: list[dict] = []
    if panel.image is not None:
        # 8-bit levels: a quarter of float32's bytes, and the screen shows no more
        levels = np.round(np.clip(panel.image, 0, 1) * 255).astype(np.uint8)
        if levels.ndim == 3:  # colour: an image trace, pixel centres at integers like the heat map's
            traces.append({"type": "image", "z": levels, "x0": 0, "y0": 0, "dx": 1, "dy": 1, "hoverinfo": "skip"})
        else:
            traces.append(
                {"type": "heatmap", "z": levels, "colorscale": "gray", "zmin": 0, "zmax": 255, "showscale": False,
                 "hoverinfo": "skip"}
            )  # fmt: skip
    if panel.heat is not None:
        scale = {"hot": "Hot", "viridis": "Viridis"}.get(panel.heat_colors, panel.heat_colors)
        traces.append(
            {
                "type": "heatmap",
                "z": np.asarray(panel.heat, dtype=np.float32),
                "colorscale": scale,
                # the title runs up the bar's side: across its top it took more width than the
                # plot and ran over the top tick label
                "colorbar": {
                    "title": {"text": panel.heat_title, "side": "right", "font": {"size": 11}},
                    "thickness": 12,
                    "len": 0.8,
                    "x": 1.02,
                    **(colorbar or {}),
                },
                "hovertemplate": f"x %{{x}}, y %{{y}}: %{{z:.2f}} {panel.heat_title}<extra></extra>",
                "name": panel.title,
                **(
                    {"x0": panel.heat_origin[0], "y0": panel.heat_origin[1], "dx": 1, "dy": 1}
                    if panel.heat_origin is not None
                    else {}
                ),
            }
        )
    if panel.labels is not None:
        # a second heat map over the image (Plotly draws image traces under heat maps): class k in
        # colour k, NaN (no class) transparent
        n = len(panel.label_colors)
        scale = [[edge / n, c] for k, c in enumerate(panel.label_colors) for edge in (k, k + 1)]
        traces.append(
            {
                "type": "heatmap",
                "z": (panel.labels + 0.5).astype(np.float32),  # class k sits mid-band in the discrete scale
                "zmin": 0,
                "zmax": n,
                "colorscale": scale,
                "opacity": 0.45,
                "showscale": False,
                "hoverinfo": "skip",
                "name": "segmentation",
            }
        )
    for layer in panel.layers:
        traces.extend(_layer_traces(layer, legend=layer.label not in shown))
        shown.add(layer.label)
    return traces


def _layer_traces(layer: Layer, legend: bool) -> list[dict]:
    common = {"type": "scatter", "name": layer.label, "showlegend": legend, "legendgroup": layer.label}
    x, y = _f32(layer.x), _f32(layer.y)
    if layer.kind == "points":
        marker: dict = {"color": layer.color, "size": (_f32(layer.sizes) / 4 if layer.sizes is not None else 4)}
        if layer.sizes is not None:  # merged samples, sized by count: a thin outline keeps neighbours apart
            marker["line"] = {"width": 0.5, "color": "white"}
        if layer.alphas is not None:
            # one number per point, not one colour string per point (strings are validated and
            # sent one by one)
            marker["opacity"] = _f32(layer.alphas)
        # tens of thousands of points (a grouped layer's deep levels): WebGL draws them, SVG cannot
        kind = {"type": "scattergl"} if len(layer.x) > WEBGL_POINTS else {}
        return [{**common, **kind, "x": x, "y": y, "mode": "markers", "marker": marker, "hoverinfo": "skip"}]
    if layer.kind == "units":
        return [
            {
                **common,
                "x": x,
                "y": y,
                "mode": "markers",
                # small cells: Plotly picks the point whose marker edge is nearest the pointer, so
                # markers wider than the units' spacing (a chart a panel on a narrow screen) tied,
                # and a click chose a neighbouring unit; a small one picks the nearest centre
                "marker": {"symbol": "square", "size": 6, "color": "rgba(44,160,44,0.12)", "line": {"width": 0}},
                "customdata": np.asarray(layer.custom),
                "hovertemplate": "unit (row %{customdata[0]}, col %{customdata[1]})<extra></extra>",
            }
        ]
    if layer.kind == "unit":
        marker = {"symbol": "square-open", "size": 14, "color": layer.color, "line": {"width": 3}}
        return [{**common, "x": x, "y": y, "mode": "markers", "marker": marker}]
    if layer.kind == "segments":
        xs = np.stack([x, _f32(layer.x2), np.full_like(x, np.nan)], 1).flatten()
        ys = np.stack([y, _f32(layer.y2), np.full_like(y, np.nan)], 1).flatten()
        line = {"color": layer.color, "width": 0.6}
        return [{**common, "x": xs, "y": ys, "mode": "lines", "line": line, "hoverinfo": "skip"}]
    if layer.kind == "arrows":
        tip_x, tip_y = x + _f32(layer.x2), y + _f32(layer.y2)
        xs = np.stack([x, tip_x, np.full_like(x, np.nan)], 1).flatten()
        ys = np.stack([y, tip_y, np.full_like(y, np.nan)], 1).flatten()
        return [
            {**common, "x": xs, "y": ys, "mode": "lines", "line": {"color": layer.color, "width": 1.2}},
            {"type": "scatter", "x": tip_x, "y": tip_y, "mode": "markers", "marker": {"size": 3, "color": layer.color},
             "showlegend": False, "hoverinfo": "skip"},
        ]  # fmt: skip
    if layer.kind == "curve":
        return [{**common, "x": x, "y": y, "mode": "lines+markers", "line": {"color": layer.color}}]
    if layer.kind == "bars":
        return [{**common, "type": "bar", "x": x, "y": y, "marker": {"color": layer.color}}]
    raise ValueError(f"unknown layer kind {layer.kind!r}")


def _f32(values) -> np.ndarray:
    """Coordinates as float32: Plotly sends numeric arrays packed, and float64 doubles the bytes
    for precision no screen shows."""
    return np.asarray(values, dtype=np.float32)


def render_html(spec: FigureSpec, path: Path) -> Path:
    fig = plotly_figure(spec)
    # Plotly's JS is embedded so the file works offline; a fixed div id keeps output deterministic.
    html = fig.to_html(include_plotlyjs=True, full_html=True, div_id=f"deformscope-{spec.name}")
    atomic_write(path, lambda tmp: Path(tmp).write_text(html))
    return path


def render(spec: FigureSpec, out_dir: Path, fmt: str = "png") -> Path:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    path = Path(out_dir) / f"{spec.name}.{fmt}"
    if fmt == "html":
        return render_html(spec, path)
    return render_matplotlib(spec, path, fmt)


def plotly_widget(fig: go.Figure) -> go.FigureWidget:
    """A live Plotly widget of a figure (Jupyter; needs anywidget), for ``viz.notebook``."""
    return go.FigureWidget(fig)


def plotly_json(fig: go.Figure) -> str:
    """The figure serialised as Streamlit sends it to the browser (what the benchmarks time)."""
    import plotly.io as pio

    return pio.to_json(fig)
