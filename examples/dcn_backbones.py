"""Real backbones made deformable the way researchers do it: torchvision's ResNets with some 3x3
convs replaced by ``torchvision.ops.DeformConv2d`` and a sibling offset conv. Untrained (no
download here); offsets start small and random so the sampling is visibly deformed. For the
benchmark (``python -m viz.bench --model examples.dcn_backbones:dcn_resnet18 --input-size 224``)
and the worked example in docs/your_model.md.

    dcn_resnet18():  ResNet-18, the four 3x3 convs of layer4 deformable (DCNv1), 224x224 RGB
    dcn_resnet50():  ResNet-50, the 3x3 conv of every bottleneck in layer3 and layer4 deformable
                     (DCNv2, modulated), the usual "DCN in stages 3-5" setting of detection configs
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models import resnet18, resnet50
from torchvision.ops import DeformConv2d


class DeformableConv(nn.Module):
    """A 3x3 conv made deformable: ``offset`` (a conv of the same geometry) predicts the 2 * 9
    offsets (and 9 mask logits when modulated) from the same input."""

    def __init__(self, conv: nn.Conv2d, modulated: bool = False, offset_std: float = 0.05) -> None:
        super().__init__()
        k, s, p, d = conv.kernel_size, conv.stride, conv.padding, conv.dilation
        self.modulated = modulated
        self.offset = nn.Conv2d(conv.in_channels, (3 if modulated else 2) * k[0] * k[1], k, s, p, d)
        nn.init.normal_(self.offset.weight, std=offset_std)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(conv.in_channels, conv.out_channels, k, s, p, d, bias=conv.bias is not None)
        with torch.no_grad():
            self.conv.weight.copy_(conv.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = self.offset(x)
        if self.modulated:
            n = out.shape[1] // 3
            return self.conv(x, out[:, : 2 * n], torch.sigmoid(out[:, 2 * n :]))
        return self.conv(x, out)


def dcn_resnet18() -> nn.Module:
    """ResNet-18 (1000 ImageNet classes, untrained) with layer4's four 3x3 convs deformable."""
    torch.manual_seed(0)
    model = resnet18(weights=None)
    for block in model.layer4:
        block.conv1 = DeformableConv(block.conv1)
        block.conv2 = DeformableConv(block.conv2)
    return model.eval()


def dcn_resnet50() -> nn.Module:
    """ResNet-50 (untrained) with the 3x3 conv of every bottleneck of layer3 and layer4
    deformable and modulated (DCNv2): 6 + 3 layers."""
    torch.manual_seed(0)
    model = resnet50(weights=None)
    for stage in (model.layer3, model.layer4):
        for block in stage:
            block.conv2 = DeformableConv(block.conv2, modulated=True)
    return model.eval()
