"""The user's code and weights: imported only when the user names them on the command line."""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from models.discovery.errors import DiscoveryError

#: deformscope's own top-level packages: user code under one of these names is imported apart.
OWN_PACKAGES = ("models", "viz", "examples")
_OWN_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds deformscope's packages
_IMPORT_LOCK = threading.Lock()


def _module_from_file(path: Path) -> tuple[str, Path]:
    """A ``.py`` file -> its dotted module name and the folder to import it from: the file's
    package chain (folders with ``__init__.py``) is kept, so ``a/models/net.py`` in a package
    ``models`` is ``models.net``, imported from ``a``."""
    path = path.resolve()
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts), folder


def _user_root(top: str) -> Path | None:
    """Where a user's package ``top`` that shares a name with one of ours lives: the first folder
    on the import path (the current one first) holding it that is not deformscope's own."""
    for entry in ["", *sys.path]:
        folder = Path(entry or ".").resolve()
        if folder == _OWN_ROOT:
            continue
        if (folder / top).is_dir() or (folder / f"{top}.py").is_file():
            return folder
    return None


def _import_apart(module_name: str, root: Path) -> ModuleType:
    """Import a user's module whose top-level name is one of deformscope's own (``models`` is
    common in research code): for the import only, deformscope's modules of that name step out
    of ``sys.modules`` and ``root`` goes first on the path, so the user's code and its own
    ``import models.x`` find the user's package; then deformscope's come back, and the user's
    stay reachable as ``deformscope_user.<name>``. Limit: user code that imports a module of
    that name later, at call time (a function-level import, ``importlib.import_module``), gets
    deformscope's; imports at the top of the user's modules, the usual kind, are unaffected."""
    top = module_name.split(".")[0]
    with _IMPORT_LOCK:
        ours = {k: v for k, v in sys.modules.items() if k == top or k.startswith(top + ".")}
        for k in ours:
            del sys.modules[k]
        sys.path.insert(0, str(root))
        importlib.invalidate_caches()
        try:
            return importlib.import_module(module_name)
        finally:
            sys.path.remove(str(root))
            theirs = {k: v for k, v in sys.modules.items() if k == top or k.startswith(top + ".")}
            for k, v in theirs.items():
                del sys.modules[k]
                sys.modules[f"deformscope_user.{k}"] = v
            sys.modules.update(ours)


def import_factory(spec: str) -> Callable[[], nn.Module]:
    """``"package.module:factory"`` or ``"path/to/file.py:factory"`` -> the callable. Imports user
    code: call only with a spec the user typed (command line), never with one from an upload or a
    file. A user package named like one of deformscope's own (``models``, ``viz``, ``examples``)
    is imported apart from it (:func:`_import_apart`)."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise DiscoveryError(f"--model must look like package.module:factory or path/to/file.py:factory, got {spec!r}")
    root: Path | None = None
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        path = Path(module_name)
        if not path.is_file():
            raise DiscoveryError(f"--model: no Python file at {module_name!r}")
        module_name, root = _module_from_file(path)
    top = module_name.split(".")[0]
    if top in OWN_PACKAGES and root is None:
        root = _user_root(top)
    try:
        if root is not None and (top in OWN_PACKAGES or module_name in sys.modules):
            module = _import_apart(module_name, root)
        elif root is not None:
            sys.path.insert(0, str(root))
            try:
                module = importlib.import_module(module_name)
            finally:
                sys.path.remove(str(root))
        else:
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
