"""Capture: run a model once with forward hooks on its offset (and mask) branches.

Works for any model with a ``sampling_layers()`` method (the contract in ``models.nets``).
Hooks live only inside :func:`capture` and are removed even when the forward pass raises.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from models.deform_conv import DeformConv2d, output_size
from models.nets import LayerGeometry


@dataclass(frozen=True)
class LayerCapture(LayerGeometry):
    """What one stacked layer did on a batch, with the layer's geometry (name, kernel, stride,
    padding, dilation, pixel_stride, pixel_offset; see :class:`models.nets.LayerGeometry`).

    Attributes:
        offsets_yx: ``(N, G, K, 2, Ho, Wo)``; ``[:, g, k, 0]`` is the row (y) shift of tap
            ``k = i * kw + j`` and ``[:, g, k, 1]`` its column (x) shift, in units of the
            layer's input map. Zero for a regular conv.
        mask: ``(N, G, K, Ho, Wo)`` DCNv2 modulation, or None (meaning 1 everywhere).
        in_size, out_size: spatial sizes ``(H, W)`` of the layer's input and output maps.
        inputs, outputs: the layer's input and output feature maps when captured with
            ``keep_features=True``, else None.
    """

    in_size: tuple[int, int]
    out_size: tuple[int, int]
    offsets_yx: Tensor
    mask: Tensor | None
    deformable: bool
    modulated: bool
    inputs: Tensor | None = None
    outputs: Tensor | None = None


@dataclass
class Capture:
    """One forward pass: the images, the model's logits and every stacked layer, bottom to top."""

    images: Tensor
    logits: Tensor
    layers: list[LayerCapture]

    @property
    def probabilities(self) -> Tensor:
        """``(N, classes)`` softmax of the logits."""
        return torch.softmax(self.logits, dim=1)

    @property
    def predictions(self) -> Tensor:
        return self.logits.argmax(dim=1)

    @property
    def top(self) -> LayerCapture:
        return self.layers[-1]


@contextmanager
def _hooked(module: nn.Module, fn: Any):
    handle = module.register_forward_hook(fn)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def capture(model: nn.Module, images: Tensor, keep_features: bool = False) -> Capture:
    """Run ``model`` on ``images`` once and record offsets, masks and geometry of every layer.

    Args:
        model: follows the sampling-layer contract (has ``sampling_layers()``).
        images: ``(N, C, H, W)`` or a single ``(C, H, W)`` image, in the model's input format.
        keep_features: also keep each layer's input and output feature maps.

    Returns:
        A :class:`Capture`; one forward pass serves the whole batch.
    """
    if not hasattr(model, "sampling_layers"):
        raise TypeError(f"{type(model).__name__} has no sampling_layers(); see the contract in models.nets")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W) or (C, H, W), got shape {tuple(images.shape)}")
    layers = model.sampling_layers()
    if not layers:
        raise ValueError("the model lists no sampling layers")
    record: list[dict[str, Tensor]] = [{} for _ in layers]

    def on_layer(i: int):
        def hook(_m: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            record[i]["in"], record[i]["out"] = args[0], out

        return hook

    def on_branch(i: int, key: str):
        def hook(_m: nn.Module, _args: tuple[Tensor, ...], out: Tensor) -> None:
            record[i][key] = out

        return hook

    was_training = model.training
    model.eval()
    try:
        with ExitStack() as stack:
            for i, layer in enumerate(layers):
                stack.enter_context(_hooked(layer.module, on_layer(i)))
                if isinstance(layer.module, DeformConv2d):
                    stack.enter_context(_hooked(layer.module.offset_conv, on_branch(i, "offset")))
                    if layer.module.mask_conv is not None:
                        stack.enter_context(_hooked(layer.module.mask_conv, on_branch(i, "mask")))
            logits = model(images)
    finally:
        model.train(was_training)

    out: list[LayerCapture] = []
    for i, (layer, rec) in enumerate(zip(layers, record, strict=True)):
        if "in" not in rec:
            raise RuntimeError(f"sampling layer {layer.name!r} did not run in the forward pass")
        n, _, h, w = rec["in"].shape
        ho, wo = output_size((h, w), layer.kernel_size, layer.stride, layer.padding, layer.dilation)
        k = layer.taps
        if "offset" in rec:
            offsets = rec["offset"]
            offsets_yx = offsets.view(n, offsets.shape[1] // (2 * k), k, 2, ho, wo)
        else:
            offsets_yx = rec["in"].new_zeros(n, 1, k, 2, ho, wo)
        mask = rec["mask"].view(n, -1, k, ho, wo) if "mask" in rec else None
        if i > 0 and out[-1].out_size != (h, w):
            raise ValueError(
                f"layers {out[-1].name!r} and {layer.name!r} are not directly stacked: "
                f"output {out[-1].out_size} feeds an input of {(h, w)}"
            )
        out.append(
            LayerCapture(
                name=layer.name,
                kernel_size=tuple(layer.kernel_size),
                stride=tuple(layer.stride),
                padding=tuple(layer.padding),
                dilation=tuple(layer.dilation),
                pixel_stride=tuple(float(v) for v in layer.pixel_stride),
                pixel_offset=tuple(float(v) for v in layer.pixel_offset),
                in_size=(h, w),
                out_size=(ho, wo),
                offsets_yx=offsets_yx.detach(),
                mask=mask.detach() if mask is not None else None,
                deformable=isinstance(layer.module, DeformConv2d),
                modulated=mask is not None,
                inputs=rec["in"].detach() if keep_features else None,
                outputs=rec["out"].detach() if keep_features else None,
            )
        )
    return Capture(images=images.detach(), logits=logits.detach(), layers=out)
