"""deformscope in a notebook: :func:`explore` shows a model's unit view where a click on a unit
moves it, with the method, level, group and view as controls; :func:`figure` turns any figure
spec into a Plotly figure for those who compose their own.

    import viz
    viz.explore(viz.load("scene_deform"), viz.load_scene_samples().images[10])
    viz.explore(my_model, "photo.png", input_size=224, in_channels=3)   # any nn.Module

In Jupyter with ``ipywidgets`` (and Plotly's ``anywidget``) the view is a live widget; without
them, or outside a notebook, it is a static Plotly figure of the same view (``.figure()``). The
model is captured once; a click or a control change recomputes the view only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from viz.capture import Capture, capture
from viz.figures import FigureSpec
from viz.geometry import BILINEAR, METHODS
from viz.stats import centre_unit
from viz.views import VIEWS, get_view


def figure(spec: FigureSpec, height: int | None = None) -> Any:
    """The interactive Plotly figure of any spec (``viz.figures``' builders return specs)."""
    from viz.render import plotly_figure

    fig = plotly_figure(spec, interactive=True, height=height)
    # in Jupyter, Plotly's white template as before (the app's charts carry a few styles of their own)
    return fig.update_layout(template="plotly_white")


def _as_model_and_input(model: nn.Module, image: Any, **discover_options: Any) -> tuple[nn.Module, Tensor]:
    """A model that follows the contract (one of ours, or any module made so by discovery) and
    its input ``(C, H, W)``: a tensor as it is, a file or a picture prepared for the model."""
    if not hasattr(model, "sampling_layers"):
        from models.discovery import discover

        model = discover(model.eval(), **discover_options)
    if isinstance(image, Tensor):
        return model, image[0] if image.dim() == 4 else image
    from models.discovery import DiscoveredModel
    from viz.user_model import prepare_for

    if isinstance(model, DiscoveredModel):
        return model, prepare_for(model, image)
    from viz.preprocess import preprocess, preprocess_scene

    if getattr(model, "family", None) == "scenes":
        return model, preprocess_scene(image)
    return model, preprocess(image)


class Explorer:
    """One model on one image: the chosen unit's view, and the controls that change it.

    Args:
        model: a shipped model (``viz.load``), a discovered one, or any ``nn.Module`` (discovered
            here with ``discover_options``: ``input_size``, ``in_channels``, ``mean``, ``std``).
        image: ``(C, H, W)`` in the model's input format, an image file or a PIL picture.
        unit: ``(row, col)`` of the top layer; default the unit at the ink's centre.
        method, levels, group, view: as in the app (``viz.METHODS``, 1..L, a group of a grouped
            top layer or None for all, one of ``viz.views.VIEWS``).
    """

    def __init__(
        self,
        model: nn.Module,
        image: Any,
        unit: tuple[int, int] | None = None,
        method: str = BILINEAR,
        levels: int | None = None,
        group: int | None = None,
        view: str = VIEWS[0],
        **discover_options: Any,
    ) -> None:
        self.model, self.image = _as_model_and_input(model, image, **discover_options)
        self.cap: Capture = capture(self.model, self.image)
        self.twin: Capture = self.cap.without_offsets()
        self.unit = tuple(unit) if unit is not None else centre_unit(self.cap)
        self.method, self.levels, self.group, self.view = method, levels, group, view
        self._widget: Any = None
        self._chart: Any = None
        self.check()

    def check(self) -> None:
        """Refuse a setting the model cannot show, with the reason."""
        ho, wo = self.cap.top.out_size
        if not (0 <= self.unit[0] < ho and 0 <= self.unit[1] < wo):
            raise ValueError(f"unit {self.unit} is outside the top layer's {ho}x{wo} map")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}")
        if self.levels is not None and not 1 <= self.levels <= len(self.cap.layers):
            raise ValueError(f"levels must be 1..{len(self.cap.layers)}")
        if self.group is not None and not 0 <= self.group < self.cap.top.groups:
            raise ValueError(f"group must be 0..{self.cap.top.groups - 1} or None")
        if self.view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}")

    def spec(self) -> FigureSpec:
        """The view of the chosen unit, as a figure spec."""
        shown = get_view(self.view)
        pairs = [(self.model, self.cap, "your model")]
        if shown.draws_points:  # beside it, the same layers with offsets zero
            pairs.append((None, self.twin, "offsets zero"))
        entries = [
            {**shown.compute(m, c, self.unit, self.method, self.levels, self.group), "title": title}
            for m, c, title in pairs
        ]
        return shown.figure(entries, self.unit, overlay=self.cap.logits.dim() == 4)

    def figure(self) -> Any:
        """The current view as a static Plotly figure."""
        return figure(self.spec(), height=520)

    def select(self, unit: tuple[int, int] | None = None, **settings: Any) -> Explorer:
        """Move the unit and/or change ``method``, ``levels``, ``group``, ``view``; redraws a shown
        widget. Returns the explorer, so calls chain."""
        old = (self.unit, self.method, self.levels, self.group, self.view)
        if unit is not None:
            self.unit = (int(unit[0]), int(unit[1]))
        for key, value in settings.items():
            if key not in ("method", "levels", "group", "view"):
                raise TypeError(f"unknown setting {key!r}")
            setattr(self, key, value)
        try:
            self.check()
        except ValueError:
            self.unit, self.method, self.levels, self.group, self.view = old
            raise
        if self._chart is not None:
            self._redraw()
        return self

    # ---------------------------------------------------------------- the live widget

    def on_click(self, trace: Any, points: Any, _selector: Any = None) -> None:
        """A click on a unit cell of the chart (Plotly's ``on_click``): select that unit."""
        if not getattr(points, "point_inds", None) or getattr(trace, "customdata", None) is None:
            return
        row, col = trace.customdata[points.point_inds[0]]
        self.select((int(row), int(col)))

    def _redraw(self) -> None:
        fig = self.figure()
        with self._chart.batch_update():
            self._chart.data = ()
            self._chart.add_traces(list(fig.data))
            self._chart.layout = fig.layout
        self._hook_clicks()

    def _hook_clicks(self) -> None:
        for trace in self._chart.data:
            if getattr(trace, "customdata", None) is not None:  # the clickable unit cells
                trace.on_click(self.on_click)

    def widget(self) -> Any:
        """The live view: controls above a chart whose unit cells are clickable. Needs ipywidgets
        (and anywidget for Plotly's FigureWidget); raises ImportError without them."""
        import ipywidgets as widgets

        from viz.render import plotly_widget

        self._chart = plotly_widget(self.figure())
        self._hook_clicks()
        levels = len(self.cap.layers)
        groups = self.cap.top.groups
        controls = {
            "method": widgets.Dropdown(options=list(METHODS), value=self.method, description="method"),
            "levels": widgets.IntSlider(value=self.levels or levels, min=1, max=levels, description="levels"),
            "view": widgets.Dropdown(options=list(VIEWS), value=self.view, description="view"),
        }
        if groups > 1:
            options = [("all groups", None), *((f"group {g} at the top", g) for g in range(groups))]
            controls["group"] = widgets.Dropdown(options=options, value=self.group, description="group")
        for key, control in controls.items():
            control.observe(lambda change, key=key: self.select(**{key: change["new"]}), names="value")
        self._widget = widgets.VBox([widgets.HBox(list(controls.values())), self._chart])
        return self._widget

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        try:
            shown = self._widget or self.widget()
        except ImportError:  # no widgets here: the same view, static
            shown = self.figure()
        return shown._repr_mimebundle_(include=include, exclude=exclude)


def explore(model: nn.Module, image: Tensor | str | Path | Any, **options: Any) -> Explorer:
    """Explore ``model`` on ``image`` (see :class:`Explorer` for the options). In a notebook the
    returned explorer shows itself as a live widget (or a static figure without widgets)."""
    with torch.inference_mode(False):
        return Explorer(model, image, **options)


__all__ = ["Explorer", "explore", "figure"]
