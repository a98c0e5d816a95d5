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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
