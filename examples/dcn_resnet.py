"""A small DCN ResNet written the way detection toolkits write one: plain PyTorch and
``torchvision.ops.DeformConv2d`` in the 3x3 of the last bottleneck blocks, with a sibling
``nn.Conv2d`` predicting the offsets (and, for DCNv2, the mask). Nothing in it knows about
deformscope: it is the kind of model a user already has. Copy it and change it.

    input (N, 1, 28, 28) digits, normalised with MNIST's mean/std outside the model
    stem:   conv3x3(1 -> 16) BN ReLU                                  28x28
    stage1: bottleneck, 3x3 with stride 2 (regular)          16 -> 32, 14x14
    stage2: 3 bottlenecks, deformable 3x3 (stride 1)         32 -> 32, 14x14
    head:   global average pool, linear(32 -> 10)

See it with deformscope::

    python -m viz.export --model examples.dcn_resnet:dcn_resnet \\
        --weights examples/dcn_resnet_digits.pt --image my_digit.png
    streamlit run app.py -- --model examples.dcn_resnet:dcn_resnet --weights examples/dcn_resnet_digits.pt

Train it again (about 12 minutes on two CPU cores: torchvision's CPU op is slow)::

    python -m examples.dcn_resnet --data-dir ../shared/data --out examples/dcn_resnet_digits.pt
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import DeformConv2d

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (deformable or regular, carrying the stride), 1x1 expand, plus shortcut."""

    def __init__(self, cin: int, width: int, stride: int = 1, deformable: bool = False, modulated: bool = False):
        super().__init__()
        cout = 2 * width
        self.deformable, self.modulated = deformable, modulated
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        if deformable:
            # Offsets (2 * 9 channels, row shift first) and, for DCNv2, 9 mask logits.
            self.conv2_offset = nn.Conv2d(width, (27 if modulated else 18), 3, stride, 1)
            nn.init.zeros_(self.conv2_offset.weight)
            nn.init.zeros_(self.conv2_offset.bias)
            self.conv2: nn.Module = DeformConv2d(width, width, 3, stride, 1, bias=False)
        else:
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        if self.deformable:
            o = self.conv2_offset(out)
            if self.modulated:
                out = self.conv2(out, o[:, :18], torch.sigmoid(o[:, 18:]))
            else:
                out = self.conv2(out, o)
        else:
            out = self.conv2(out)
        out = F.relu(self.bn2(out))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class DCNResNet(nn.Module):
    def __init__(self, num_classes: int = 10, modulated: bool = False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.stage1 = Bottleneck(16, 16, stride=2)
        self.stage2 = nn.Sequential(*(Bottleneck(32, 16, deformable=True, modulated=modulated) for _ in range(3)))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage2(self.stage1(self.stem(x)))
        return self.fc(x.mean(dim=(2, 3)))


def dcn_resnet(modulated: bool = False) -> DCNResNet:
    """The factory deformscope's ``--model examples.dcn_resnet:dcn_resnet`` calls."""
    return DCNResNet(modulated=modulated)


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from models.data.mnist import DataError, load_mnist
    from models.data.transforms import random_transform, transformed_test_set
    from models.runtime import atomic_write, keep_freed_memory, use_all_cpu_threads

    p = argparse.ArgumentParser(
        prog="python -m examples.dcn_resnet",
        description=(
            "Train the example DCN ResNet on MNIST's training digits (AdamW, one-cycle schedule), print "
            "its test accuracy on plain and augmented digits and save its state dict. The shipped "
            "weights come from the defaults (about 12 minutes on 2 CPU cores: torchvision's CPU op is slow)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data-dir", default="data", help="folder holding MNIST/raw (torchvision layout)")
    p.add_argument("--out", default="examples/dcn_resnet_digits.pt", help="where to write the state dict")
    p.add_argument("--epochs", type=int, default=10, help="passes over the training digits")
    p.add_argument("--batch-size", type=int, default=128, help="digits per step")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--augment", default="rotate+translate+scale", help="augmentation, as in models.train")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, batch order and augmentation")
    args = p.parse_args(argv)
    use_all_cpu_threads()
    keep_freed_memory()  # large tensors are reused, not mapped afresh each step
    torch.manual_seed(args.seed)
    try:
        train, test = load_mnist(args.data_dir, train=True), load_mnist(args.data_dir, train=False)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model = dcn_resnet()
    steps = args.epochs * ((len(train) + args.batch_size - 1) // args.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    with tqdm(total=steps, desc="train dcn_resnet", unit="step") as bar:
        for _ in range(args.epochs):
            perm = torch.randperm(len(train), generator=gen)
            for b in range(0, len(train), args.batch_size):
                idx = perm[b : b + args.batch_size]
                x = (random_transform(train.images[idx], args.augment, gen) - MNIST_MEAN) / MNIST_STD
                loss = F.cross_entropy(model(x), train.labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        for name, images in (("plain", test.images), (args.augment, transformed_test_set(test.images, args.augment))):
            pred = torch.cat(
                [model((images[i : i + 1000] - MNIST_MEAN) / MNIST_STD).argmax(1) for i in range(0, len(images), 1000)]
            )
            print(f"test accuracy ({name}): {100 * (pred == test.labels).float().mean():.2f}%")
    atomic_write(args.out, lambda tmp: torch.save(model.state_dict(), tmp))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
