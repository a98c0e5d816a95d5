"""Capture: run a model once and record, for every stacked layer, its offsets, mask and maps.

Works for any model with a ``sampling_layers()`` method (the contract in ``models.contract``):
the hooks go exactly where each layer's ``offset_source`` / ``mask_source`` say.

Safe under concurrency: one model may be shared by many threads (one Streamlit server, many
browser sessions). The hooks of one call live in a :class:`viz.hooks.HookContext`, which records
only this thread's (and asyncio task's) forward pass and removes every hook on exit, even when
the forward pass raises; no lock serialises the users. A model left in training mode is
switched to eval mode for the call and restored; only such calls are serialised (a mode switch
is shared state), so share models in eval mode (``viz.load`` returns them so).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from models.contract import (
    TORCHVISION_OP_ARGS,
    ForwardArgument,
    LayerGeometry,
    ModuleOutput,
    OpArgument,
    SamplingLayer,
    Source,
)
from models.runtime import model_device
from viz.hooks import HookContext


@dataclass(frozen=True)
class LayerCapture(LayerGeometry):
    """What one stacked layer did on a batch, with the layer's geometry (name, kernel, stride,
    padding, dilation, pixel_stride, pixel_offset, grid; see :class:`models.contract.LayerGeometry`):
    the canonical sampling record (:class:`models.contract.SamplingRecord`) of any DCN family.

    Output unit ``(ho, wo)`` samples point ``p`` of group ``g`` at input-map position
    ``(ho * stride_h, wo * stride_w) + grid_yx()[p] + offsets_yx[n, g, p, :, ho, wo]``.

    Attributes:
        offsets_yx: ``(N, G, P, 2, Ho, Wo)``; ``[:, g, p, 0]`` is the row (y) shift of point
            ``p`` (tap ``k = i * kw + j`` of a torchvision-style layer) and ``[:, g, p, 1]`` its
            column (x) shift, in units of the layer's input map. Zero for a regular conv.
        mask: ``(N, G, P, Ho, Wo)`` the samples' weights (DCNv2's modulation, DCNv3's softmax,
            DCNv4's signed weights), or None (meaning 1 everywhere).
        family: the DCN family whose layout was decoded (``"torchvision"``, ``"dcnv3"``, ...).
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
    family: str = field(default="torchvision", kw_only=True)

    @property
    def groups(self) -> int:
        return int(self.offsets_yx.shape[1])


@dataclass
class Capture:
    """One forward pass: the images, the model's output and every stacked layer, bottom to top.

    ``logits`` is the model's output: ``(N, classes)`` for classifiers, ``(N, classes, H, W)``
    for dense models.
    """

    images: Tensor
    logits: Tensor
    layers: list[LayerCapture]

    @property
    def probabilities(self) -> Tensor:
        """Softmax over the class axis (dim 1)."""
        return torch.softmax(self.logits, dim=1)

    @property
    def predictions(self) -> Tensor:
        return self.logits.argmax(dim=1)

    @property
    def top(self) -> LayerCapture:
        return self.layers[-1]

    def without_offsets(self) -> Capture:
        """The same layers with every offset zero and no mask: where convolutions of this
        geometry sample without deformation (a regular twin's lattice). Only the geometry
        changes; ``logits`` stay the model's own."""
        return Capture(
            images=self.images,
            logits=self.logits,
            layers=[
                replace(lc, offsets_yx=torch.zeros_like(lc.offsets_yx), mask=None, deformable=False, modulated=False)
                for lc in self.layers
            ],
        )

    def up_to(self, layer: int) -> Capture:
        """A window of a deep stack: the layers from the bottom up to ``layer`` (0 = bottom),
        so that ``top`` is that layer; back-projecting from it descends from there."""
        if not 0 <= layer < len(self.layers):
            raise ValueError(f"layer must be between 0 and {len(self.layers) - 1}, got {layer}")
        return replace(self, layers=self.layers[: layer + 1])

    def select(self, images: list[int]) -> Capture:
        """The same capture restricted to some images of the batch, in the given order."""
        idx = torch.as_tensor(images, dtype=torch.long)

        def pick(t: Tensor | None) -> Tensor | None:
            return t[idx] if t is not None else None

        return Capture(
            images=self.images[idx],
            logits=self.logits[idx],
            layers=[
                replace(
                    lc,
                    offsets_yx=lc.offsets_yx[idx],
                    mask=pick(lc.mask),
                    inputs=pick(lc.inputs),
                    outputs=pick(lc.outputs),
                )
                for lc in self.layers
            ],
        )


class _Recorder:
    """Tensors seen by one capture call, keyed ``(layer index, what)``."""

    def __init__(self) -> None:
        self.tensors: dict[tuple[int, str], Tensor | None] = {}
        self.calls: dict[tuple[int, str], int] = {}
        # per layer whose sources are OpArguments: the argument names its op call hands over
        self.op_names: dict[int, set[str]] = {}

    def put(self, key: tuple[int, str], value: Tensor | None) -> None:
        self.calls[key] = self.calls.get(key, 0) + 1
        self.tensors[key] = value

    def op_call(self, i: int, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Records the offset / mask that layer ``i``'s torchvision op call receives."""
        for name in self.op_names.get(i, ()):
            value = args[TORCHVISION_OP_ARGS[name]]
            if name == "mask" and not args[TORCHVISION_OP_ARGS["use_mask"]]:
                value = None  # torchvision passes a dummy mask when none is given
            self.put((i, name), value)
        return args


#: Serialises only the calls that must switch a shared model's train/eval mode.
_MODE_LOCK = threading.Lock()


def _record(hooks: HookContext, module: nn.Module, recorder: _Recorder, key: tuple[int, str], pick) -> None:
    """Record ``pick(args, kwargs, output)`` of ``module``'s forward under ``key``."""

    def fn(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        recorder.put(key, pick(args, kwargs, out))

    hooks.forward(module, fn, with_kwargs=True)


def _source_hook(hooks: HookContext, recorder: _Recorder, i: int, what: str, src: Source) -> None:
    if isinstance(src, OpArgument):
        if src.name not in TORCHVISION_OP_ARGS:
            raise ValueError(f"OpArgument name must be 'offset' or 'mask', got {src.name!r}")
        # The op call hands over the argument by its name; it must be what it is for this layer.
        if src.name != what:
            raise ValueError(f"layer {i}: an OpArgument {src.name!r} cannot serve as its {what}")
        hooks.op_frame(src.module, i)
        recorder.op_names.setdefault(i, set()).add(src.name)
    elif isinstance(src, ModuleOutput):
        _record(hooks, src.module, recorder, (i, what), lambda a, k, out: out)
    elif isinstance(src, ForwardArgument):
        _record(hooks, src.module, recorder, (i, what), lambda a, k, out: src.read(a, k))
    else:
        raise TypeError(f"unknown {what} source {src!r}: expected ModuleOutput, ForwardArgument or OpArgument")


@contextmanager
def _eval_mode(model: nn.Module):
    if not model.training:
        yield
        return
    with _MODE_LOCK:
        model.eval()
        try:
            yield
        finally:
            model.train(True)


@contextmanager
def recording(layers: list[SamplingLayer]):
    """Hooks on every layer and source named by ``layers``, recording into a fresh recorder that
    only this thread's / task's forward passes write to (:class:`viz.hooks.HookContext`).
    Yields the recorder; removes every hook on exit."""
    recorder = _Recorder()
    with HookContext() as hooks:
        for i, layer in enumerate(layers):
            _record(hooks, layer.module, recorder, (i, "in"), lambda a, k, out: a)
            _record(hooks, layer.module, recorder, (i, "kwargs"), lambda a, k, out: k)
            _record(hooks, layer.module, recorder, (i, "out"), lambda a, k, out: out)
            if layer.offset_source is not None:
                _source_hook(hooks, recorder, i, "offset", layer.offset_source)
            if layer.mask_source is not None:
                _source_hook(hooks, recorder, i, "mask", layer.mask_source)
            for what, src in layer.extra_sources:
                _source_hook(hooks, recorder, i, what, src)
        if recorder.op_names:
            hooks.tap_ops(recorder.op_call)
        yield recorder


def sampling_layers_of(model: nn.Module) -> list[SamplingLayer]:
    if not hasattr(model, "sampling_layers"):
        raise TypeError(f"{type(model).__name__} has no sampling_layers(); see the contract in models.contract")
    layers = model.sampling_layers()
    if not layers:
        raise ValueError("the model lists no sampling layers")
    return layers


@torch.no_grad()
def capture(model: nn.Module, images: Tensor, keep_features: bool = False) -> Capture:
    """Run ``model`` on ``images`` once and record offsets, masks and geometry of every layer.

    Thread-safe: concurrent calls on one shared model each record only their own forward pass
    (see the module docstring).

    Args:
        model: follows the sampling-layer contract (has ``sampling_layers()``).
        images: ``(N, C, H, W)`` or a single ``(C, H, W)`` image, in the model's input format.
        keep_features: also keep each layer's input and output feature maps.

    Returns:
        A :class:`Capture` on the CPU, wherever the model runs (``images`` are moved to the
        model's device for the forward pass); one forward pass serves the whole batch.
    """
    layers = sampling_layers_of(model)
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W) or (C, H, W), got shape {tuple(images.shape)}")
    with _eval_mode(model), recording(layers) as rec:
        logits = model(images.to(model_device(model)))
    # Everything downstream (geometry, statistics, figures) works on the CPU copy.
    rec.tensors = {key: _to_cpu(t) for key, t in rec.tensors.items()}
    return _assemble(layers, rec, images.cpu(), logits.cpu(), keep_features)


def _to_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.cpu()
    if isinstance(value, tuple):
        return tuple(_to_cpu(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value


def _assemble(
    layers: list[SamplingLayer], rec: _Recorder, images: Tensor, logits: Tensor, keep_features: bool
) -> Capture:
    out: list[LayerCapture] = []
    for i, layer in enumerate(layers):
        if (i, "in") not in rec.tensors:
            raise RuntimeError(f"sampling layer {layer.name!r} did not run in the forward pass")
        if rec.calls[(i, "in")] > 1:
            raise RuntimeError(
                f"sampling layer {layer.name!r} ran {rec.calls[(i, 'in')]} times in one forward pass; "
                "its points would be ambiguous"
            )
        tensors = {what: value for (j, what), value in rec.tensors.items() if j == i}
        if layer.offset_source is not None and tensors.get("offset") is None:
            raise RuntimeError(f"the offset source of layer {layer.name!r} produced no tensor in the forward pass")
        record = layer.decoder.decode(layer, tensors)
        h, w = record.in_size
        mask = record.weights
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
                out_size=record.out_size,
                offsets_yx=record.offsets_yx.detach(),
                mask=mask.detach() if mask is not None else None,
                deformable=layer.deformable,
                modulated=mask is not None,
                inputs=record.inputs.detach() if keep_features else None,
                outputs=record.outputs.detach() if keep_features else None,
                grid=layer.grid,
                family=layer.family,
            )
        )
    return Capture(images=images.detach(), logits=logits.detach(), layers=out)
