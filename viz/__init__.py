"""deformscope's core: capture offsets, back-project sampling points, whole-map statistics.

Data flows one way: image -> :func:`preprocess` (a digit) or :func:`preprocess_scene` (a
picture of several digits) -> model (:func:`load`) -> :func:`capture` -> :func:`backproject` /
:func:`sampling_density` / :func:`effective_dilation` / ``viz.scene_stats`` -> figure specs
(``viz.figures``) -> ``viz.render``. A model of your own: :func:`load_user_model` finds its
deformable layers (``models.discovery``); everything above then works on it. Coordinates: x = column, y = row, pixel centres at integers.
:func:`capture` is safe to call from many threads on one shared model. Models may run on a GPU
(``load(..., device="auto")``); captures and views always come back on the CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run from a folder of your own (``python -m viz.export`` puts it first on the path), a package of
# yours called ``models`` would be imported in place of deformscope's: deformscope's folder goes
# first, and your code is imported apart (``models.discovery.user_code``).
_OWN_ROOT = str(Path(__file__).resolve().parent.parent)
if "models" not in sys.modules and sys.path[:1] != [_OWN_ROOT]:
    sys.path.insert(0, _OWN_ROOT)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from models.checkpoint import CHECKPOINT_DIR as SHIPPED_DIR  # noqa: E402
from models.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from models.runtime import resolve_device  # noqa: E402
from viz.backproject import POINT_BUDGET, Points, backproject, deepest_level, path_count, regular_grid  # noqa: E402
from viz.capture import Capture, LayerCapture, capture  # noqa: E402
from viz.classes import ClassNamesError, load_class_names, top_k  # noqa: E402
from viz.geometry import METHODS  # noqa: E402
from viz.notebook import Explorer, explore, figure  # noqa: E402
from viz.preprocess import PreprocessError, preprocess, preprocess_scene  # noqa: E402
from viz.samples import load_samples, load_scene_samples, sample_photo  # noqa: E402
from viz.stats import dilation_summary, effective_dilation, layer_points, on_digit_units, sampling_density  # noqa: E402
from viz.user_model import load_user_model, prepare_for  # noqa: E402

CHECKPOINT_DIR = SHIPPED_DIR  # a module attribute, so tests and users can point it elsewhere


def shipped_checkpoints() -> dict[str, Path]:
    """Name -> path of every checkpoint shipped in ``checkpoints/``."""
    return {p.stem: p for p in sorted(CHECKPOINT_DIR.glob("*.pt"))}


@torch.inference_mode(False)  # built and moved outside the caller's inference mode: views differentiate it
def load(checkpoint: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A model in eval mode from a checkpoint path or the name of a shipped one
    (e.g. ``"deform_plain"``), on ``device`` (``"auto"``: the GPU when there is one). Captures
    and views of it come back on the CPU wherever it runs. Raises
    :class:`models.CheckpointError` with a clear message."""
    path = Path(checkpoint)
    if not path.exists() and str(checkpoint) in shipped_checkpoints():
        path = shipped_checkpoints()[str(checkpoint)]
    elif not path.exists() and path.suffix == "":
        names = ", ".join(shipped_checkpoints()) or "none"
        raise CheckpointError(f"no checkpoint file or shipped checkpoint named {str(checkpoint)!r} (shipped: {names})")
    return load_checkpoint(path).to(resolve_device(device))


__all__ = [
    "METHODS",
    "Explorer",
    "explore",
    "figure",
    "load_samples",
    "sample_photo",
    "ClassNamesError",
    "load_class_names",
    "top_k",
    "load_scene_samples",
    "Capture",
    "CheckpointError",
    "LayerCapture",
    "Points",
    "PreprocessError",
    "backproject",
    "deepest_level",
    "path_count",
    "POINT_BUDGET",
    "capture",
    "dilation_summary",
    "effective_dilation",
    "layer_points",
    "load",
    "load_user_model",
    "on_digit_units",
    "preprocess",
    "prepare_for",
    "preprocess_scene",
    "regular_grid",
    "sampling_density",
    "shipped_checkpoints",
]
