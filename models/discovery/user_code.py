"""The user's code and weights: imported only when the user names them on the command line."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from models.discovery.errors import DiscoveryError


def import_factory(spec: str) -> Callable[[], nn.Module]:
    """``"package.module:factory"`` -> the callable. Imports user code: call only with a spec the
    user typed (command line), never with one from an upload or a file."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise DiscoveryError(f"--model must look like package.module:factory, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DiscoveryError(f"cannot import {module_name!r} ({exc}); is it on PYTHONPATH?") from None
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise DiscoveryError(f"{module_name!r} has no {attr!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise DiscoveryError(f"{spec!r} is not callable")
    return factory  # type: ignore[return-value]


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state dict from ``path`` (read with ``weights_only=True``: tensors only, no code).

    Accepts a bare state dict or one under ``"state_dict"`` / ``"model"``; a ``"module."``
    prefix (DataParallel) is stripped. Names and shapes must match exactly.
    """
    from models.checkpoint import CheckpointError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights file at {str(path)!r}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise CheckpointError(
            f"could not read {str(path)!r} as weights: truncated, corrupt, or it holds Python objects "
            "(only plain tensors are loaded, for safety)"
        ) from None
    if isinstance(payload, dict):
        for key in ("state_dict", "model"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not all(torch.is_tensor(v) for v in payload.values()):
        raise CheckpointError(f"{str(path)!r} does not hold a state dict (names -> tensors)")
    state = {k.removeprefix("module."): v for k, v in payload.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).split("\n\t")[:3]
        raise CheckpointError(f"weights in {str(path)!r} do not fit the model: {' '.join(first)}") from None
