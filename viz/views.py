"""The unit views: what the app, the notebook and the export show of one top-layer unit. One
class a view, one registry: a view knows its name and words, computes its result once per update
(``compute``) and turns it into a panel (``panel``) and a figure (``figure``). The pages loop
over :data:`REGISTRY`; no view's name is compared anywhere else.

Adding a view is one subclass of :class:`View` and one line in :data:`REGISTRY` (see
``docs/architecture.md``' worked example).

==============================  ==============================================================
view                            what it computes (``viz.support`` / ``viz.backproject``)
==============================  ==============================================================
sampling points                 the unit's back-projected points (the twin's too)
effective receptive field       ``|d response / d pixel|`` (Zhu et al., DCNv2)
effective sampling locations    every sample's gradient x sampled value
saliency region                 the smallest square keeping the response within 10%
==============================  ==============================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from viz.backproject import backproject
from viz.capture import Capture
from viz.figures import (
    POINT_RED,
    UNIT_GREEN,
    FigureSpec,
    Layer,
    Panel,
    _extent,
    box_layer,
    esl_layer,
    image_panel,
    unit_points_figure,
    units_layer,
)
from viz.geometry import BILINEAR


class View:
    """One way of showing what a unit does. Subclasses set ``name`` and ``caption`` and write
    ``compute`` and ``panel``; ``figure`` draws one panel per model, with clickable units."""

    name: str = ""
    caption: str = ""  # what the chart shows, in plain words (the figure's caption)
    #: whether the view draws the sampling points (it then also has a group choice and levels)
    draws_points: bool = False
    #: whether it needs the model itself, not only its capture (gradients, masked re-runs)
    needs_model: bool = True

    def compute(
        self,
        model: nn.Module | None,
        cap: Capture,
        unit: tuple[int, int],
        method: str = BILINEAR,
        levels: int | None = None,
        group: int | None = None,
    ) -> dict[str, Any]:
        """The view's result for one model's capture of one image (``cap`` holds one image)."""
        raise NotImplementedError

    def panel(self, result: dict[str, Any], title: str, unit: tuple[int, int]) -> Panel:
        raise NotImplementedError

    def plain(self, result: dict[str, Any]) -> str:
        """One plain-language sentence about the result (captions)."""
        return ""

    def figure(self, entries: list[dict[str, Any]], unit: tuple[int, int], **options: Any) -> FigureSpec:
        """One panel per entry (a :meth:`compute` result plus a ``title``), units clickable."""
        panels = []
        for e in entries:
            panel = self.panel(e, e["title"], unit)
            panel.layers.insert(0, units_layer(e["cap"]))
            panels.append(panel)
        return FigureSpec("unit_view", f"Unit {unit}: {self.name}", self.caption, panels, ncols=len(panels))


def _unit_mark(cap: Capture, unit: tuple[int, int]) -> Layer:
    from viz.support import unit_centre_pixel

    cy, cx = unit_centre_pixel(cap, unit)
    return Layer("unit", np.array([cx]), np.array([cy]), "the unit", UNIT_GREEN)


class SamplingPoints(View):
    name = "sampling points"
    caption = "where the layers sample: the unit's back-projected points, beside the regular twin's lattice"
    draws_points = True
    needs_model = False

    def compute(self, model, cap, unit, method=BILINEAR, levels=None, group=None):
        grouped = group if cap.top.groups > 1 else None
        return {"cap": cap, "pts": backproject(cap, unit, levels=levels, method=method, group=grouped), "group": group}

    def figure(self, entries, unit, overlay: bool = True, **options: Any) -> FigureSpec:
        """The deformable model's points beside its twin's (two entries): the points computed
        once, drawn here and counted in the page's caption."""
        deform, twin = entries
        pts = deform["pts"]
        return unit_points_figure(
            deform["cap"], twin["cap"], unit, pts.levels, pts.method, overlay, (deform["title"], twin["title"]),
            group=deform.get("group"), points=(deform["pts"], twin["pts"]),
        )  # fmt: skip


class EffectiveReceptiveField(View):
    name = "effective receptive field"
    caption = "|gradient of the unit's response| per input pixel (max 1); the title gives the pixels holding 90% of it"

    def compute(self, model, cap, unit, method=BILINEAR, levels=None, group=None):
        from viz.support import unit_support

        return {"cap": cap, "support": unit_support(model, cap.images[0], unit)}

    def panel(self, result, title, unit):
        from viz.support import erf_area

        support, cap = result["support"], result["cap"]
        area = int(erf_area(support.erf)[0])
        return Panel(
            f"{title}: ERF, 90% on {area} px", None, [_unit_mark(cap, unit)], heat=support.erf_normalised()[0].numpy(),
            heat_title="|d response / d pixel| (max 1)", extent=_extent(cap),
        )  # fmt: skip

    def plain(self, result):
        from viz.support import erf_area

        return f"90% of this unit's sensitivity to the image lies on {int(erf_area(result['support'].erf)[0])} pixels."


class EffectiveSamplingLocations(View):
    name = "effective sampling locations"
    caption = (
        "the unit's sampling points sized and shaded by gradient x sampled value: the samples that matter stand out"
    )

    def compute(self, model, cap, unit, method=BILINEAR, levels=None, group=None):
        from viz.support import point_attributions, unit_support

        support = unit_support(model, cap.images[0], unit)
        pts = backproject(cap, unit, method="nearest" if method == "nearest" else "bilinear")
        return {"cap": cap, "support": support, "pts": pts, "attributions": point_attributions(pts, support, cap)}

    def panel(self, result, title, unit):
        layer, top = esl_layer(result["pts"], result["attributions"])
        return image_panel(
            f"{title}: {top}/{len(layer.x)} samples give half",
            result["cap"],
            0,
            [layer, _unit_mark(result["cap"], unit)],
        )

    def plain(self, result):
        layer, top = esl_layer(result["pts"], result["attributions"])
        return f"Half of this unit's response comes from {top} of its {len(layer.x)} samples."


class SaliencyRegion(View):
    name = "saliency region"
    caption = (
        "the smallest square around the unit whose masked image (black outside) keeps the unit's response within 10%"
    )

    def compute(self, model, cap, unit, method=BILINEAR, levels=None, group=None):
        from viz.support import saliency_region

        return {"cap": cap, "region": saliency_region(model, cap.images[0], unit)}

    def panel(self, result, title, unit):
        region, cap = result["region"], result["cap"]
        label = f"saliency region (response within {100 * region.tol:.0f}%)"
        return image_panel(
            f"{title}: saliency {region.area} px",
            cap,
            0,
            [box_layer(region.box, label, POINT_RED), _unit_mark(cap, unit)],
        )

    def plain(self, result):
        region = result["region"]
        return f"This unit's response stays within {100 * region.tol:.0f}% on a {region.area}-pixel square around it."


#: Every view, in the order the pages offer them.
REGISTRY: dict[str, View] = {
    v.name: v for v in (SamplingPoints(), EffectiveReceptiveField(), EffectiveSamplingLocations(), SaliencyRegion())
}
#: Their names (for radio buttons and option lists).
VIEWS: tuple[str, ...] = tuple(REGISTRY)
#: The views of what a unit really uses (DCNv2's, Zhu et al. 2019).
SUPPORT_VIEWS: tuple[View, ...] = tuple(v for v in REGISTRY.values() if not v.draws_points)


def get_view(name: str) -> View:
    """The view called ``name``; a clear error for an unknown one."""
    if name not in REGISTRY:
        raise ValueError(f"view must be one of {VIEWS}, got {name!r}")
    return REGISTRY[name]


def support_figure(rows: list[dict], method: str = BILINEAR) -> FigureSpec:
    """DCNv2's three views for several units: one row per entry of ``rows`` (keys ``title``,
    ``cap``, ``unit`` and each support view's results, as :meth:`View.compute` gives them),
    columns ERF, effective sampling locations, saliency region."""
    panels = [view.panel(r, r["title"], r["unit"]) for r in rows for view in SUPPORT_VIEWS]
    return FigureSpec(
        "support",
        "What a unit really uses: effective receptive field, effective sampling locations, saliency region",
        "Left: |gradient of the unit's response| per input pixel. Middle: its 9^3 sampling locations, each sized by "
        f"gradient x sampled value ({method} back-projection). Right: the smallest square around the unit whose masked "
        "image keeps the response within 10%. After Zhu et al., DCNv2, 2019, Fig. 2.",
        panels,
        ncols=3,
    )


__all__ = [
    "REGISTRY",
    "SUPPORT_VIEWS",
    "VIEWS",
    "EffectiveReceptiveField",
    "EffectiveSamplingLocations",
    "SaliencyRegion",
    "SamplingPoints",
    "View",
    "get_view",
    "support_figure",
]
