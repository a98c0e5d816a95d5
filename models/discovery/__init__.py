"""Discovery: the sampling-layer contract for a model that does not state it (a user's model).

One idea a module: ``find`` (which layers), ``probe`` (where their maps lie, whether they are
stacked), ``model`` (the wrapped model and :func:`discover`), ``user_code`` (importing the
user's factory and weights); the DCN families' layouts are adapters in ``models.families``.

Given any ``nn.Module`` and an example input size, :func:`discover` finds the deformable
layers and works out everything the contract (``models.contract``) needs:

1. **Which layers.** One forward pass on a random example, with hooks on every submodule and a
   torch function mode watching ``torchvision::deform_conv2d`` calls, finds, in the order they
   run: ``torchvision.ops.DeformConv2d`` modules (offset and mask are forward arguments),
   our :class:`~models.ops.deform_conv.DeformConv2d`, and any other module whose forward calls
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

from models.discovery.errors import DiscoveryError
from models.discovery.find import FoundLayer, find_layers, sampling_layer
from models.discovery.model import DiscoveredModel, discover
from models.discovery.probe import ProbedGeometry, check_stacked, probe_geometry
from models.discovery.user_code import import_factory, load_weights

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
    "sampling_layer",
]
