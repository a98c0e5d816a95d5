"""Dense scene models: per-pixel digit classification on multi-digit canvases (the paper's
DeepLab setting, scaled down), as DCNv1, DCNv2 and a regular twin.

Layout (all three architectures)::

    input (N, 1, S, S) in [0, 1], white digits on black (S = 64 for the shipped models)
    -> normalise (inside the model)
    -> stem: conv3x3(1->c0) BN ReLU, maxpool 2x2    S   -> S/2
             conv3x3(c0->c1) BN ReLU, maxpool 2x2   S/2 -> S/4
    -> three stacked 3x3 layers at S/4 (deformable, modulated deformable or regular):
       c1->c2, c2->c3, c3->c4, each followed by BN ReLU
    -> 1x1 conv (c4 -> 11 classes) -> bilinear upsampling x4: logits (N, 11, S, S)

Classes 0-9 are the digits and 10 the background (:mod:`models.data.scenes`). Fully convolutional,
so any input size divisible by 4 works. The regular twin has exactly the same parameters
apart from the offset (and mask) branches.

Where the top maps lie on the image (the ``sampling_layers()`` contract, ``models.contract``):
after two 2x2 max-pools, unit ``i`` of the S/4 maps covers pixels ``4i .. 4i + 3``, so
``pixel_stride = (4, 4)`` and ``pixel_offset = (1.5, 1.5)``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.contract import SamplingLayer
from models.data.scenes import NUM_CLASSES
from models.families import describe_layer
from models.nets.digits import SCENE_ARCHS, conv_bn_relu_pool, set_identity, stacked_layers

DEFAULT_WIDTHS = (32, 64, 64, 64, 96)


class SceneNet(nn.Module):
    """Stem to stride 4, three stacked 3x3 layers, per-pixel classifier. See the module docstring.

    Args:
        arch: ``"deform"`` (DCNv1), ``"deform2"`` (DCNv2), ``"regular"``, ``"dcnv3"`` (InternImage's
            DCNv3) or ``"dcnv4"`` (FlashInternImage's DCNv4), see ``models.nets.digits.stacked_layers``.
        widths: channels of the two stem convs and of the three stacked layers' outputs.
        mean, std: input normalisation (the training scenes' pixel statistics).

    Input ``(N, 1, H, W)`` in [0, 1] with H, W divisible by 4; output ``(N, 11, H, W)`` logits.
    """

    family = "scenes"
    pixel_stride = (4.0, 4.0)
    pixel_offset = (1.5, 1.5)

    def __init__(
        self,
        arch: str = "deform",
        widths: tuple[int, int, int, int, int] = DEFAULT_WIDTHS,
        mean: float = 0.0,
        std: float = 1.0,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        super().__init__()
        set_identity(self, arch, widths, mean, std, archs=SCENE_ARCHS)
        c0, c1, c2, c3, c4 = self.widths
        self.stem = nn.Sequential(*conv_bn_relu_pool(1, c0), *conv_bn_relu_pool(c0, c1))
        self.top, self.top_norms = stacked_layers(arch, (c1, c2, c3, c4))
        self.classifier = nn.Conv2d(c4, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if h % 4 or w % 4:
            raise ValueError(f"scene models need sides divisible by 4, got {h}x{w}")
        x = (x - self.mean) / self.std
        x = self.stem(x)
        for layer, norm in zip(self.top, self.top_norms, strict=True):
            x = torch.relu(norm(layer(x)))
        logits = self.classifier(x)
        return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)

    def sampling_layers(self) -> list[SamplingLayer]:
        """The three stacked 3x3 layers, bottom to top (``models.contract``)."""
        # DCNv3 / DCNv4 blocks sit in a channels-last / token wrapper: the block itself samples
        return [
            describe_layer(f"top.{i}", getattr(layer, "block", layer), self.pixel_stride, self.pixel_offset)
            for i, layer in enumerate(self.top)
        ]

    def config(self) -> dict[str, Any]:
        """What rebuilds this model (stored in checkpoints)."""
        return {
            "family": self.family,
            "arch": self.arch,
            "widths": list(self.widths),
            "num_classes": int(self.classifier.out_channels),
            "mean": float(self.mean),
            "std": float(self.std),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SceneNet:
        return cls(
            config["arch"],
            widths=tuple(config.get("widths", DEFAULT_WIDTHS)),  # type: ignore[arg-type]
            mean=float(config.get("mean", 0.0)),
            std=float(config.get("std", 1.0)),
            num_classes=int(config.get("num_classes", NUM_CLASSES)),
        )
