"""Where each layer's input map lies on the image, probed on the regular twin, and whether the
layers are stacked (see the package docstring, steps 2 and 3)."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from models.contract import ForwardArgument, ModuleOutput, SamplingLayer, is_torchvision_deform_op
from models.deform_conv import DeformConv2d
from models.discovery.errors import DiscoveryError
from models.discovery.find import FoundLayer, sampling_layer
from models.families import family_of


class _StopProbe(Exception):
    pass


class _RegularOps(TorchFunctionMode):
    """Probe pass: every torchvision deform_conv2d call computes the regular convolution with
    the same weights instead (offsets zero, mask ignored), so the receptive fields are exact."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if is_torchvision_deform_op(func):
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
