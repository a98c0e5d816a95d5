"""What a unit really uses (Zhu et al., DCNv2, 2019, Section 2): effective receptive field,
effective sampling locations and the error-bounded saliency region of a top-layer unit.

The unit's **response** is its top-layer feature vector ``f`` (the top sampling layer's output
at the unit, all channels), read as one number by projecting onto its own direction on the
full image: ``r(x) = <f(x), f(image) / |f(image)|>``. (Summing channels could cancel; the
projection is what changes when the feature changes.)

- **Effective receptive field (ERF)**: ``|d r / d image|`` summed over input channels, per pixel.
- **Effective sampling locations (ESL)**: every sample a layer reads (output unit ``o``, tap
  ``k``) gets a gate ``g = 1`` multiplying it, like a DCNv2 mask; ``d r / d g`` is exactly the
  gradient of the response with respect to the sampled value times that value, summed over
  channels (gradient x input of the sample). A back-projected point at level ``l`` is the tap
  ``k`` sample of the layer ``l`` levels down, at its parent's position; its weight is that
  layer's attribution read there (nearest or bilinear, as the points were made).
- **Saliency region**: squares centred on the unit's pixel, half-size 0, 1, 2, ... up to the
  whole image; the image outside a square is set to 0 (black, the digits' background) and all
  squares are run as one batch. The region is the smallest square whose response feature is
  within ``tol`` (relative L2 error, default 10%) of the full image's.

One forward and one backward give the ERF and the ESL of a batch of units (the image is
repeated once per unit, so the batch axis keeps their gradients apart). Thread-safe as
:func:`viz.capture`: the hooks act only for the calling thread's pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.contract import TORCHVISION_OP_ARGS, ForwardArgument, ModuleOutput, SamplingLayer
from models.families import family_of
from models.ops.deform_conv import DeformConv2d, deform_conv2d
from models.runtime import model_device
from viz.backproject import Points
from viz.capture import Capture, capture, sampling_layers_of
from viz.geometry import read_bilinear, read_nearest
from viz.hooks import HookContext


@dataclass
class Support:
    """ERF and per-sample attributions of ``U`` top-layer units of one image.

    Attributes:
        units_yx: ``(U, 2)`` the units (row, column) of the top layer.
        response: ``(U,)`` each unit's response on the image.
        erf: ``(U, H, W)`` ``|d response / d image|``, summed over channels (not normalised).
        attributions: per sampling layer, bottom to top, ``(U, G, K, Ho, Wo)``: ``d response /
            d gate`` of every sample that layer read (gradient x sampled value).
    """

    units_yx: Tensor
    response: Tensor
    erf: Tensor
    attributions: list[Tensor]

    def erf_normalised(self) -> Tensor:
        """ERF scaled so each unit's maximum is 1."""
        return self.erf / self.erf.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)


class _Run:
    """One call's state: gates per layer and recorded tensors."""

    def __init__(self) -> None:
        self.gates: dict[int, Tensor] = {}
        self.offsets: dict[int, Tensor] = {}
        self.masks: dict[int, Tensor | None] = {}
        self.outputs: dict[int, Tensor] = {}
        self.sources: dict[tuple[int, str], object] = {}

    def gate_op(self, i: int, args: tuple) -> tuple:
        """Layer ``i``'s torchvision op call with its mask multiplied by a fresh gate."""
        a = list(args)
        offsets = a[TORCHVISION_OP_ARGS["offset"]]
        gate = _gate_like(offsets)
        self.gates[i] = gate
        mask = a[TORCHVISION_OP_ARGS["mask"]] if a[TORCHVISION_OP_ARGS["use_mask"]] else None
        a[TORCHVISION_OP_ARGS["mask"]] = gate if mask is None else mask * gate
        a[TORCHVISION_OP_ARGS["use_mask"]] = True
        return tuple(a)


def _gate_like(offsets: Tensor) -> Tensor:
    n, c, ho, wo = offsets.shape
    return torch.ones(n, c // 2, ho, wo, dtype=offsets.dtype, device=offsets.device, requires_grad=True)


def _recomputable(module: nn.Module) -> bool:
    """Layers whose output can be recomputed from their attributes with a gate: ours and
    regular convs. Anything else (torchvision's modules, inline op calls) is gated in its op."""
    return isinstance(module, (DeformConv2d, nn.Conv2d))


def _install(hooks: HookContext, run: _Run, layers: list[SamplingLayer]) -> None:
    uses_ops = False
    for i, layer in enumerate(layers):
        m = layer.module
        src = layer.offset_source
        if layer.family != "torchvision":
            _install_family(hooks, run, i, layer)
        elif _recomputable(m):
            if isinstance(src, ModuleOutput):

                def rec_offset(_m, _a, out, i=i):
                    run.offsets[i] = out

                hooks.forward(src.module, rec_offset)
            if isinstance(layer.mask_source, ModuleOutput):

                def rec_mask(_m, _a, out, i=i):
                    run.masks[i] = out

                hooks.forward(layer.mask_source.module, rec_mask)
            if isinstance(src, ForwardArgument) or isinstance(layer.mask_source, ForwardArgument):
                raise TypeError(
                    f"layer {layer.name!r}: forward-argument sources on a {type(m).__name__} are not supported"
                )

            def regated(mod, args, out, i=i, layer=layer):
                x = args[0]
                ho, wo = out.shape[-2:]
                offsets = run.offsets.get(i)
                if offsets is None:  # a regular conv: zero offsets
                    offsets = x.new_zeros(x.shape[0], 2 * layer.taps, ho, wo)
                gate = _gate_like(offsets)
                run.gates[i] = gate
                mask = run.masks.get(i)
                new = deform_conv2d(
                    x, offsets, mod.weight, mod.bias, layer.stride, layer.padding, layer.dilation,
                    gate if mask is None else mask * gate,
                )  # fmt: skip
                run.outputs[i] = new
                return new

            hooks.forward(m, regated)
        else:
            uses_ops = True

            def leave(out, i=i):
                run.outputs[i] = out

            hooks.op_frame(m, i, on_leave=leave)
    if uses_ops:
        hooks.tap_ops(run.gate_op)


def _install_family(hooks: HookContext, run: _Run, i: int, layer: SamplingLayer) -> None:
    """A layer of another DCN family (``models.families``): its sources are recorded in this run,
    decoded into the canonical record (offsets and weights still differentiable) and the layer
    is recomputed by its family with every sample's weight times a gate."""
    family = family_of(layer.module)
    gated = getattr(family, "gated_forward", None)
    if gated is None:
        raise TypeError(f"layer {layer.name!r}: its family cannot recompute it with gated samples")
    for what, src in (("offset", layer.offset_source), ("mask", layer.mask_source), *layer.extra_sources):
        if isinstance(src, ModuleOutput):

            def rec_out(_m, _a, out, what=what):
                run.sources[(i, what)] = out

            hooks.forward(src.module, rec_out)
        elif isinstance(src, ForwardArgument):

            def rec_arg(_m, args, kwargs, what=what, src=src):
                run.sources[(i, what)] = src.read(args, kwargs)

            hooks.before(src.module, rec_arg, with_kwargs=True)
        elif src is not None:
            raise TypeError(f"layer {layer.name!r}: {type(src).__name__} sources cannot be gated")

    def regated(mod, args, kwargs, out):
        tensors = {"in": args, "kwargs": kwargs, "out": out}
        tensors.update({what: v for (j, what), v in run.sources.items() if j == i})
        record = layer.decoder.decode(layer, tensors)
        n, g, p, _, ho, wo = record.offsets_yx.shape
        gate = torch.ones(n, g * p, ho, wo, dtype=record.offsets_yx.dtype, device=record.offsets_yx.device)
        gate.requires_grad_(True)
        run.gates[i] = gate
        new = gated(mod, args, kwargs, record, gate.view(n, g, p, ho, wo))
        run.outputs[i] = layer.decoder.output_map(new, args, kwargs)
        return new

    hooks.forward(layer.module, regated, with_kwargs=True)


# gradients are the point: a caller's no_grad or inference mode must not reach in
@torch.inference_mode(False)
@torch.enable_grad()
def unit_support(model: nn.Module, image: Tensor, units: tuple[int, int] | list[tuple[int, int]]) -> Support:
    """ERF and sample attributions of top-layer ``units`` on one ``(C, H, W)`` image (see the
    module docstring). Thread-safe on a shared model in eval mode."""
    layers = sampling_layers_of(model)
    units_t = torch.as_tensor(units if isinstance(units, list) else [units], dtype=torch.long).view(-1, 2)
    u = units_t.shape[0]
    if image.dim() == 4:
        image = image[0]
    x = image.detach().to(model_device(model)).unsqueeze(0).repeat(u, 1, 1, 1).requires_grad_(True)
    run = _Run()
    with HookContext() as hooks:
        _install(hooks, run, layers)
        model(x)
    top = run.outputs[len(layers) - 1]  # (U, C, Ho, Wo)
    ho, wo = top.shape[-2:]
    if ((units_t[:, 0] < 0) | (units_t[:, 0] >= ho) | (units_t[:, 1] < 0) | (units_t[:, 1] >= wo)).any():
        raise ValueError(f"units must lie in the top layer's {ho}x{wo} map")
    f = top[torch.arange(u), :, units_t[:, 0], units_t[:, 1]]  # (U, C)
    direction = f.detach() / f.detach().norm(dim=1, keepdim=True).clamp_min(1e-12)
    response = (f * direction).sum(dim=1)
    missing = [layer.name for i, layer in enumerate(layers) if i not in run.gates]
    if missing:
        raise TypeError(
            f"layers {missing} compute their samples in a way that cannot be gated (neither deformscope's or "
            "torch's conv modules nor a torchvision deform_conv2d call)"
        )
    gates = [run.gates[i] for i in range(len(layers))]
    grads = torch.autograd.grad(response.sum(), [x, *gates], allow_unused=True)
    erf = grads[0].abs().sum(dim=1)
    attributions = []
    for layer, g, gate in zip(layers, grads[1:], gates, strict=True):
        g = torch.zeros_like(gate) if g is None else g
        n, c, h, w = g.shape
        attributions.append(g.view(n, c // layer.taps, layer.taps, h, w).detach().cpu())
    return Support(units_t, response.detach().cpu(), erf.detach().cpu(), attributions)


def point_attributions(pts: Points, support: Support, cap: Capture, unit: int = 0) -> Tensor:
    """Effective sampling locations: the attribution of each back-projected point of
    ``support``'s ``unit`` (index), ``(P_unit,)`` for ``pts.where(unit=unit)``, in that order.

    A level-``l`` point is tap ``k`` of the layer ``l`` levels down, read at its parent's
    position on that layer's output map (the unit itself at level 1); ``nearest`` points read
    the nearest unit, ``bilinear`` ones interpolate. ``exact`` points merge taps and have no
    single sample: refused.
    """
    if pts.method == "exact":
        raise ValueError("effective sampling locations need nearest or bilinear points (exact points merge taps)")
    sel = pts.where(unit=unit)
    idx = torch.nonzero(sel).flatten()
    out = torch.zeros(idx.numel())
    n = len(cap.layers)
    for level in range(1, pts.levels + 1):
        li = n - level
        lc = cap.layers[li]
        at = pts.level[idx] == level
        pi = idx[at]
        if pi.numel() == 0:
            continue
        par = pts.parent[pi]
        if level == 1:
            py = torch.full((pi.numel(),), float(support.units_yx[unit, 0]))
            px = torch.full((pi.numel(),), float(support.units_yx[unit, 1]))
        else:  # the parent's pixel position -> this layer's output map
            (sy, sx), (oy, ox) = lc.out_pixel_stride, lc.out_pixel_offset
            py, px = (pts.y[par] - oy) / sy, (pts.x[par] - ox) / sx
        g, k, ho, wo = support.attributions[li][unit].shape
        field = support.attributions[li][unit].reshape(g * k, ho, wo)  # sample q = group * K + point
        vals = read_nearest(field, py, px)[0] if pts.method == "nearest" else read_bilinear(field, py, px)[0]
        out[at] = vals[torch.arange(pi.numel()), pts.group[pi] * k + pts.tap[pi]]
    return out


@dataclass
class SaliencyRegion:
    """The smallest square around a unit whose masked response stays within ``tol``.

    ``box``: ``(x0, y0, x1, y1)`` inclusive pixel bounds, clipped to the image; ``area`` its
    pixels; ``half_sizes`` and ``errors``: every candidate tried and its relative error.
    """

    unit: tuple[int, int]
    half_size: int
    box: tuple[int, int, int, int]
    area: int
    error: float
    tol: float
    half_sizes: Tensor
    errors: Tensor


def unit_centre_pixel(cap: Capture, unit: tuple[int, int]) -> tuple[float, float]:
    """Pixel ``(y, x)`` of a top-layer unit."""
    lc = cap.top
    return (
        lc.out_pixel_offset[0] + lc.out_pixel_stride[0] * unit[0],
        lc.out_pixel_offset[1] + lc.out_pixel_stride[1] * unit[1],
    )


def square_masks(size: tuple[int, int], centre_yx: tuple[float, float], half_sizes: Tensor) -> Tensor:
    """``(R, H, W)`` float masks: 1 inside the square of each half-size around the centre pixel."""
    h, w = size
    cy, cx = round(centre_yx[0]), round(centre_yx[1])
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    r = half_sizes.view(-1, 1, 1)
    return (((ys - cy).abs() <= r) & ((xs - cx).abs() <= r)).float()


#: Up to this many candidate squares are all tried at once (every shipped model: a 64-px scene
#: has at most 64); above it the search is coarse to fine.
EXHAUSTIVE_SQUARES = 64


def _masked_errors(
    model: nn.Module, image: Tensor, unit: tuple[int, int], centre: tuple[float, float], half_sizes: Tensor, ref: Tensor
) -> Tensor:
    """Relative error of the unit's response with the image masked to each square, in one
    batched forward pass."""
    masks = square_masks(tuple(image.shape[-2:]), centre, half_sizes)
    cap = capture(model, image.unsqueeze(0) * masks.unsqueeze(1), keep_features=True)
    feats = cap.top.outputs[:, :, unit[0], unit[1]]
    return (feats - ref).norm(dim=1) / ref.norm().clamp_min(1e-12)


def saliency_region(model: nn.Module, image: Tensor, unit: tuple[int, int], tol: float = 0.1) -> SaliencyRegion:
    """The error-bounded saliency region of a top-layer unit (module docstring).

    Up to :data:`EXHAUSTIVE_SQUARES` candidate squares (half-sizes 0 to the farthest image
    border): every one in one batched forward pass,
    the smallest within ``tol`` wins. A larger image (a 224-px photo has about 113 candidates, a
    512-px one 257): 24 half-sizes spread evenly over the range first, then every half-size
    between the first of those within ``tol`` and the one before it, so about 24 + range / 24
    passes. That finds the same square as trying all of them wherever the error, once within
    ``tol``, stays within it for larger squares (the usual case: a larger square shows the unit
    more of its own input); ``half_sizes`` and ``errors`` hold what was tried."""
    if image.dim() == 4:
        image = image[0]
    full = capture(model, image, keep_features=True)
    h, w = image.shape[-2:]
    cy, cx = unit_centre_pixel(full, unit)
    reach = int(max(round(cy), h - 1 - round(cy), round(cx), w - 1 - round(cx)))
    ref = full.top.outputs[0, :, unit[0], unit[1]]
    if reach + 1 <= EXHAUSTIVE_SQUARES:
        half_sizes = torch.arange(reach + 1)
        errors = _masked_errors(model, image, unit, (cy, cx), half_sizes, ref)
    else:
        coarse = torch.unique(torch.linspace(0, reach, 24).round().long())
        coarse_errors = _masked_errors(model, image, unit, (cy, cx), coarse, ref)
        within = torch.nonzero(coarse_errors <= tol).flatten()
        i = int(within[0]) if within.numel() else len(coarse) - 1
        lo = int(coarse[i - 1]) + 1 if i > 0 else 0
        fine = torch.arange(lo, int(coarse[i]))
        fine_errors = _masked_errors(model, image, unit, (cy, cx), fine, ref) if len(fine) else coarse_errors[:0]
        half_sizes, order = torch.cat([coarse, fine]).sort()
        errors = torch.cat([coarse_errors, fine_errors])[order]
    ok = torch.nonzero(errors <= tol).flatten()
    k = int(ok[0]) if ok.numel() else len(half_sizes) - 1  # the whole image is always exact
    r = int(half_sizes[k])
    box = (max(round(cx) - r, 0), max(round(cy) - r, 0), min(round(cx) + r, w - 1), min(round(cy) + r, h - 1))
    area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
    return SaliencyRegion(unit, r, box, area, float(errors[k]), tol, half_sizes, errors)


def erf_area(erf: Tensor, mass: float = 0.9) -> Tensor:
    """``(U,)`` the number of pixels needed to hold ``mass`` of each ERF's total (largest first)."""
    flat = erf.flatten(1)
    s = flat.sort(dim=1, descending=True).values
    c = s.cumsum(dim=1) / s.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return (c < mass).sum(dim=1) + 1


__all__ = [
    "SaliencyRegion",
    "Support",
    "erf_area",
    "point_attributions",
    "saliency_region",
    "square_masks",
    "support_by_region",
    "unit_centre_pixel",
    "unit_support",
]


def support_by_region(
    model: nn.Module,
    images: Tensor,
    boxes: list[Tensor],
    heights: list[Tensor],
    per_region: int = 4,
    seed: int = 0,
) -> dict[str, dict[str, list[float]]]:
    """ERF area (pixels holding 90% of it) and saliency-region area of top-layer units, grouped
    by where the unit lies (small / medium / large digit, background; ``viz.scene_stats``):
    up to ``per_region`` units of each region per image, drawn with ``seed``.

    Returns ``{"erf_area": {region: [...]}, "saliency_area": {region: [...]}}``.
    """
    from viz.scene_stats import REGIONS, unit_regions

    gen = torch.Generator().manual_seed(seed)
    out: dict[str, dict[str, list[float]]] = {
        "erf_area": {r: [] for r in REGIONS},
        "saliency_area": {r: [] for r in REGIONS},
    }
    for i in range(images.shape[0]):
        cap = capture(model, images[i])
        regions = unit_regions(cap, boxes[i], heights[i])
        for k, name in enumerate(REGIONS):
            cells = torch.nonzero(regions == k)
            if cells.shape[0] == 0:
                continue
            pick = cells[torch.randperm(cells.shape[0], generator=gen)[:per_region]]
            units = [(int(r), int(c)) for r, c in pick]
            sup = unit_support(model, images[i], units)
            out["erf_area"][name].extend(erf_area(sup.erf).float().tolist())
            out["saliency_area"][name].extend(float(saliency_region(model, images[i], u).area) for u in units)
    return out
