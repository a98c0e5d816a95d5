"""Discovery: the sampling-layer contract for a model that does not state it (a user's model).

Given any ``nn.Module`` and an example input size, :func:`discover` finds the deformable
layers and works out everything the contract (``models.contract``) needs:

1. **Which layers.** One forward pass on a random example, with hooks on every submodule and a
   torch function mode watching ``torchvision::deform_conv2d`` calls, finds, in the order they
   run: ``torchvision.ops.DeformConv2d`` modules (offset and mask are forward arguments),
   our :class:`~models.deform_conv.DeformConv2d`, and any other module whose forward calls
   ``torchvision.ops.deform_conv2d`` itself (the offset and mask are read from the op's own
   arguments, so inline chunking or a sigmoid in between does not matter). Each layer's
   kernel, stride, padding, dilation, offset groups, modulation and map sizes are read from
   what actually ran.
2. **Where each layer's input map lies on the image** (``pixel_stride``, ``pixel_offset``), by
   probing rather than by dividing sizes: every deformable layer is replaced by its regular
   twin (the same weights, offsets zero), and the gradient of one input-map unit with respect
   to the image is taken over a batch of random images. Its support is the unit's receptive
   field, whose centre is where the unit sits (the contract's definition). Three units give
   the stride and offset per axis and check that the map is a strided grid of the image.
   Units whose field touches the image border are not used; the probe image grows until some
   are clear. ``geometry=(pixel_stride, pixel_offset)`` overrides the probe for the bottom
   layer (the others follow from stacking).
3. **Whether the layers are stacked.** Back-projection reads layer ``l``'s offsets at the
   positions layer ``l + 1`` samples, so the output of ``l`` must reach the input of ``l + 1``
   through position-preserving operations only: 1x1 convs, BN, activations, residual additions
   of the same size (the bottleneck blocks of DCN ResNets). The probe checks exactly that:
   same map size, the same grid on the image, and a receptive field that grew by the layer's
   kernel and nothing more. Anything else (a 3x3 conv, pooling, resampling in between) is
   refused with a message naming both layers; ``layers=[names]`` picks a stacked subset.
"""

from __future__ import annotations

import importlib
import itertools
import math
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from models.contract import ForwardArgument, ModuleOutput, OpArgument, SamplingLayer
from models.deform_conv import DeformConv2d
from models.families import family_of
from models.geometry import pair

#: Positions of torchvision's op arguments: ``deform_conv2d(input, weight, offset, mask, bias,
#: stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, weight_groups, offset_groups, use_mask)``.
_OP = {"input": 0, "weight": 1, "offset": 2, "mask": 3, "bias": 4, "groups": 11, "offset_groups": 12, "use_mask": 13}


class DiscoveryError(ValueError):
    """The model cannot be back-projected (or not without help); the message says why and what
    to do."""


def _is_deform_op(func: Any) -> bool:
    return str(func).split(".")[:2] == ["torchvision", "deform_conv2d"]


def _tv_deform_conv() -> type[nn.Module]:
    from torchvision.ops import DeformConv2d as TorchvisionDeformConv2d

    return TorchvisionDeformConv2d


@dataclass(frozen=True)
class FoundLayer:
    """A deformable layer as it ran in the discovery pass."""

    name: str
    module: nn.Module
    kind: str  # "torchvision DeformConv2d" | "deformscope DeformConv2d" | "module calling deform_conv2d" | a family
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    offset_groups: int
    modulated: bool
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    #: The contract's entry with a placeholder position on the image (``sampling_layer`` places it).
    template: SamplingLayer | None = None

    @property
    def points(self) -> int:
        return self.template.taps if self.template is not None else self.kernel_size[0] * self.kernel_size[1]


class _Watch(TorchFunctionMode):
    """Discovery pass: which module is running (a stack kept by hooks) and the deform_conv2d
    op calls made directly inside each."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[nn.Module] = []
        self.first_args: dict[nn.Module, Any] = {}
        self.first_call: dict[nn.Module, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self.outputs: dict[nn.Module, Any] = {}
        self.calls: dict[nn.Module, int] = {}
        self.order: list[nn.Module] = []
        self.ops: dict[nn.Module, list[tuple[Any, ...]]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if _is_deform_op(func) and self.stack:
            self.ops.setdefault(self.stack[-1], []).append(tuple(args))
        return func(*args, **(kwargs or {}))

    def enter(self, m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.stack.append(m)
        self.calls[m] = self.calls.get(m, 0) + 1
        if m not in self.first_args:
            self.order.append(m)
            self.first_args[m] = args[0] if args else None
            self.first_call[m] = (args, kwargs)

    def leave(self, m: nn.Module, _args: tuple[Any, ...], out: Any) -> None:
        if self.stack and self.stack[-1] is m:
            self.stack.pop()
        self.outputs.setdefault(m, out)


def _size(t: Any) -> tuple[int, int]:
    return (int(t.shape[-2]), int(t.shape[-1]))


def find_layers(model: nn.Module, run: Callable[[Tensor], Any], example: Tensor) -> list[FoundLayer]:
    """The deformable layers of ``model`` in the order they run on ``example`` (see the module
    docstring, step 1). ``run(example)`` runs the model (normalisation included)."""
    names = {m: n for n, m in model.named_modules()}
    watch = _Watch()
    with ExitStack() as stack:
        for m in names:
            for handle in (
                m.register_forward_pre_hook(watch.enter, with_kwargs=True),
                m.register_forward_hook(watch.leave),
            ):
                stack.callback(handle.remove)
        stack.enter_context(watch)
        try:
            with torch.no_grad():
                run(example)
        except Exception as exc:
            raise DiscoveryError(
                f"the model failed on a random example input of shape {tuple(example.shape)}: "
                f"{type(exc).__name__}: {exc}. Is the input size (or the number of channels) right?"
            ) from None
    tv = _tv_deform_conv()
    found: list[FoundLayer] = []
    for m in watch.order:
        name = names[m] or "(the model itself)"
        family = family_of(m) if not isinstance(m, (DeformConv2d, tv)) else None
        if family is not None:
            found.append(_family_layer(name, m, family, watch))
            continue
        if isinstance(m, DeformConv2d):
            x = watch.first_args[m]
            found.append(
                FoundLayer(
                    name,
                    m,
                    "deformscope DeformConv2d",
                    pair(m.kernel_size),
                    pair(m.stride),
                    pair(m.padding),
                    pair(m.dilation),
                    int(m.offset_groups),
                    m.mask_conv is not None,
                    _size(x),
                    _size(watch.outputs[m]),
                )  # fmt: skip
            )
            continue
        if m not in watch.ops:
            continue
        op_args = watch.ops[m]
        if len(op_args) > 1 or watch.calls[m] > 1:
            raise DiscoveryError(
                f"layer {name!r} ran deform_conv2d {max(len(op_args), watch.calls[m])} times in one forward "
                "pass (a shared layer or a loop); its sampling points would be ambiguous"
            )
        a = op_args[0]
        if a[_OP["input"]] is not watch.first_args[m]:
            raise DiscoveryError(
                f"layer {name!r} ({type(m).__name__}) does not pass its own input to deform_conv2d "
                "(it pads, crops or transforms it first), so its samples cannot be placed on its input map"
            )
        weight = a[_OP["weight"]]
        found.append(
            FoundLayer(
                name,
                m,
                "torchvision DeformConv2d" if isinstance(m, tv) else "module calling deform_conv2d",
                (int(weight.shape[2]), int(weight.shape[3])),
                (int(a[5]), int(a[6])),
                (int(a[7]), int(a[8])),
                (int(a[9]), int(a[10])),
                int(a[_OP["offset_groups"]]),
                bool(a[_OP["use_mask"]]),
                _size(a[_OP["input"]]),
                _size(watch.outputs[m]),
            )
        )
    for f in found:
        if watch.calls[f.module] > 1:
            raise DiscoveryError(f"layer {f.name!r} ran {watch.calls[f.module]} times in one forward pass")
    if not found:
        raise DiscoveryError(
            f"no deformable layer found in {type(model).__name__}: looked for torchvision.ops.DeformConv2d, "
            "deformscope's DeformConv2d, modules calling torchvision.ops.deform_conv2d in their forward, and "
            "layers shaped like DCNv3 / DCNv4 (InternImage), mmcv's DeformConv2dPack and detectron2's DeformConv"
        )
    return [f if f.template is not None else replace(f, template=_template(f)) for f in found]


def _family_layer(name: str, m: nn.Module, family: Any, watch: _Watch) -> FoundLayer:
    """A layer of a DCN family (``models.families``) as it ran in the discovery pass."""
    template = family.describe(name, m, (1.0, 1.0), (0.0, 0.0))
    args, kwargs = watch.first_call[m]
    try:
        x_in = template.decoder.input_map(args, kwargs)
        x_out = template.decoder.output_map(watch.outputs[m], args, kwargs)
    except Exception as exc:
        raise DiscoveryError(
            f"layer {name!r} looks like a {family.NAME} layer but its input or output does not have that layout "
            f"({type(exc).__name__}: {exc})"
        ) from None
    groups = getattr(template.decoder, "group", None) or _offset_groups(m)
    return FoundLayer(
        name, m, family.NAME, template.kernel_size, template.stride, template.padding, template.dilation,
        groups, template.modulated, _size(x_in), _size(x_out), template,
    )  # fmt: skip


def _offset_groups(m: nn.Module) -> int:
    for attr in ("deform_groups", "deformable_groups", "offset_groups", "group"):
        if hasattr(m, attr):
            return int(getattr(m, attr))
    return 1


def _template(f: FoundLayer) -> SamplingLayer:
    """The contract's entry for a torchvision-style found layer, placed at a placeholder position."""
    if isinstance(f.module, DeformConv2d):
        offset_source, mask_source = None, None  # SamplingLayer fills them from the module
    elif isinstance(f.module, _tv_deform_conv()):
        offset_source = ForwardArgument(f.module, 1, "offset")
        mask_source = ForwardArgument(f.module, 2, "mask") if f.modulated else None
    else:
        offset_source = OpArgument(f.module, "offset")
        mask_source = OpArgument(f.module, "mask") if f.modulated else None
    return SamplingLayer(
        name=f.name,
        kernel_size=f.kernel_size,
        stride=f.stride,
        padding=f.padding,
        dilation=f.dilation,
        pixel_stride=(1.0, 1.0),
        pixel_offset=(0.0, 0.0),
        module=f.module,
        offset_source=offset_source,
        mask_source=mask_source,
    )


def sampling_layer(
    f: FoundLayer, pixel_stride: tuple[float, float], pixel_offset: tuple[float, float]
) -> SamplingLayer:
    """The contract's entry for a found layer, placed on the image: the sources say where capture
    reads its offsets, the decoder how."""
    template = f.template if f.template is not None else _template(f)
    return replace(
        template,
        pixel_stride=(float(pixel_stride[0]), float(pixel_stride[1])),
        pixel_offset=(float(pixel_offset[0]), float(pixel_offset[1])),
    )


# ---------------------------------------------------------------- probing the geometry


class _StopProbe(Exception):
    pass


class _RegularOps(TorchFunctionMode):
    """Probe pass: every torchvision deform_conv2d call computes the regular convolution with
    the same weights instead (offsets zero, mask ignored), so the receptive fields are exact."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if _is_deform_op(func):
            a = args
            return F.conv2d(a[0], a[1], a[4], (a[5], a[6]), (a[7], a[8]), (a[9], a[10]), a[11])
        return func(*args, **(kwargs or {}))


def _regular_twin(stack: ExitStack, layer: SamplingLayer, family: Any) -> None:
    """Make a family's layer regular for the probe: its offset source gives zeros and its weights a
    constant (the decoder's ``regular``), so no gradient reaches the image through the offset or
    mask branches (a mask computed by a depthwise conv would otherwise widen the measured field).
    A family that can compute its regular twin exactly (``regular_forward``) replaces the layer's
    output with it: cores that sample through normalised coordinates (grid_sample, as
    InternImage's pure-PyTorch DCNv3 does) land an integer position a rounding error off, which
    gives its next neighbour a gradient of ~1e-7 that is no part of the field."""
    decoder = layer.decoder
    exact = getattr(family, "regular_forward", None)
    if exact is not None:

        def replace_output(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], _out: Any) -> Tensor:
            return exact(m, args, kwargs)

        stack.callback(layer.module.register_forward_hook(replace_output, with_kwargs=True).remove)
        return
    for what, src in (("offset", layer.offset_source), ("mask", layer.mask_source)):
        if isinstance(src, ModuleOutput):

            def post(_m: nn.Module, _args: tuple[Any, ...], out: Tensor, what: str = what) -> Tensor:
                return decoder.regular(what, out)

            stack.callback(src.module.register_forward_hook(post).remove)
        elif isinstance(src, ForwardArgument):

            def pre(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], what: str = what, src=src):
                if src.name in kwargs and kwargs[src.name] is not None:
                    kwargs = {**kwargs, src.name: decoder.regular(what, kwargs[src.name])}
                elif len(args) > src.index and args[src.index] is not None:
                    args = (*args[: src.index], decoder.regular(what, args[src.index]), *args[src.index + 1 :])
                return args, kwargs

            stack.callback(src.module.register_forward_pre_hook(pre, with_kwargs=True).remove)


@dataclass(frozen=True)
class Field:
    """Probed receptive field of an input-map unit: its bounding box on the image."""

    unit: tuple[int, int]
    top: int
    bottom: int
    left: int
    right: int
    clipped: bool

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.top + self.bottom) / 2, (self.left + self.right) / 2)

    @property
    def extent(self) -> tuple[int, int]:
        return (self.bottom - self.top + 1, self.right - self.left + 1)


@dataclass(frozen=True)
class ProbedGeometry:
    pixel_stride: tuple[float, float]
    pixel_offset: tuple[float, float]
    extent: tuple[int, int]  # receptive-field size of one input-map unit, in pixels
    probe_size: tuple[int, int]


def _probe_fields(
    run: Callable[[Tensor], Any],
    found: list[FoundLayer],
    shape: tuple[int, ...],
    batch: int,
    seed: int,
    twins: list[FoundLayer] | None = None,
) -> list[list[Field]]:
    """Receptive fields of a few units around the centre of each layer's input map."""
    gen = torch.Generator().manual_seed(seed)
    # Wide, signed noise: a ReLU or max-pool passes gradient only where its input is positive
    # or largest, and the union over many varied images must cover the whole field.
    images = (0.5 + 2.0 * torch.randn((batch, *shape), generator=gen)).requires_grad_(True)
    maps: dict[int, Tensor] = {}
    last = found[-1].module

    def grab(i: int, f: FoundLayer):
        def pre(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            decoder = f.template.decoder if f.template is not None else None
            maps.setdefault(i, decoder.input_map(args, kwargs) if decoder is not None else args[0])
            if f.module is last:
                raise _StopProbe  # nothing above the top layer is needed (nor must it accept this size)

        return pre

    def regular(f: FoundLayer):
        def post(m: nn.Module, args: tuple[Any, ...], _out: Any) -> Tensor:
            return F.conv2d(args[0], m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)

        return post

    with ExitStack() as stack:
        for i, f in enumerate(found):
            stack.callback(f.module.register_forward_pre_hook(grab(i, f), with_kwargs=True).remove)
        # every deformable layer runs as its regular twin, chosen or not: one left deforming below
        # a chosen layer would bend that layer's field
        for f in twins if twins is not None else found:
            if isinstance(f.module, DeformConv2d):
                stack.callback(f.module.register_forward_hook(regular(f)).remove)
            elif f.template is not None and f.template.family != "torchvision":
                _regular_twin(stack, f.template, family_of(f.module))
        stack.enter_context(_RegularOps())
        try:
            run(images)  # in grad mode: probe_geometry's
        except _StopProbe:
            pass
    fields: list[list[Field]] = []
    height, width = shape[-2:]
    for i, f in enumerate(found):
        x = maps[i]
        h, w = x.shape[-2:]
        ci, cj = h // 2, w // 2
        units = sorted({(min(max(ci + d, 0), h - 1), min(max(cj + d, 0), w - 1)) for d in (-1, 0, 1)})
        out: list[Field] = []
        for u in units:
            (g,) = torch.autograd.grad(x[:, :, u[0], u[1]].sum(), images, retain_graph=True)
            support = g.abs().sum(dim=(0, 1)) > 0
            rows, cols = torch.nonzero(support.any(dim=1)).flatten(), torch.nonzero(support.any(dim=0)).flatten()
            if rows.numel() == 0:
                raise DiscoveryError(
                    f"layer {f.name!r}: its input does not depend on the image (probe found no receptive field)"
                )
            t, b, left, r = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
            clipped = t == 0 or left == 0 or b == height - 1 or r == width - 1
            out.append(Field(u, t, b, left, r, clipped))
        fields.append(out)
    return fields


def _fit(name: str, fields: list[Field], probe_size: tuple[int, int]) -> ProbedGeometry | None:
    """Stride and offset per axis from unclipped fields; None if too few are unclipped."""
    clear = [f for f in fields if not f.clipped]
    stride, offset = [0.0, 0.0], [0.0, 0.0]
    for axis in (0, 1):
        distinct = {f.unit[axis]: f for f in clear}
        if len(distinct) < 2:
            return None
        (ua, fa), (ub, fb) = sorted(distinct.items())[:2]
        stride[axis] = (fb.centre[axis] - fa.centre[axis]) / (ub - ua)
        offset[axis] = fa.centre[axis] - stride[axis] * ua
        for f in clear:
            if abs(stride[axis] * f.unit[axis] + offset[axis] - f.centre[axis]) > 1e-6:
                raise DiscoveryError(
                    f"layer {name!r}: its input map is not a regular grid on the image (units' receptive fields "
                    "are not evenly spaced); an operation in front of it moves positions"
                )
        if stride[axis] <= 0:
            raise DiscoveryError(
                f"layer {name!r}: its input map runs against the image along {'rows' if axis == 0 else 'columns'} "
                "(flipped or transposed in front of it)"
            )
    extents = {f.extent for f in clear}
    if len(extents) > 1:
        raise DiscoveryError(f"layer {name!r}: its input units have receptive fields of different sizes {extents}")
    return ProbedGeometry((stride[0], stride[1]), (offset[0], offset[1]), extents.pop(), probe_size)


# the probe differentiates the maps by the image: a caller's no_grad or inference mode must not reach in
@torch.inference_mode(False)
@torch.enable_grad()
def probe_geometry(
    run: Callable[[Tensor], Any],
    found: list[FoundLayer],
    input_shape: tuple[int, int, int],
    batch: int = 16,
    seed: int = 0,
    max_side: int = 1024,
    twins: list[FoundLayer] | None = None,
) -> list[ProbedGeometry]:
    """Where each found layer's input map lies on the image (see the module docstring, step 2).

    Args:
        run: runs the model on ``(N, C, H, W)`` images.
        input_shape: ``(C, H, W)`` of the model's input; the probe grows ``H, W`` (doubling, up
            to ``max_side``) until every layer has units whose receptive field is clear of the
            border.
    """
    c, h, w = input_shape
    result: list[ProbedGeometry | None] = [None] * len(found)
    while True:
        try:
            fields = _probe_fields(run, found, (c, h, w), batch, seed, twins)
        except DiscoveryError:
            raise
        except Exception as exc:
            missing = [f.name for f, g in zip(found, result, strict=True) if g is None]
            raise DiscoveryError(
                f"probing the geometry of {missing} needs the model to run on {h}x{w} images and it failed "
                f"({type(exc).__name__}: {exc}); give the geometry instead (pixel stride and offset)"
            ) from None
        for i, f in enumerate(found):
            if result[i] is None:
                result[i] = _fit(f.name, fields[i], (h, w))
        if all(r is not None for r in result):
            return result  # type: ignore[return-value]
        if max(h, w) * 2 > max_side:
            missing = [f.name for f, g in zip(found, result, strict=True) if g is None]
            raise DiscoveryError(
                f"the receptive fields of {missing} cover the whole image even at {h}x{w}; the probe cannot "
                "place their units. Give the geometry instead (pixel stride and offset)"
            )
        h, w = 2 * h, 2 * w


def check_stacked(found: list[FoundLayer], probed: list[ProbedGeometry]) -> None:
    """Raise :class:`DiscoveryError` unless consecutive layers are directly stacked (the module
    docstring, step 3). Where the layer below puts its output units and how far its regular grid
    reaches come from its contract entry (``LayerGeometry``: the one stacking formula)."""
    for lo, hi, glo, ghi in zip(found[:-1], found[1:], probed[:-1], probed[1:], strict=True):
        if lo.out_size != hi.in_size:
            raise DiscoveryError(
                f"layers {lo.name!r} and {hi.name!r} are not stacked: {lo.name!r} outputs a {lo.out_size} map but "
                f"{hi.name!r} reads a {hi.in_size} one (something in between resizes it). Choose a stacked subset "
                "of the layers"
            )
        placed = sampling_layer(lo, glo.pixel_stride, glo.pixel_offset)
        for a in (0, 1):
            want_stride = placed.out_pixel_stride[a]
            want_offset = placed.out_pixel_offset[a]
            want_extent = glo.extent[a] + placed.grid_span[a] * glo.pixel_stride[a]
            if abs(ghi.pixel_stride[a] - want_stride) > 1e-6 or abs(ghi.pixel_offset[a] - want_offset) > 1e-6:
                raise DiscoveryError(
                    f"layers {lo.name!r} and {hi.name!r} are not stacked: an operation between them moves positions "
                    f"(output grid {want_stride:g} px from {want_offset:g}, next input grid "
                    f"{ghi.pixel_stride[a]:g} px from {ghi.pixel_offset[a]:g}). Choose a stacked subset of the layers"
                )
            if not math.isclose(ghi.extent[a], want_extent, abs_tol=1e-6):
                raise DiscoveryError(
                    f"layers {lo.name!r} and {hi.name!r} are not stacked: an operation between them widens the "
                    f"receptive field (from {want_extent:g} to {ghi.extent[a]} px; a 3x3 conv or pooling?). Only "
                    "1x1 convs, BN, activations and same-size residual additions may sit between stacked layers. "
                    "Choose a stacked subset of the layers"
                )


# ---------------------------------------------------------------- the wrapped model


def _main_output(out: Any) -> Tensor:
    """Logits from what a model returns: a tensor, the first of a tuple/list, or ``["out"]``."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, dict) and isinstance(out.get("out"), Tensor):
        return out["out"]
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise DiscoveryError(f"the model returned {type(out).__name__}; expected a tensor of logits")


class DiscoveredModel(nn.Module):
    """A user's model with the sampling-layer contract, found by :func:`discover`.

    ``forward`` takes images in ``[0, 1]``, ``(N, C, H, W)``; a 1-channel image is repeated to
    ``in_channels``. It normalises with ``mean`` / ``std`` (per channel) and returns the wrapped
    model's logits (its output tensor, the first element of a tuple, or ``["out"]``).
    """

    family = "user"

    def __init__(
        self,
        model: nn.Module,
        input_size: tuple[int, int],
        in_channels: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        super().__init__()
        self.model = model
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.in_channels = int(in_channels)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.layers: list[SamplingLayer] = []
        self.found: list[FoundLayer] = []
        self.geometry_method = ""
        self.arch = "user"

    def forward(self, images: Tensor) -> Tensor:
        if images.shape[1] == 1 and self.in_channels > 1:
            images = images.expand(-1, self.in_channels, -1, -1)
        return _main_output(self.model((images - self.mean) / self.std))

    def sampling_layers(self) -> list[SamplingLayer]:
        return list(self.layers)

    @property
    def modulated(self) -> bool:
        return any(f.modulated for f in self.found)

    def report(self) -> str:
        """What discovery found, bottom to top, as a plain-text table."""
        lines = [
            f"{len(self.found)} deformable layer(s), bottom to top",
            f"geometry: {self.geometry_method}",
            f"{'layer':<28} {'kind':<28} {'kernel':<7} {'stride':<7} {'pad':<6} {'dil':<6} {'groups':<6} "
            f"{'mask':<5} {'in -> out map':<16} {'on image (y, x)'}",
        ]
        for f, s in zip(self.found, self.layers, strict=True):
            lines.append(
                f"{f.name:<28} {f.kind:<28} {_p(f.kernel_size):<7} {_p(f.stride):<7} {_p(f.padding):<6} "
                f"{_p(f.dilation):<6} {f.offset_groups:<6} {'yes' if f.modulated else 'no':<5} "
                f"{_p(f.in_size) + ' -> ' + _p(f.out_size):<16} "
                f"unit (i, j) at ({s.pixel_stride[0]:g} i + {s.pixel_offset[0]:g}, {s.pixel_stride[1]:g} j + {s.pixel_offset[1]:g})"
            )
        return "\n".join(lines)


def _p(v: tuple[int, int]) -> str:
    return f"{v[0]}x{v[1]}"


def _channels(v: float | tuple[float, ...], c: int, what: str) -> tuple[float, ...]:
    vals = (float(v),) * c if isinstance(v, (int, float)) else tuple(float(x) for x in v)
    if len(vals) == 1:
        vals = vals * c
    if len(vals) != c:
        raise DiscoveryError(f"{what} has {len(vals)} values for {c} input channels")
    if what == "std" and any(x <= 0 for x in vals):
        raise DiscoveryError("std must be positive")
    return vals


# outside any inference mode of the caller: the normalisation buffers made here must be ordinary
# tensors, or every gradient view (ERF, saliency) of the wrapped model fails later
@torch.inference_mode(False)
def discover(
    model: nn.Module,
    input_size: int | tuple[int, int] = 28,
    in_channels: int = 1,
    mean: float | tuple[float, ...] = 0.0,
    std: float | tuple[float, ...] = 1.0,
    layers: list[str] | None = None,
    geometry: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> DiscoveredModel:
    """Wrap ``model`` with the sampling-layer contract (see the module docstring).

    Args:
        model: any ``nn.Module``; put in eval mode.
        input_size: ``H`` or ``(H, W)`` of its input images.
        in_channels: channels it expects (grey images are repeated).
        mean, std: input normalisation, one value or one per channel (images arrive in [0, 1]).
        layers: names (as in ``named_modules``) of the deformable layers to use, bottom to top;
            default all that were found.
        geometry: ``(pixel_stride, pixel_offset)`` of the bottom layer's input map, ``(y, x)``
            pairs, instead of probing.

    Raises:
        DiscoveryError: no deformable layer, layers that are not stacked, or a geometry that
            cannot be worked out; the message names the layer.
    """
    made_in_inference = [
        n for n, t in itertools.chain(model.named_parameters(), model.named_buffers()) if t.is_inference()
    ]
    if made_in_inference:
        more = len(made_in_inference) - 1
        raise DiscoveryError(
            f"the model's {made_in_inference[0]!r}{f' (and {more} more)' if more else ''} was made inside "
            "torch.inference_mode(): such tensors cannot be differentiated, which the probe and the ERF need; "
            "build the model outside it (torch.no_grad() is fine)"
        )
    size = pair(input_size)
    wrapped = DiscoveredModel(
        model, size, in_channels, _channels(mean, in_channels, "mean"), _channels(std, in_channels, "std")
    )
    wrapped.eval()
    example = torch.rand(1, in_channels, *size, generator=torch.Generator().manual_seed(0))
    found = every = find_layers(model, wrapped, example)
    if layers is not None:
        by_name = {f.name: f for f in found}
        unknown = [n for n in layers if n not in by_name]
        if unknown:
            raise DiscoveryError(f"no deformable layer named {unknown}; found {list(by_name)}")
        found = [f for f in found if f.name in set(layers)]
    if geometry is None:
        probed = probe_geometry(wrapped, found, (in_channels, *size), twins=every)
        check_stacked(found, probed)
        grids = [(g.pixel_stride, g.pixel_offset) for g in probed]
        wrapped.geometry_method = "probed: receptive-field centres of input-map units on the regular path" + (
            f" (probe image {probed[0].probe_size[0]}x{probed[0].probe_size[1]})"
            if probed[0].probe_size != size
            else ""
        )
    else:
        (s0, o0) = geometry
        grids = [((float(s0[0]), float(s0[1])), (float(o0[0]), float(o0[1])))]
        for lo, hi in zip(found[:-1], found[1:], strict=True):
            if lo.out_size != hi.in_size:
                raise DiscoveryError(
                    f"layers {lo.name!r} and {hi.name!r} are not stacked: map sizes {lo.out_size} vs {hi.in_size}"
                )
            placed = sampling_layer(lo, *grids[-1])
            grids.append((placed.out_pixel_stride, placed.out_pixel_offset))
        wrapped.geometry_method = "given: bottom layer's pixel stride and offset, the others by stacking"
    wrapped.found = found
    wrapped.layers = [sampling_layer(f, s, o) for f, (s, o) in zip(found, grids, strict=True)]
    return wrapped


# ---------------------------------------------------------------- user code and weights


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


__all__ = [
    "DiscoveredModel",
    "DiscoveryError",
    "FoundLayer",
    "ProbedGeometry",
    "check_stacked",
    "discover",
    "find_layers",
    "import_factory",
    "load_weights",
    "probe_geometry",
]
