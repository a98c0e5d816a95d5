"""Which layers: one forward pass on a random example, hooks on every submodule and a torch
function mode watching ``torchvision::deform_conv2d`` calls, finds the deformable layers in the
order they run (see the package docstring, step 1), each with what actually ran."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from models.contract import (
    TORCHVISION_OP_ARGS,
    ForwardArgument,
    OpArgument,
    SamplingLayer,
    is_torchvision_deform_op,
)
from models.discovery.errors import DiscoveryError
from models.families import family_of
from models.geometry import pair
from models.ops.deform_conv import DeformConv2d


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
        if is_torchvision_deform_op(func) and self.stack:
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
        if a[TORCHVISION_OP_ARGS["input"]] is not watch.first_args[m]:
            raise DiscoveryError(
                f"layer {name!r} ({type(m).__name__}) does not pass its own input to deform_conv2d "
                "(it pads, crops or transforms it first), so its samples cannot be placed on its input map"
            )
        weight = a[TORCHVISION_OP_ARGS["weight"]]
        found.append(
            FoundLayer(
                name,
                m,
                "torchvision DeformConv2d" if isinstance(m, tv) else "module calling deform_conv2d",
                (int(weight.shape[2]), int(weight.shape[3])),
                (int(a[5]), int(a[6])),
                (int(a[7]), int(a[8])),
                (int(a[9]), int(a[10])),
                int(a[TORCHVISION_OP_ARGS["offset_groups"]]),
                bool(a[TORCHVISION_OP_ARGS["use_mask"]]),
                _size(a[TORCHVISION_OP_ARGS["input"]]),
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
