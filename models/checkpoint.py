"""Saving and loading checkpoints: plain dicts of tensors and primitives, read with
``torch.load(weights_only=True)`` so no arbitrary object is ever unpickled.

A checkpoint is ``{"format": "deformscope-checkpoint", "version": 1, "config": {...},
"state_dict": {...}, "meta": {...}}``: ``config`` rebuilds the model
(``arch``, ``widths``, ``in_channels``, ``num_classes``, ``mean``, ``std``), ``meta`` records
training data, augmentation, seed, epochs and measured test accuracy.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.nets.digits import ALL_ARCHS, MnistNet
from models.runtime import atomic_write

#: Where the shipped checkpoints live; ``name`` means ``CHECKPOINT_DIR / f"{name}.pt"``.
# checkpoints/ beside the packages in a checkout; models/checkpoints/ once installed (pyproject.toml)
_CHECKOUT_DIR = Path(__file__).resolve().parents[1] / "checkpoints"
CHECKPOINT_DIR = _CHECKOUT_DIR if _CHECKOUT_DIR.is_dir() else Path(__file__).resolve().parent / "checkpoints"
FORMAT = "deformscope-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint could not be loaded; the message says why in plain words."""


def save_checkpoint(model: nn.Module, path: str | Path, config: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write a checkpoint atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": dict(config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},  # CPU, even from a GPU
        "meta": dict(meta),
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, validated; raises :class:`CheckpointError` with a clear reason."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {str(path)!r}: the file does not exist")
    if path.is_dir():
        raise CheckpointError(f"{str(path)!r} is a folder, not a checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if not found:  # garbage bytes also surface as unpickling errors
            raise CheckpointError(
                f"could not read {str(path)!r}: the file is truncated, corrupt or not a PyTorch checkpoint"
            ) from None
        raise CheckpointError(
            f"{str(path)!r} is not a deformscope checkpoint: it holds a Python object of type "
            f"{found.group(1)}, and only plain tensors and values are loaded, for safety"
        ) from None
    except Exception:  # torch's unpickler raises many types on garbage input; their text helps nobody
        raise CheckpointError(
            f"could not read {str(path)!r}: the file is truncated, corrupt or not a PyTorch checkpoint; "
            "copy or download it again, or retrain it with python -m models.train"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is a PyTorch file but not a deformscope checkpoint "
            "(it has no 'format': 'deformscope-checkpoint' entry)"
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint version {payload.get('version')!r}; this code reads {VERSION}"
        )
    for key in ("config", "state_dict", "meta"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"{str(path)!r} is damaged: its {key!r} entry is missing")
    return payload


def _families() -> dict[str, type[nn.Module]]:
    """Model family name (``config["family"]``) -> class with ``from_config``. Checkpoints written
    before families existed are digit classifiers."""
    from models.nets.roi import RoiNet
    from models.nets.scenes import SceneNet

    return {MnistNet.family: MnistNet, SceneNet.family: SceneNet, RoiNet.family: RoiNet}


def model_from_config(config: dict[str, Any]) -> nn.Module:
    """Build an untrained model from a checkpoint's ``config``."""
    families = _families()
    family = config.get("family", MnistNet.family)
    if family not in families:
        raise CheckpointError(f"unknown model family {family!r} in checkpoint; this code knows {tuple(families)}")
    arch = config.get("arch")
    if arch not in ALL_ARCHS:
        raise CheckpointError(f"unknown architecture {arch!r} in checkpoint; this code knows {ALL_ARCHS}")
    try:
        return families[family].from_config(config)  # type: ignore[attr-defined]
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint config cannot build a model: {exc}") from None


@torch.inference_mode(False)  # the model built here must be differentiable whatever mode the caller is in
def load_checkpoint(path: str | Path) -> nn.Module:
    """Load a checkpoint into its model, in eval mode. The one loader everyone uses.

    The checkpoint's ``meta`` (training data, augmentation, accuracy, ...) is attached to the
    model as ``model.checkpoint_meta`` and its ``config`` as ``model.checkpoint_config``.

    Raises:
        CheckpointError: missing, truncated or foreign file, unknown architecture or weights
            whose names or shapes do not match the architecture.
    """
    payload = read_checkpoint(path)
    model = model_from_config(payload["config"])
    state = payload["state_dict"]
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and (not torch.is_tensor(state[k]) or state[k].shape != expected[k].shape)
    ]
    if missing or unexpected or wrong:
        details = "; ".join(
            part
            for part in (
                f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}" if missing else "",
                f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}" if unexpected else "",
                f"shape mismatch {wrong[:3]}{'...' if len(wrong) > 3 else ''}" if wrong else "",
            )
            if part
        )
        raise CheckpointError(
            f"weights in {str(path)!r} do not fit architecture {payload['config']['arch']!r}: {details}"
        )
    model.load_state_dict(state)
    model.eval()
    model.checkpoint_meta = payload["meta"]  # type: ignore[assignment]
    model.checkpoint_config = payload["config"]  # type: ignore[assignment]
    return model
