"""Your own model: load it, discover its deformable layers, and feed it images.

    model = viz.load_user_model("examples.dcn_resnet:dcn_resnet", weights="examples/dcn_resnet_digits.pt")
    print(model.report())                    # the layers found, bottom to top, and their geometry
    cap = viz.capture(model, viz.prepare_for(model, "my_digit.png"))
    pts = viz.backproject(cap, (7, 7))

The returned model follows the sampling-layer contract (``models.discovery``), so every ``viz``
function works on it as on the shipped checkpoints. ``python -m viz.export`` and the app take
the same options (:func:`add_model_arguments`). User code is imported only from a spec the user
typed (``package.module:factory``); weights are read with ``weights_only=True``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from models.discovery import DiscoveredModel, DiscoveryError, discover, import_factory, load_weights
from models.runtime import resolve_device
from viz.classes import load_class_names
from viz.preprocess import PreprocessError, preprocess, preprocess_scene, to_ink

#: Normalisation used when none is given: MNIST's for grey models, ImageNet's for colour ones.
DEFAULT_NORMALISATION = {1: ((0.1307,), (0.3081,)), 3: ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
PREPARE_MODES = ("auto", "digit", "scene", "plain")


@torch.inference_mode(False)  # the model built here must be differentiable whatever mode the caller is in
def load_user_model(
    spec: str,
    weights: str | Path | None = None,
    input_size: int | tuple[int, int] = 28,
    in_channels: int = 1,
    mean: float | tuple[float, ...] | None = None,
    std: float | tuple[float, ...] | None = None,
    layers: list[str] | None = None,
    geometry: tuple[tuple[float, float], tuple[float, float]] | None = None,
    device: str | torch.device = "cpu",
    classes: str | Path | list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> DiscoveredModel:
    """Build ``spec``'s model (``"package.module:factory"``, called without arguments), load
    ``weights`` (a state dict), and :func:`models.discovery.discover` it.

    ``mean`` / ``std`` default to MNIST's for 1 channel and ImageNet's for 3 (see
    :data:`DEFAULT_NORMALISATION`); pass ``0`` and ``1`` for none. Discovery probes the model
    on the CPU; it then runs on ``device`` (``"auto"``: the GPU when there is one). ``classes``:
    the output classes' names (a list, ``"imagenet"``, or a file: :func:`viz.load_class_names`),
    kept as ``model.class_names``. ``progress`` is called with a sentence as each step starts.

    Raises:
        models.discovery.DiscoveryError: bad spec, no deformable layer, layers that cannot be
            back-projected (the message names them).
        models.CheckpointError: weights that cannot be read or do not fit.
        viz.ClassNamesError: class names that cannot be read.
    """
    names = None if classes is None else list(classes) if isinstance(classes, list) else load_class_names(classes)
    if progress is not None:
        progress(f"building {spec}()")
    factory = import_factory(spec)
    try:
        model = factory()
    except Exception as exc:
        raise DiscoveryError(f"{spec}() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise DiscoveryError(f"{spec}() returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        if progress is not None:
            progress(f"loading weights {Path(weights).name}")
        load_weights(model, weights)
    default_mean, default_std = DEFAULT_NORMALISATION.get(in_channels, ((0.0,), (1.0,)))
    found = discover(
        model,
        input_size,
        in_channels,
        default_mean if mean is None else mean,
        default_std if std is None else std,
        layers=layers,
        geometry=geometry,
        progress=progress,
    )
    found.source = f"{spec}" + (f" with {Path(weights).name}" if weights is not None else " (untrained weights)")
    found.class_names = names
    return found.to(resolve_device(device))


def prepare_for(
    model: DiscoveredModel,
    image: Image.Image | np.ndarray | Tensor | str | Path,
    mode: str = "auto",
    notes: list[str] | None = None,
) -> Tensor:
    """An image (or an image file) -> the model's input ``(C, H, W)`` in [0, 1].

    Modes: ``digit``: MNIST's recipe (:func:`viz.preprocess`), then resized to the input size;
    ``scene``: :func:`viz.preprocess_scene` (relative sizes kept); ``plain``: just resized, grey
    or colour as the model takes. ``auto``: ``digit`` for a 28x28 grey model, else ``plain``.
    ``notes`` (a list) gets what was done to the picture beyond resizing (an inversion, a cleaned
    paper background), in words for the user.
    """
    if mode not in PREPARE_MODES:
        raise ValueError(f"mode must be one of {PREPARE_MODES}, got {mode!r}")
    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as img:
                img.load()
                return prepare_for(model, img.copy(), mode, notes)
        except (OSError, SyntaxError) as exc:
            raise PreprocessError(f"cannot read image {str(image)!r}: {exc}") from None
    h, w = model.input_size
    if mode == "auto":
        mode = "digit" if (h, w) == (28, 28) and model.in_channels == 1 else "plain"
    if mode == "digit":
        x = preprocess(image, notes)
    elif mode == "scene":
        x = preprocess_scene(image, size=max(h, w), notes=notes)
    elif isinstance(image, Image.Image) and model.in_channels == 3:
        rgb = image.convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
    else:
        x = torch.from_numpy(to_ink(image, notes).astype(np.float32)).unsqueeze(0)
    return fit_to(model, x)


def fit_to(model: DiscoveredModel, image: Tensor) -> Tensor:
    """A ``(C, h, w)`` image resized (bilinear) to the model's input size."""
    if tuple(image.shape[-2:]) == model.input_size:
        return image
    return F.interpolate(image.unsqueeze(0), size=model.input_size, mode="bilinear", align_corners=False)[0]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that load a user's model, shared by ``viz.export`` and the app."""
    g = parser.add_argument_group("your own model (see docs/your_model.md)")
    g.add_argument(
        "--model",
        metavar="PACKAGE.MODULE:FACTORY",
        help="a callable returning your nn.Module, as package.module:factory (run from its folder) or "
        "path/to/file.py:factory; a package of yours called models works too (imported: only code you name "
        "here runs)",
    )
    g.add_argument("--weights", help="its state dict (.pt), read with weights_only=True; default: as built")
    g.add_argument(
        "--input-size", type=int, nargs="+", default=[28], metavar="N", help="H [W] of its input (default 28)"
    )
    g.add_argument("--in-channels", type=int, default=1, choices=(1, 3), help="input channels (default 1)")
    g.add_argument(
        "--mean",
        type=float,
        nargs="+",
        default=None,
        help="input normalisation mean (default: MNIST's for 1 channel, ImageNet's for 3)",
    )
    g.add_argument("--std", type=float, nargs="+", default=None, help="input normalisation std (default as --mean)")
    g.add_argument(
        "--layers", nargs="+", default=None, help="names of the deformable layers to use (default: all found)"
    )
    g.add_argument(
        "--pixel-stride", type=float, nargs=2, default=None, metavar=("SY", "SX"),
        help="the bottom layer's input map: pixels between units (instead of probing)",
    )  # fmt: skip
    g.add_argument(
        "--pixel-offset", type=float, nargs=2, default=None, metavar=("OY", "OX"),
        help="the bottom layer's input map: pixel position of unit (0, 0) (with --pixel-stride)",
    )  # fmt: skip
    g.add_argument("--prepare", choices=PREPARE_MODES, default="auto", help="how images become inputs (default auto)")
    g.add_argument(
        "--classes",
        metavar="FILE|imagenet",
        default=None,
        help="names of its output classes, so predictions read as names: a text file with one per line, a JSON "
        "list, or imagenet (torchvision's 1,000 ImageNet category names)",
    )


def model_from_args(args: argparse.Namespace, progress: Callable[[str], None] | None = None) -> DiscoveredModel | None:
    """The user's model from parsed :func:`add_model_arguments` options, or None without
    ``--model``."""
    if not getattr(args, "model", None):
        return None
    if len(args.input_size) not in (1, 2):
        raise DiscoveryError("--input-size takes H or H W")
    if (args.pixel_stride is None) != (args.pixel_offset is None):
        raise DiscoveryError("--pixel-stride and --pixel-offset go together")
    geometry = (tuple(args.pixel_stride), tuple(args.pixel_offset)) if args.pixel_stride is not None else None
    size = tuple(args.input_size) if len(args.input_size) == 2 else args.input_size[0]
    return load_user_model(
        args.model,
        args.weights,
        size,
        args.in_channels,
        tuple(args.mean) if args.mean else None,
        tuple(args.std) if args.std else None,
        args.layers,
        geometry,  # type: ignore[arg-type]
        device=getattr(args, "device", "cpu"),
        classes=getattr(args, "classes", None),
        progress=progress,
    )


__all__ = [
    "DEFAULT_NORMALISATION",
    "PREPARE_MODES",
    "add_model_arguments",
    "fit_to",
    "load_user_model",
    "model_from_args",
    "prepare_for",
]
