"""Benchmark: regular conv vs torchvision's deformable op vs ours, forward and forward+backward.

    python -m models.bench [--repeats 5]

Prints min / median / max wall times of each and the ratios of medians, measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from models.deform_conv import deform_conv2d
from models.runtime import spread, time_runs, use_all_cpu_threads

SHAPES = {
    "mnist (N=128, 32->64, 14x14)": (128, 32, 64, 14),
    "larger (N=32, 64->128, 28x28)": (32, 64, 128, 28),
}


def bench_shape(n: int, cin: int, cout: int, size: int, repeats: int) -> dict[str, tuple[list[float], list[float]]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, cin, size, size, generator=g, requires_grad=True)
    w = torch.randn(cout, cin, 3, 3, generator=g, requires_grad=True)
    b = torch.randn(cout, generator=g, requires_grad=True)
    off = (2 * torch.randn(n, 18, size, size, generator=g)).requires_grad_()
    ops = {
        "regular conv": lambda: F.conv2d(x, w, b, padding=1),
        "torchvision deform": lambda: tv_deform_conv2d(x, off, w, b, padding=1),
        "ours deform": lambda: deform_conv2d(x, off, w, b, padding=1),
    }
    out = {}
    for name, op in ops.items():
        reps = max(1, repeats // 3) if name.startswith("torchvision") else repeats
        with torch.no_grad():
            fwd = time_runs(op, reps)
        fb = time_runs(lambda op=op: op().sum().backward(), reps)
        out[name] = (fwd, fb)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m models.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions (torchvision's op: a third of them)")
    args = p.parse_args(argv)
    threads = use_all_cpu_threads()
    print(
        f"torch {torch.__version__}, {threads} threads, 3x3 kernel, padding 1; "
        f"ms as min / median / max of {args.repeats} runs; ratios of medians"
    )
    for label, (n, cin, cout, size) in SHAPES.items():
        r = bench_shape(n, cin, cout, size, args.repeats)
        print(f"\n{label}")
        print(f"  {'op':<20}{'forward ms':>24}{'fwd+bwd ms':>26}")
        for name, (f, fb) in r.items():
            print(f"  {name:<20}{spread(f):>24}{spread(fb):>26}")
        med = {name: (statistics.median(f), statistics.median(fb)) for name, (f, fb) in r.items()}
        (cf, cfb), (tf, tfb), (of, ofb) = med["regular conv"], med["torchvision deform"], med["ours deform"]
        print(f"  speed-up over torchvision: forward {tf / of:.1f}x, fwd+bwd {tfb / ofb:.1f}x")
        print(f"  cost vs regular conv:      forward {of / cf:.1f}x, fwd+bwd {ofb / cfb:.1f}x")
    bench_roi(args.repeats)
    return 0


def bench_roi(repeats: int) -> None:
    """Deformable RoI pooling (ours, random offsets) against roi_align: 128 RoIs, 64 channels."""
    from torchvision.ops import roi_align

    from models.roi_pool import deform_roi_pool

    g = torch.Generator().manual_seed(0)
    feats = torch.randn(8, 64, 32, 32, generator=g, requires_grad=True)
    xy = torch.rand(128, 2, generator=g) * 100
    wh = 8 + torch.rand(128, 2, generator=g) * 40
    rois = torch.cat([torch.randint(0, 8, (128, 1), generator=g).float(), xy, (xy + wh).clamp(max=127)], dim=1)
    off = (0.5 * torch.randn(128, 2, 3, 3, generator=g)).requires_grad_()
    ops = {
        "roi_align": lambda: roi_align(feats, rois, 3, 0.25, 2, True),
        "ours deform_roi_pool": lambda: deform_roi_pool(feats, rois, off, 3, 0.25, 2, 0.1),
    }
    print("\nRoI pooling (128 RoIs, 64 channels, 8 maps of 32x32, 3x3 bins, sampling ratio 2)")
    print(f"  {'op':<22}{'forward ms':>22}{'fwd+bwd ms':>26}")
    med = {}
    for name, op in ops.items():
        with torch.no_grad():
            f = time_runs(op, repeats * 4)
        fb = time_runs(lambda op=op: op().sum().backward(), repeats * 4)
        med[name] = (statistics.median(f), statistics.median(fb))
        print(f"  {name:<22}{spread(f):>22}{spread(fb):>26}")
    (rf, rfb), (of, ofb) = med["roi_align"], med["ours deform_roi_pool"]
    print(f"  ours vs roi_align: forward {of / rf:.1f}x, fwd+bwd {ofb / rfb:.1f}x (target: within 3x)")


if __name__ == "__main__":
    raise SystemExit(main())
