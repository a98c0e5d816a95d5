"""Where each layer's input map lies on the image, probed on the regular twin, and whether the
layers are stacked (see the package docstring, steps 2 and 3)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from models.contract import ForwardArgument, ModuleOutput, SamplingLayer, is_torchvision_deform_op
from models.discovery.errors import DiscoveryError
from models.discovery.find import FoundLayer, sampling_layer
from models.families import family_of
from models.ops.deform_conv import DeformConv2d


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


class _Linearised(TorchFunctionMode):
    """Fast probe: activations that zero gradients (ReLU, ReLU6, hardtanh) pass everything and
    max-pooling averages over the same window, so one image shows a unit's whole receptive field
    (a ReLU passes gradient only where its input is positive: the union over many images would be
    needed). Receptive fields are unchanged: the same windows, the same paths."""

    _IDENTITY = {F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.hardtanh, F.hardtanh_}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._IDENTITY:
            return args[0]
        if func is F.max_pool2d or getattr(func, "__name__", "") in ("_max_pool2d", "max_pool2d_with_indices"):
            x, kernel = args[0], kwargs.get("kernel_size", args[1] if len(args) > 1 else None)
            stride = kwargs.get("stride", args[2] if len(args) > 2 else None) or kernel
            padding = kwargs.get("padding", args[3] if len(args) > 3 else 0)
            dilation = kwargs.get("dilation", args[4] if len(args) > 4 else 1)
            ceil = kwargs.get("ceil_mode", args[5] if len(args) > 5 else False)
            if dilation in (1, (1, 1)) and not kwargs.get("return_indices", False):
                return F.avg_pool2d(x, kernel, stride, padding, ceil, count_include_pad=False)
        return func(*args, **kwargs)


@dataclass(frozen=True)
class Field:
    """Probed receptive field of an input-map unit: its bounding box on the image, and which of
    its edges the image border cut (top, bottom, left, right)."""

    unit: tuple[int, int]
    top: int
    bottom: int
    left: int
    right: int
    cut: tuple[bool, bool, bool, bool] = (False, False, False, False)

    @property
    def clipped(self) -> bool:
        return any(self.cut)

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.top + self.bottom) / 2, (self.left + self.right) / 2)

    @property
    def extent(self) -> tuple[int, int]:
        return (self.bottom - self.top + 1, self.right - self.left + 1)

    def edges(self, axis: int) -> tuple[int, int, bool, bool]:
        """(low edge, high edge, low edge cut, high edge cut) along rows (0) or columns (1)."""
        if axis == 0:
            return self.top, self.bottom, self.cut[0], self.cut[1]
        return self.left, self.right, self.cut[2], self.cut[3]


@dataclass(frozen=True)
class ProbedGeometry:
    pixel_stride: tuple[float, float]
    pixel_offset: tuple[float, float]
    extent: tuple[int, int]  # receptive-field size of one input-map unit, in pixels
    probe_size: tuple[int, int]


#: Probe statistics of the last :func:`probe_geometry` call: images run through the model
#: (forward and backward, one pass each), at which size, and how (benchmarks and tests read it).
PROBE_LOG: list[tuple[int, tuple[int, int], str]] = []


def _centre_units(h: int, w: int) -> list[tuple[int, int]]:
    """The centre unit of an ``h x w`` map and its diagonal neighbours: units far from the
    border, whose fields no padding or border rule bends."""
    ci, cj = h // 2, w // 2
    return sorted({(min(max(ci + d, 0), h - 1), min(max(cj + d, 0), w - 1)) for d in (-1, 0, 1)})


@dataclass(frozen=True)
class Link:
    """What layer ``i + 1``'s input unit ``unit`` reads of layer ``i``'s output map: the bounding
    box of its gradient there (stacked layers: exactly the same unit)."""

    unit: tuple[int, int]
    rows: tuple[int, int]
    cols: tuple[int, int]
    out_size: tuple[int, int]  # of layer i
    in_size: tuple[int, int]  # of layer i + 1


def _probe_once(
    run: Callable[[Tensor], Any],
    found: list[FoundLayer],
    shape: tuple[int, ...],
    seed: int,
    twins: list[FoundLayer] | None,
    linearised: bool,
) -> tuple[list[Field], list[Link]]:
    """One forward and one backward pass over a batch of images for each of 3 units of the
    bottom layer's input map and for each pair of consecutive layers: the bottom units'
    receptive fields on the image, and each upper layer's centre input unit's field on the
    layer below's output. Items have their own images, so one gradient separates them."""
    # Linearised: two images for each bottom unit, whose fields must agree (a gate the
    # linearisation does not know would cut them differently: then the caller probes again
    # thoroughly), and one for each pair above (a gate could only hide a neighbour there if it
    # closed every channel of it at once). Otherwise the model as it is and the union over 8
    # images per item.
    k = 2 if linearised else 8
    n_items = 3 + len(found) - 1
    sizes = [k] * 3 + [1 if linearised else k] * (len(found) - 1)
    starts = [sum(sizes[:n]) for n in range(n_items)]
    maps: dict[int, Tensor] = {}
    outs: dict[int, Tensor] = {}
    last = found[-1].module

    def grab_in(i: int, f: FoundLayer):
        def pre(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            decoder = f.template.decoder if f.template is not None else None
            maps.setdefault(i, decoder.input_map(args, kwargs) if decoder is not None else args[0])
            if f.module is last:
                raise _StopProbe  # nothing above the top layer is needed (nor must it accept this size)

        return pre

    as_map: dict[int, Callable[[Tensor], Tensor]] = {}

    def grab_out(i: int, f: FoundLayer):
        def post(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
            # the tensor the model goes on with (its gradient is what we read), and how to lay a
            # tensor of its layout out as an (N, C, H, W) map
            decoder = f.template.decoder if f.template is not None else None
            outs.setdefault(i, out)
            as_map.setdefault(
                i, (lambda t: decoder.output_map(t, args, kwargs)) if decoder is not None else (lambda t: t)
            )

        return post

    def regular(f: FoundLayer):
        def post(m: nn.Module, args: tuple[Any, ...], _out: Any) -> Tensor:
            return F.conv2d(args[0], m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)

        return post

    gen = torch.Generator().manual_seed(seed)
    # Wide, signed noise: where the model is not linearised, a ReLU or max-pool passes gradient
    # only where its input is positive or largest; the union over varied images covers the field.
    images = (0.5 + 2.0 * torch.randn((sum(sizes), *shape), generator=gen)).requires_grad_(True)
    with ExitStack() as stack:
        for i, f in enumerate(found):
            stack.callback(f.module.register_forward_pre_hook(grab_in(i, f), with_kwargs=True).remove)
        # every deformable layer runs as its regular twin, chosen or not: one left deforming below
        # a chosen layer would bend that layer's field
        for f in twins if twins is not None else found:
            if isinstance(f.module, DeformConv2d):
                stack.callback(f.module.register_forward_hook(regular(f)).remove)
            elif f.template is not None and f.template.family != "torchvision":
                _regular_twin(stack, f.template, family_of(f.module))
        for i, f in enumerate(found[:-1]):  # after the twins' hooks: their output is the one read
            stack.callback(f.module.register_forward_hook(grab_out(i, f), with_kwargs=True).remove)
        stack.enter_context(_RegularOps())
        if linearised:
            stack.enter_context(_Linearised())
        try:
            run(images)  # in grad mode: probe_geometry's
        except _StopProbe:
            pass
    PROBE_LOG.append((sum(sizes), tuple(shape[-2:]), "linearised" if linearised else f"{k} images per unit"))
    bottom_units = _centre_units(*maps[0].shape[-2:])
    items: list[tuple[int, tuple[int, int]]] = [(0, u) for u in bottom_units]
    items += [(0, bottom_units[0])] * (3 - len(bottom_units))  # a map under 3 units: repeat
    items += [(i + 1, (maps[i + 1].shape[-2] // 2, maps[i + 1].shape[-1] // 2)) for i in range(len(found) - 1)]
    # A random mix of the unit's channels, not their plain sum: after a LayerNorm over channels
    # (InternImage's blocks) the plain sum is a constant and its gradient vanishes.
    total = images.new_zeros(())
    for n, (i, u) in enumerate(items):
        unit = maps[i][starts[n] : starts[n] + sizes[n], :, u[0], u[1]]
        total = total + (unit * torch.randn(unit.shape[1], generator=gen).to(unit)).sum()
    below = [outs[i] for i in range(len(found) - 1)]
    grads = torch.autograd.grad(total, [images, *below], allow_unused=True)
    height, width = shape[-2:]

    def support_of(g: Tensor, n: int) -> Tensor:
        """Where item ``n``'s images have gradient: agreed by both (linearised) or the union."""
        per_image = g[starts[n] : starts[n] + sizes[n]].abs().sum(dim=1) > 0
        if linearised and not bool((per_image == per_image[0]).all()):
            raise DiscoveryError("the linearised probe's two images disagree on a field")
        return per_image.any(dim=0)

    fields = []
    for n, (_, u) in enumerate(items[:3]):
        support = support_of(grads[0], n)
        rows, cols = torch.nonzero(support.any(dim=1)).flatten(), torch.nonzero(support.any(dim=0)).flatten()
        if rows.numel() == 0:
            raise DiscoveryError(
                f"layer {found[0].name!r}: its input does not depend on the image (probe found no receptive field)"
            )
        t, b, left, r = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
        fields.append(Field(u, t, b, left, r, (t == 0, b == height - 1, left == 0, r == width - 1)))
    links = []
    for i in range(len(found) - 1):
        n, u = 3 + i, items[3 + i][1]
        g = grads[1 + i]
        g = as_map[i](g) if g is not None else None
        out_size = tuple(as_map[i](below[i]).shape[-2:])
        support = support_of(g, n) if g is not None else torch.zeros(out_size, dtype=torch.bool)
        rows, cols = torch.nonzero(support.any(dim=1)).flatten(), torch.nonzero(support.any(dim=0)).flatten()
        span = lambda v: (int(v[0]), int(v[-1])) if v.numel() else (-1, -1)  # noqa: E731
        links.append(Link(u, span(rows), span(cols), out_size, tuple(maps[i + 1].shape[-2:])))
    return fields, links


def _check_sizes(lo: FoundLayer, hi: FoundLayer, out_size: tuple[int, int], in_size: tuple[int, int]) -> None:
    """Raise unless ``lo``'s output map and ``hi``'s input map have the same size."""
    if out_size != in_size:
        raise DiscoveryError(
            f"layers {lo.name!r} and {hi.name!r} are not stacked: {lo.name!r} outputs a {out_size} map but "
            f"{hi.name!r} reads a {in_size} one (something in between resizes it). Choose a stacked subset "
            "of the layers"
        )


def _check_link(lo: FoundLayer, hi: FoundLayer, link: Link) -> None:
    """Raise unless ``hi``'s input unit reads exactly the same unit of ``lo``'s output."""
    pair = f"layers {lo.name!r} and {hi.name!r} are not stacked"
    _check_sizes(lo, hi, link.out_size, link.in_size)
    if link.rows[0] < 0:
        raise DiscoveryError(f"{pair}: the input of {hi.name!r} does not depend on the output of {lo.name!r}")
    if link.rows != (link.unit[0], link.unit[0]) or link.cols != (link.unit[1], link.unit[1]):
        if link.rows[1] - link.rows[0] == 0 and link.cols[1] - link.cols[0] == 0:
            raise DiscoveryError(
                f"{pair}: an operation between them moves positions (unit {link.unit} of {hi.name!r}'s input reads "
                f"unit {(link.rows[0], link.cols[0])} of {lo.name!r}'s output). Choose a stacked subset of the layers"
            )
        raise DiscoveryError(
            f"{pair}: an operation between them widens the receptive field (unit {link.unit} of {hi.name!r}'s input "
            f"reads rows {link.rows[0]}..{link.rows[1]} and columns {link.cols[0]}..{link.cols[1]} of "
            f"{lo.name!r}'s output; a 3x3 conv or pooling?). Only 1x1 convs, BN, activations and same-size residual "
            "additions may sit between stacked layers. Choose a stacked subset of the layers"
        )


def _fit(name: str, fields: list[Field], probe_size: tuple[int, int]) -> ProbedGeometry | None:
    """Stride, offset and extent per axis from the fields' edges that the border did not cut:
    the stride from one edge of two units, the extent from a unit's two edges (or one unit's low
    edge and another's high edge, a known number of strides apart), the offset from any edge and
    the extent. None if the border cuts too much (the caller grows the image). Raises when the
    edges disagree: units not evenly spaced, or fields of different sizes."""
    stride, offset, extent = [0.0, 0.0], [0.0, 0.0], [0, 0]
    for axis in (0, 1):
        by_unit = {f.unit[axis]: f.edges(axis) for f in fields}
        units = sorted(by_unit)
        strides = []
        for side in (0, 1):
            free = [(u, by_unit[u][side]) for u in units if not by_unit[u][2 + side]]
            strides += [(eb - ea) / (ub - ua) for (ua, ea), (ub, eb) in zip(free[:-1], free[1:], strict=True)]
        if not strides:
            return None
        s = strides[0]
        if any(abs(x - s) > 1e-6 for x in strides):
            raise DiscoveryError(
                f"layer {name!r}: its input map is not a regular grid on the image (units' receptive fields "
                "are not evenly spaced); an operation in front of it moves positions"
            )
        if s <= 0:
            raise DiscoveryError(
                f"layer {name!r}: its input map runs against the image along {'rows' if axis == 0 else 'columns'} "
                "(flipped or transposed in front of it)"
            )
        whole = {by_unit[u][1] - by_unit[u][0] + 1 for u in units if not (by_unit[u][2] or by_unit[u][3])}
        if len(whole) > 1:
            raise DiscoveryError(f"layer {name!r}: its input units have receptive fields of different sizes {whole}")
        lows = [(u, by_unit[u][0]) for u in units if not by_unit[u][2]]
        highs = [(u, by_unit[u][1]) for u in units if not by_unit[u][3]]
        if whole:
            size = whole.pop()
        elif lows and highs:
            (ua, hi), (ub, lo) = highs[0], lows[-1]
            size = round(hi - lo + 1 + s * (ub - ua))
        else:
            return None
        centres = [lo + (size - 1) / 2 - s * u for u, lo in lows] + [hi - (size - 1) / 2 - s * u for u, hi in highs]
        if any(abs(c - centres[0]) > 1e-6 for c in centres):
            raise DiscoveryError(
                f"layer {name!r}: its input map is not a regular grid on the image (units' receptive fields "
                "are not evenly spaced); an operation in front of it moves positions"
            )
        stride[axis], offset[axis], extent[axis] = s, centres[0], int(size)
    return ProbedGeometry((stride[0], stride[1]), (offset[0], offset[1]), (extent[0], extent[1]), probe_size)


# the probe differentiates the maps by the image: a caller's no_grad or inference mode must not reach in
@torch.inference_mode(False)
@torch.enable_grad()
def probe_geometry(
    run: Callable[[Tensor], Any],
    found: list[FoundLayer],
    input_shape: tuple[int, int, int],
    seed: int = 0,
    max_side: int = 1024,
    twins: list[FoundLayer] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[ProbedGeometry]:
    """Where each found layer's input map lies on the image (see the module docstring, step 2),
    and that the layers are stacked (step 3).

    The bottom layer's input map is placed from the receptive fields of three central units on
    the image; each upper layer is checked to read exactly the same unit of the layer below's
    output (so only 1x1 convs, BN, activations and same-size residual additions sit between) and
    then placed by the stacking formula (``models.contract.LayerGeometry``). All of it in one
    forward and one backward pass over two images per bottom unit and one per pair above, the
    model linearised (:class:`_Linearised`); if a field comes out empty or inconsistent, or a
    bottom unit's two images disagree (a nonlinearity the linearisation does not know blocked
    part of a field), again with the model as it is and the union over 8 images per item. The
    image grows (doubling, up to ``max_side``) only where the border cuts the bottom layer's
    central fields on both sides.

    Args:
        run: runs the model on ``(N, C, H, W)`` images.
        input_shape: ``(C, H, W)`` of the model's input.
        progress: called with a short sentence before each pass (for a progress line).
    """
    c, h, w = input_shape
    PROBE_LOG.clear()
    linearised = True
    while True:
        if progress is not None:
            how = "" if linearised else ", again with the model as it is, 8 images per unit"
            progress(f"probing where {len(found)} layer(s) sit on a {h}x{w} image{how}")
        try:
            fields, links = _probe_once(run, found, (c, h, w), seed, twins, linearised)
            for lo, hi, link in zip(found[:-1], found[1:], links, strict=True):
                _check_link(lo, hi, link)
            bottom = _fit(found[0].name, fields, (h, w))
        except DiscoveryError:
            if not linearised:
                raise
            linearised = False  # the thorough probe: the model as it is, a union over images
            continue
        except Exception as exc:
            raise DiscoveryError(
                f"probing the geometry of {[f.name for f in found]} needs the model to run on {h}x{w} images and it "
                f"failed ({type(exc).__name__}: {exc}); give the geometry instead (pixel stride and offset)"
            ) from None
        if bottom is not None:
            break
        if max(h, w) * 2 > max_side:
            raise DiscoveryError(
                f"the receptive fields of {found[0].name!r} cover the whole image even at {h}x{w}; the probe "
                "cannot place its units. Give the geometry instead (pixel stride and offset)"
            )
        h, w = 2 * h, 2 * w
    result = [bottom]
    for lo in found[:-1]:
        placed = sampling_layer(lo, result[-1].pixel_stride, result[-1].pixel_offset)
        extent = tuple(
            int(round(result[-1].extent[a] + placed.grid_span[a] * result[-1].pixel_stride[a])) for a in (0, 1)
        )
        result.append(ProbedGeometry(placed.out_pixel_stride, placed.out_pixel_offset, extent, (h, w)))  # type: ignore[arg-type]
    return result


def check_stacked(found: list[FoundLayer], probed: list[ProbedGeometry] | None = None) -> None:
    """Raise :class:`DiscoveryError` unless consecutive layers' map sizes agree, as found at the
    model's input size. :func:`probe_geometry` checks this and more (each upper layer reads
    exactly the same unit of the layer below); this is the check where the geometry is given
    instead of probed. ``probed`` is not used (kept for callers of the earlier API)."""
    for lo, hi in zip(found[:-1], found[1:], strict=True):
        _check_sizes(lo, hi, lo.out_size, hi.in_size)
