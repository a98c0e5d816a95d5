"""The wrapped model: a user's model with the sampling-layer contract, and :func:`discover`,
which finds its layers, probes their geometry and checks they are stacked."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from models.contract import SamplingLayer
from models.discovery.errors import DiscoveryError
from models.discovery.find import FoundLayer, find_layers, sampling_layer
from models.discovery.probe import check_stacked, probe_geometry
from models.geometry import pair


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
        self.source = type(model).__name__  # where it came from, in words (set by the loader)
        self.class_names: list[str] | None = None  # names of the output classes, when the user gave them

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
            f"{'points':<11} {'mask':<5} {'in -> out map':<16} {'on image (y, x)'}",
        ]
        for f, s in zip(self.found, self.layers, strict=True):
            # points per group, and the regular grid's step where it is not the dilation (offset_scale)
            step = s.grid_step[0] / s.dilation[0]
            points = f"{s.taps}" + (f", grid x{step:g}" if step != 1 else "")
            lines.append(
                f"{f.name:<28} {f.kind:<28} {_p(f.kernel_size):<7} {_p(f.stride):<7} {_p(f.padding):<6} "
                f"{_p(f.dilation):<6} {f.offset_groups:<6} {points:<11} {'yes' if f.modulated else 'no':<5} "
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
    progress: Callable[[str], None] | None = None,
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
        progress: called with a short sentence as each step starts (a progress line).

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
    if progress is not None:
        progress(f"finding the deformable layers ({in_channels}x{size[0]}x{size[1]} example, one forward pass)")
    found = every = find_layers(model, wrapped, example)
    if layers is not None:
        by_name = {f.name: f for f in found}
        unknown = [n for n in layers if n not in by_name]
        if unknown:
            raise DiscoveryError(f"no deformable layer named {unknown}; found {list(by_name)}")
        found = [f for f in found if f.name in set(layers)]
    if geometry is None:
        probed = probe_geometry(wrapped, found, (in_channels, *size), twins=every, progress=progress)  # stacking too
        grids = [(g.pixel_stride, g.pixel_offset) for g in probed]
        wrapped.geometry_method = "probed: receptive-field centres of input-map units on the regular path" + (
            f" (probe image {probed[0].probe_size[0]}x{probed[0].probe_size[1]})"
            if probed[0].probe_size != size
            else ""
        )
    else:
        (s0, o0) = geometry
        grids = [((float(s0[0]), float(s0[1])), (float(o0[0]), float(o0[1])))]
        check_stacked(found)
        for lo in found[:-1]:
            placed = sampling_layer(lo, *grids[-1])
            grids.append((placed.out_pixel_stride, placed.out_pixel_offset))
        wrapped.geometry_method = "given: bottom layer's pixel stride and offset, the others by stacking"
    wrapped.found = found
    wrapped.layers = [sampling_layer(f, s, o) for f, (s, o) in zip(found, grids, strict=True)]
    return wrapped
