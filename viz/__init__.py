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

from pathlib import Path

import torch
from torch import nn

from models.checkpoint import CHECKPOINT_DIR as SHIPPED_DIR
from models.checkpoint import CheckpointError, load_checkpoint
from models.runtime import resolve_device
from viz.backproject import Points, backproject, regular_grid
from viz.capture import Capture, LayerCapture, capture
from viz.geometry import METHODS
from viz.preprocess import PreprocessError, preprocess, preprocess_scene
from viz.stats import dilation_summary, effective_dilation, layer_points, on_digit_units, sampling_density
from viz.user_model import load_user_model, prepare_for

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
    "Capture",
    "CheckpointError",
    "LayerCapture",
    "Points",
    "PreprocessError",
    "backproject",
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
