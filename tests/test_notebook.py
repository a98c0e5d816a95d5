"""The notebook API (``viz.notebook``) and the example notebook, executed as a user would."""

from __future__ import annotations

import nbformat
import pytest
import torch
from nbclient import NotebookClient

import viz
from tests.conftest import REPO


@pytest.fixture(scope="module")
def scene():
    return viz.explore(viz.load("scene_deform"), viz.load_scene_samples().images[10])


def test_explore_starts_on_the_centre_unit_and_draws_the_points_view(scene):
    assert scene.unit == viz.stats.centre_unit(scene.cap)
    spec = scene.spec()
    assert spec.name == "unit_points" and len(spec.panels) == 2
    points = [layer for layer in spec.panels[0].layers if layer.kind == "points"]
    assert sum(len(layer.x) for layer in points) == 729


def test_a_click_on_a_unit_cell_selects_it(scene):
    """What Plotly's on_click hands over: the clicked trace and the index of the point."""
    widget = scene.widget()
    cells = next(t for t in scene._chart.data if t.customdata is not None)

    class Points:
        point_inds = [21]

    scene.on_click(cells, Points())
    assert scene.unit == tuple(int(v) for v in cells.customdata[21])
    assert widget.children[1] is scene._chart
    # the chart was redrawn for the new unit: its unit marker sits on the unit's pixel
    marker = next(t for t in scene._chart.data if t.name and t.name.startswith(f"unit {scene.unit}"))
    assert marker is not None


def test_settings_are_checked_and_refused_settings_change_nothing(scene):
    scene.select((2, 3), method="nearest")
    with pytest.raises(ValueError, match="levels must be 1..3"):
        scene.select(levels=5)
    with pytest.raises(ValueError, match="outside the top layer"):
        scene.select((40, 0))
    assert (scene.unit, scene.method, scene.levels) == ((2, 3), "nearest", None)


def test_any_module_is_discovered_and_a_group_kept():
    from examples.dcn_families import TinyFlashInternImage, randomise_offsets

    torch.manual_seed(0)
    model = randomise_offsets(TinyFlashInternImage(dw_kernel_size=3)).eval()
    ex = viz.explore(model, torch.rand(3, 32, 32), group=2, input_size=32, in_channels=3)
    assert ex.cap.top.family == "dcnv4" and ex.cap.top.groups == 4
    points = [layer for layer in ex.spec().panels[0].layers if layer.kind == "points"]
    assert sum(len(layer.x) for layer in points) == 9 * 36


@pytest.mark.slow
def test_the_example_notebook_runs():
    nb = nbformat.read(REPO / "examples" / "explore.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")  # committed clean
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widgets) >= 4  # every explore cell shows a live widget
