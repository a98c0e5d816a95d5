"""viz.render's Plotly side: the figure data it builds is the spec's, panel for panel."""

from __future__ import annotations

import json

import numpy as np
import plotly.io as pio
import pytest

from viz.figures import FigureSpec, Layer, Panel
from viz.render import plotly_dict, plotly_figure


def _spec(ncols: int = 2) -> FigureSpec:
    rng = np.random.default_rng(0)
    image = rng.random((8, 10))
    labels = np.full((8, 10), np.nan)
    labels[2:5, 3:6] = 7
    points = Layer(
        "points", np.array([1.0, 2.5, 9.0]), np.array([0.5, 3.0, 7.5]), "pts", alphas=np.array([0.1, 0.5, 1])
    )
    units = Layer("units", np.array([1.5, 5.5]), np.array([1.5, 1.5]), "units", custom=np.array([[0, 0], [0, 1]]))
    arrows = Layer("arrows", np.array([1.0]), np.array([2.0]), "offsets", x2=np.array([0.5]), y2=np.array([-1.0]))
    panels = [
        Panel(
            "first", image, [units, points], extent=(-0.5, 9.5, 7.5, -0.5), labels=labels, label_colors=("#000",) * 10
        ),
        Panel("second", image, [points, arrows], extent=(-0.5, 9.5, 7.5, -0.5)),
        Panel("heat", None, [], heat=image, heat_title="gradient (max 1)", extent=(-0.5, 9.5, 7.5, -0.5)),
    ]
    return FigureSpec("t", "A title", "A caption", panels, ncols=ncols)


def test_one_subplot_per_panel_on_the_grid():
    fig = plotly_dict(_spec(ncols=2))
    lay = fig["layout"]
    # 3 panels on 2 columns: row 1 holds panels 1-2, row 2 panel 3; no axes for the empty cell
    assert {k for k in lay if k.startswith(("xaxis", "yaxis"))} == {
        "xaxis",
        "yaxis",
        "xaxis2",
        "yaxis2",
        "xaxis3",
        "yaxis3",
    }
    x1, x2, x3 = lay["xaxis"]["domain"], lay["xaxis2"]["domain"], lay["xaxis3"]["domain"]
    y1, y3 = lay["yaxis"]["domain"], lay["yaxis3"]["domain"]
    assert x1[0] == 0 and x2[1] == pytest.approx(1) and x1[1] < x2[0]  # side by side, apart
    assert x3 == x1 and y3[1] < y1[0]  # panel 3 below panel 1
    # each y axis keeps pixels square against its own x axis, and the image's y runs downwards
    assert lay["yaxis2"]["scaleanchor"] == "x2" and lay["yaxis2"]["range"] == [7.5, -0.5]
    assert [a["text"] for a in lay["annotations"]][:3] == ["first", "second", "heat"]
    assert lay["annotations"][3]["text"] == "A caption" and lay["title"]["text"] == "A title"
    # every trace is drawn in its own panel's axes
    axes = [(t["xaxis"], t["yaxis"]) for t in fig["data"]]
    assert axes.count(("x", "y")) == 4 and axes.count(("x2", "y2")) == 4 and axes.count(("x3", "y3")) == 1


def test_traces_carry_the_specs_data():
    spec = _spec()
    fig = plotly_dict(spec)
    first = [t for t in fig["data"] if t["xaxis"] == "x"]
    image, seg, units, points = first
    # the image as 8-bit grey levels
    assert image["z"].dtype == np.uint8 and image["zmax"] == 255
    np.testing.assert_array_equal(image["z"], np.round(spec.panels[0].image * 255))
    # class k drawn mid-band of colour k; no class stays NaN (transparent)
    assert seg["z"][3, 4] == 7.5 and np.isnan(seg["z"][0, 0])
    # clickable units keep their (row, col); the points their opacity, one number per point
    np.testing.assert_array_equal(units["customdata"], [[0, 0], [0, 1]])
    np.testing.assert_allclose(points["marker"]["opacity"], [0.1, 0.5, 1.0])
    np.testing.assert_allclose(points["x"], [1.0, 2.5, 9.0])
    # a label is in the legend once, however many panels draw it
    pts = [t for t in fig["data"] if t.get("name") == "pts"]
    assert [t["showlegend"] for t in pts] == [True, False]
    # an arrow: a line from its foot to its tip, and a marker at the tip
    line, tip = [t for t in fig["data"] if t["xaxis"] == "x2"][-2:]
    np.testing.assert_allclose(line["x"][:2], [1.0, 1.5])
    np.testing.assert_allclose(line["y"][:2], [2.0, 1.0])
    assert tip["x"][0] == 1.5 and tip["y"][0] == 1.0
    # the heat map's colour bar sits just right of its own panel
    heat = [t for t in fig["data"] if t["xaxis"] == "x3"][0]
    assert heat["colorbar"]["x"] == pytest.approx(fig["layout"]["xaxis3"]["domain"][1] + 0.01)
    assert heat["colorbar"]["title"]["text"] == "gradient (max 1)"
    y0, y1 = fig["layout"]["yaxis3"]["domain"]  # beside its own row, not over the figure's height
    assert heat["colorbar"]["y"] == pytest.approx((y0 + y1) / 2) and heat["colorbar"]["len"] < y1 - y0


def test_interactive_layout_and_a_valid_plotly_figure():
    spec = _spec()
    fig = plotly_figure(spec, interactive=True, height=333)  # Plotly validates every property here
    lay = fig.layout
    assert lay.height == 333 and lay.clickmode == "event+select" and lay.dragmode is False
    assert lay.title.text is None  # the page shows the title
    assert len(fig.data) == len(plotly_dict(spec)["data"])
    sent = json.loads(pio.to_json(fig))
    # numeric arrays travel packed (base64), not as long decimal lists
    points = [t for t in sent["data"] if t.get("name") == "pts"][0]
    assert set(points["x"]) == {"dtype", "bdata"} and points["x"]["dtype"] == "f4"


def test_a_long_caption_is_wrapped_below_the_panels():
    spec = _spec(ncols=3)
    spec.caption = "word " * 200
    lay = plotly_dict(spec)["layout"]
    caption = lay["annotations"][-1]
    lines = caption["text"].split("<br>")
    assert len(lines) > 3 and max(len(line) for line in lines) <= 330 * 3 // 6
    # under the axis titles, with room kept for every line
    assert caption["y"] == 0 and caption["yanchor"] == "top" and caption["yshift"] < 0
    assert lay["margin"]["b"] >= 14 * len(lines) + 50


def test_unknown_layer_kind_is_refused():
    spec = FigureSpec("t", "", "", [Panel("p", None, [Layer("blobs", np.zeros(1), np.zeros(1), "b")])], ncols=1)
    with pytest.raises(ValueError, match="unknown layer kind 'blobs'"):
        plotly_dict(spec)


USER_MODEL_LABELS = [  # the model_points figure of a user model (a 2-panel figure)
    "image frame",
    "729 sampling points (level 3); 280 read only zero padding",
    "unit (7, 7)",
    "729 samples on 49 positions (size = count)",
]


@pytest.mark.parametrize(
    ("labels", "want_columns"), [(["frame", "points", "unit", "samples"], 4), (USER_MODEL_LABELS, 2)]
)  # short labels: all four in a row; long ones: as many per row as fit, all inside the figure
def test_the_figure_legend_takes_as_many_columns_as_fit(labels, want_columns):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from viz.render import _figure_legend

    fig, axes = plt.subplots(1, 2, figsize=(6.4, 4.2), layout="constrained")
    entries = {label: axes[0].plot([0, 1], [i, i])[0] for i, label in enumerate(labels)}
    legend = _figure_legend(fig, entries, "title")
    assert legend._ncols == want_columns
    assert legend.get_window_extent(fig.canvas.get_renderer()).width <= fig.bbox.width
    plt.close(fig)


def test_a_colour_image_is_drawn_in_colour_by_both_renderers(tmp_path):
    """A colour model's input: an image trace of 8-bit RGB in Plotly (pixel centres at integers,
    like the grey heat map), colour pixels in the matplotlib export."""
    from PIL import Image

    from viz.render import panel_traces, render

    rgb = np.zeros((6, 8, 3))
    rgb[..., 0] = 1.0  # pure red
    rgb[2:4, 2:6] = (0.0, 0.0, 1.0)  # a blue block
    (trace,) = panel_traces(Panel("colour", rgb, [], extent=(-0.5, 7.5, 5.5, -0.5)))
    assert trace["type"] == "image" and trace["z"].shape == (6, 8, 3) and trace["z"].dtype == np.uint8
    assert (trace["x0"], trace["y0"], trace["dx"], trace["dy"]) == (0, 0, 1, 1)
    assert tuple(trace["z"][0, 0]) == (255, 0, 0) and tuple(trace["z"][3, 3]) == (0, 0, 255)
    (grey,) = panel_traces(Panel("grey", rgb[..., 0], [], extent=(-0.5, 7.5, 5.5, -0.5)))
    assert grey["type"] == "heatmap" and grey["z"].shape == (6, 8)
    png = render(FigureSpec("c", "Colour", "", [Panel("colour", rgb, [], extent=(-0.5, 7.5, 5.5, -0.5))], 1), tmp_path)
    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3).astype(int)
    assert ((pixels[:, 0] > 200) & (pixels[:, 1] < 60) & (pixels[:, 2] < 60)).sum() > 100  # red drawn red
    assert ((pixels[:, 2] > 200) & (pixels[:, 0] < 60) & (pixels[:, 1] < 60)).sum() > 20  # blue drawn blue


def _drawn_texts(fig) -> list:
    """The texts matplotlib draws: titles, axis labels, tick labels inside the view, legends,
    the figure's title, legend and caption (a tick label outside the view is made, not drawn)."""
    texts = list(fig.texts) + [t for t in (fig._suptitle, fig._supxlabel) if t is not None]
    for legend in fig.legends:
        texts += [*legend.get_texts(), legend.get_title()]
    for ax in fig.axes:
        if not ax.get_visible() or not ax.axison:
            continue
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            lo, hi = sorted(limits)
            for tick in axis.get_major_ticks():
                if lo - 1e-9 <= tick.get_loc() <= hi + 1e-9:
                    texts += [label for label in (tick.label1, tick.label2) if label.get_visible()]
        if ax.get_legend() is not None:
            texts += [*ax.get_legend().get_texts(), ax.get_legend().get_title()]
    unique = {id(t): t for t in texts if t.get_visible() and t.get_text().strip()}
    return list(unique.values())


def text_problems_of(fig, slack: float = 1.0) -> list[str]:
    """Texts of a matplotlib figure that overlap another by more than ``slack`` pixels each way,
    or leave the figure, as drawn (the SVG export's layout)."""
    import io

    fig.savefig(io.BytesIO(), format="svg")
    fig.canvas.draw()  # the extents below are in this renderer's pixels
    renderer, frame = fig.canvas.get_renderer(), fig.bbox
    boxes = [(t.get_text().replace("\n", " "), t.get_window_extent(renderer)) for t in _drawn_texts(fig)]
    problems = [
        f"{name!r} leaves the figure"
        for name, b in boxes
        if b.x0 < frame.x0 - slack or b.x1 > frame.x1 + slack or b.y0 < frame.y0 - slack or b.y1 > frame.y1 + slack
    ]
    for i, (name_a, a) in enumerate(boxes):
        for name_b, b in boxes[i + 1 :]:
            if min(a.x1, b.x1) - max(a.x0, b.x0) > slack and min(a.y1, b.y1) - max(a.y0, b.y0) > slack:
                problems.append(f"{name_a!r} overlaps {name_b!r}")
    return problems


@pytest.mark.slow
def test_no_text_of_any_exported_figure_overlaps_another_or_leaves_it():
    """Every figure viz.export writes, for the shipped models and for a model of yours, as its SVG
    export lays it out: titles, tick labels, axis titles, colour-bar labels, legends, caption."""
    import matplotlib.pyplot as plt

    import viz
    from viz import export
    from viz.render import matplotlib_figure

    args = export.build_parser().parse_args([])  # the export's defaults
    args.device = "cpu"
    makers = dict(export.scene_builders(args))
    digit, _ = export.load_digit("1")
    makers |= export.builders(viz.load("deform_rts"), viz.load("regular_rts"), viz.load("deform2_plain"), digit)
    user = viz.load_user_model("tests.user_models:six_layers")
    cap = viz.capture(user, viz.prepare_for(user, viz.load_samples().images[1, 0].numpy()))
    makers |= {f"yours: {k}": v for k, v in export.user_builders(cap, (7, 7)).items()}
    problems = []
    for name, make in makers.items():
        fig = matplotlib_figure(make())
        problems += [f"{name}: {p}" for p in text_problems_of(fig)]
        plt.close(fig)
    assert len(makers) == 13 and not problems, "\n".join(problems)


def test_the_text_check_finds_a_title_that_runs_off_and_one_that_overlaps():
    import matplotlib.pyplot as plt

    from viz.render import matplotlib_figure

    spec = _spec()
    long = "a title far too long for its panel, which runs into the next one's and off the figure's edge"
    spec.panels[0].title = spec.panels[1].title = long
    fig, axes = plt.subplots(1, 2, figsize=(4, 2))  # by hand, unwrapped
    axes[0].set_title(long)
    axes[1].set_title(long)
    problems = text_problems_of(fig)
    plt.close(fig)
    assert any("leaves the figure" in p for p in problems) and any("overlaps" in p for p in problems)
    fig = matplotlib_figure(spec)  # the renderer wraps them
    assert not [p for p in text_problems_of(fig) if "a title far" in p]
    plt.close(fig)
