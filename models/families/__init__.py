"""DCN families as adapters: each module here recognises one family's layers **by structure**
(submodule and attribute names, the forward's signature), whatever the user's class is called and
without importing the toolkit, and describes a recognised layer as a
:class:`~models.contract.SamplingLayer` whose decoder turns what capture records into the
canonical sampling record. A new family is a new file and one line in :data:`FAMILIES`.

==============  ===========================================  ==========================================
family          recognised by                                offsets and weights from
==============  ===========================================  ==========================================
``dcnv3``       ``offset`` / ``mask`` linears, ``dw_conv``,  ``offset(x1)`` (dx, dy per point, x-major),
                ``group``, ``offset_scale``                  softmax of ``mask(x1)`` per group
``dcnv4``       ``offset_mask`` linear, ``group``,           one ``offset_mask`` output: per group 2P
                ``offset_scale``                             (dx, dy), then P signed weights
``mmcv``        ``conv_offset`` conv, 4-D ``weight``,        ``conv_offset(x)``: offsets, or chunk(3)
                ``deform_groups``                            -> cat(o1, o2), sigmoid(m)
``detectron2``  4-D ``weight``, ``deformable_groups``,       forward arguments ``offset`` (and ``mask``)
                ``forward(x, offset[, mask])``
==============  ===========================================  ==========================================

torchvision's ``DeformConv2d``, deformscope's own layer and modules calling
``torchvision.ops.deform_conv2d`` are found by ``models.discovery`` and described by :func:`describe_layer`, the one entry for
any known layer.
"""

from __future__ import annotations

from typing import Protocol

from torch import nn
from torchvision.ops import DeformConv2d as TorchvisionDeformConv2d

from models.contract import ForwardArgument, SamplingLayer, Source, conv_geometry
from models.families import dcnv3, dcnv4, detectron2, mmcv
from models.ops.deform_conv import DeformConv2d


class Family(Protocol):
    """One DCN family's adapter (a module of this package)."""

    NAME: str

    def matches(self, module: nn.Module) -> bool: ...

    def describe(
        self, name: str, module: nn.Module, pixel_stride: tuple[float, float], pixel_offset: tuple[float, float]
    ) -> SamplingLayer: ...


#: Checked in this order; the first that matches describes the layer.
FAMILIES: tuple[Family, ...] = (dcnv3, dcnv4, mmcv, detectron2)  # type: ignore[assignment]


def family_of(module: nn.Module) -> Family | None:
    """The family whose structure ``module`` has, or None."""
    for fam in FAMILIES:
        if fam.matches(module):
            return fam
    return None


def describe(
    name: str,
    module: nn.Module,
    pixel_stride: tuple[float, float] = (1.0, 1.0),
    pixel_offset: tuple[float, float] = (0.0, 0.0),
) -> SamplingLayer:
    """The contract's entry for a layer of any family here (``models.contract`` for the fields)."""
    fam = family_of(module)
    if fam is None:
        raise TypeError(
            f"{type(module).__name__} is not a layer of a known DCN family ({', '.join(f.NAME for f in FAMILIES)})"
        )
    return fam.describe(name, module, pixel_stride, pixel_offset)


def describe_layer(
    name: str,
    module: nn.Module,
    pixel_stride: tuple[float, float],
    pixel_offset: tuple[float, float],
    offset_source: Source | None = None,
    mask_source: Source | None = None,
) -> SamplingLayer:
    """A :class:`SamplingLayer` for a known layer type, sources filled in:

    - our ``DeformConv2d``: outputs of ``offset_conv`` / ``mask_conv``;
    - ``torchvision.ops.DeformConv2d``: forward arguments ``offset`` (1) and ``mask`` (2);
    - ``nn.Conv2d``: a regular layer, no sources;
    - a layer of another DCN family (DCNv3, DCNv4, mmcv, detectron2): ``models.families``.

    Explicit ``offset_source`` / ``mask_source`` win over the defaults.
    """
    family = family_of(module) if offset_source is None and not isinstance(module, DeformConv2d) else None
    if family is not None:
        return family.describe(name, module, pixel_stride, pixel_offset)

    if offset_source is None and isinstance(module, TorchvisionDeformConv2d):
        offset_source = ForwardArgument(module, 1, "offset")
        mask_source = mask_source or ForwardArgument(module, 2, "mask")
    return SamplingLayer(
        name=name,
        module=module,
        pixel_stride=(float(pixel_stride[0]), float(pixel_stride[1])),
        pixel_offset=(float(pixel_offset[0]), float(pixel_offset[1])),
        offset_source=offset_source,
        mask_source=mask_source,
        **conv_geometry(module),
    )


__all__ = ["FAMILIES", "Family", "describe", "describe_layer", "family_of"]
