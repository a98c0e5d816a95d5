"""Benchmark: regular conv vs torchvision's deformable op vs ours; training steps; RoI pooling.

    python -m models.bench [--repeats 5] [--device auto|cpu|cuda] [--no-train] [--sections families ...]

All ops of a table are timed in turn, round by round, so that a shared machine's drifting speed
weighs on each alike, after untimed warm-up runs of every op. The warm-ups also bring glibc's
allocator to the steady state of a long-running process: until a process frees its first large
block, every allocation over 128 kB is a fresh mmap whose pages fault in when first touched, and
a regular conv timed first in a fresh process measured 7-9 ms instead of 2.5-4 ms on the MNIST
shape (earlier versions of this benchmark timed it so, which flattered ours). Like the commands
that train and evaluate, the benchmark lets glibc keep freed blocks of up to 1 GB for reuse
(models.runtime.keep_freed_memory); --glibc-defaults measures without it, as a process that
does not ask for it runs (blocks over 32 MB, such as a training batch's im2col matrix, are then
mapped afresh at every call).

For each op (a regular conv, torchvision's deformable op, ours, and two parts that explain ours'
cost: torch's plain im2col, and ours' final matmul alone with its multiply-adds per second beside
the regular conv's): min / median / max wall times of the forward and of forward+backward, the
ratios of medians measured in the same run, and the peak memory of one forward+backward above
what its inputs already hold (CPU: the peak resident memory of a child process, reset before
each op through /proc/self/clear_refs, with glibc told to hand large blocks back, in a child so
that the times are not disturbed; CUDA: torch's peak allocated memory). Then the time of a
training step of the digit classifiers (DCNv1, DCNv2, regular, batch 128, 28x28) and what that
makes an epoch of 10,000 digits; then deformable RoI pooling against roi_align. On CUDA, ours and
torchvision's compiled op are both timed, and the layer uses the faster one, forward alone for an
inference, forward and backward for training (models.ops.deform_conv.CUDA_IMPL).
"""

from __future__ import annotations

import argparse
import gc
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from models.ops.deform_conv import deform_conv2d
from models.runtime import (
    add_device_argument,
    describe_device,
    device_or_exit,
    hand_freed_memory_back,
    keep_freed_memory,
    spread,
    synchronize,
    time_interleaved,
    use_all_cpu_threads,
)

SHAPES = {
    "mnist (N=128, 32->64, 14x14)": (128, 32, 64, 14),
    "larger (N=32, 64->128, 28x28)": (32, 64, 128, 28),
}
EPOCH_DIGITS = 10_000  # the training split shipped in ../shared


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak memory (MB) one call of ``fn`` adds to what is already held; None where this system
    cannot measure it. On the CPU this changes how glibc allocates for the rest of the process
    (big blocks mmapped, which makes later work slower): call it in a child process
    (:func:`cpu_peaks`), never where times are measured."""
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    try:
        hand_freed_memory_back()
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
        base = _rss_kb("VmRSS")
        fn()
        return (_rss_kb("VmHWM") - base) / 1024
    except OSError:
        return None


def _mb(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}"


def _shape_ops(
    n: int, cin: int, cout: int, size: int, device: torch.device
) -> dict[str, tuple[Callable[[], object], Callable[[], None]]]:
    """Forward and forward+backward of each op on one benchmark shape (inputs made once)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, cin, size, size, generator=g).to(device).requires_grad_()
    w = torch.randn(cout, cin, 3, 3, generator=g).to(device).requires_grad_()
    b = torch.randn(cout, generator=g).to(device).requires_grad_()
    off = (2 * torch.randn(n, 18, size, size, generator=g)).to(device).requires_grad_()
    cols = torch.randn(n, 1, cin * 9, size * size, generator=g).to(device).requires_grad_()
    ops = {
        "regular conv": lambda: F.conv2d(x, w, b, padding=1),
        "torchvision deform": lambda: tv_deform_conv2d(x, off, w, b, padding=1),
        "ours deform": lambda: deform_conv2d(x, off, w, b, padding=1),
        # a floor for any gather-then-matmul layer: torch's own im2col of the same input, no
        # interpolation and no matmul (oneDNN's convolution never builds this matrix)
        "plain im2col": lambda: F.unfold(x, 3, padding=1),
        # ours' last step alone, on columns of the same shape: the per-image products with the
        # weights that the regular conv's oneDNN kernels do as one fused convolution
        "ours' matmul alone": lambda: torch.matmul(w.reshape(1, cout, cin * 9), cols),
    }

    def fwd_bwd(op) -> None:
        op().sum().backward()
        for t in (x, w, b, off, cols):
            t.grad = None

    return {name: (op, lambda op=op: fwd_bwd(op)) for name, op in ops.items()}


def _cpu_peaks_child(n: int, cin: int, cout: int, size: int) -> dict[str, float | None]:
    torch.set_num_threads(1)  # memory does not depend on threads; keep the child light
    return {
        name: peak_memory_mb(fwd_bwd, torch.device("cpu"))
        for name, (_, fwd_bwd) in _shape_ops(n, cin, cout, size, torch.device("cpu")).items()
    }


def cpu_peaks(n: int, cin: int, cout: int, size: int) -> dict[str, float | None]:
    """Peak MB of one forward+backward of each op on the CPU, measured in a fresh child process."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_cpu_peaks_child, (n, cin, cout, size))


def time_forward_and_backward(
    ops: dict[str, tuple[Callable[[], object], Callable[[], object]]],
    repeats: int,
    device: torch.device,
    slow: tuple[str, ...] = (),
) -> dict[str, tuple[list[float], list[float]]]:
    """Seconds of each op's forward (no grad) and forward+backward, ``ops`` mapping a name to
    ``(forward, forward_and_backward)``: all timed in turn, round by round, so that a machine's
    drifting speed weighs on every op alike; the ``slow`` ones in every third round only."""
    fns: dict[str, Callable[[], object]] = {}
    for name, (fwd, fwd_bwd) in ops.items():
        fns[name + "\tforward"], fns[name + "\tfwd+bwd"] = torch.no_grad()(fwd), fwd_bwd
    every = {key: 3 for key in fns if key.split("\t")[0] in slow}
    times = time_interleaved(fns, repeats, device=device, every=every)
    return {name: (times[name + "\tforward"], times[name + "\tfwd+bwd"]) for name in ops}


def bench_shape(
    n: int, cin: int, cout: int, size: int, repeats: int, device: torch.device
) -> dict[str, tuple[list[float], list[float], float | None]]:
    """Seconds of each op's forward and forward+backward (:func:`time_forward_and_backward`),
    and each op's peak MB."""
    ops = _shape_ops(n, cin, cout, size, device)
    # torchvision's CPU op is a per-point loop, ~50x slower
    slow = ("torchvision deform",) if device.type == "cpu" else ()
    times = time_forward_and_backward(ops, repeats, device, slow)
    if device.type == "cpu":
        peaks = cpu_peaks(n, cin, cout, size)
    else:
        peaks = {name: peak_memory_mb(fwd_bwd, device) for name, (_, fwd_bwd) in ops.items()}
    return {name: (*times[name], peaks[name]) for name in ops}


def bench_training(repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per training step (forward, loss, backward, AdamW step) of the digit classifiers."""
    from models.nets.digits import MnistNet

    g = torch.Generator().manual_seed(0)
    x = torch.rand(128, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (128,), generator=g).to(device)
    steps = {}
    for arch in ("regular", "deform", "deform2"):
        torch.manual_seed(0)
        model = MnistNet(arch).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step(model=model, opt=opt) -> None:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[arch] = step
    return time_interleaved(steps, repeats * 2, warmup=2, device=device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m models.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions (torchvision's CPU op: a third of them)")
    p.add_argument("--no-train", action="store_true", help="skip the training-step timing")
    p.add_argument(
        "--sections",
        nargs="+",
        choices=("shapes", "train", "families", "roi"),
        default=["shapes", "train", "families", "roi"],
        help="what to time: the op on two shapes, training steps, the DCN families' layers, RoI pooling",
    )
    p.add_argument(
        "--glibc-defaults",
        action="store_true",
        help="leave glibc's allocator as a plain process has it (large freed blocks go back to the "
        "system and are mapped afresh) instead of keeping them for reuse as the training commands do",
    )
    add_device_argument(p)
    args = p.parse_args(argv)
    threads = use_all_cpu_threads()
    device = device_or_exit(args.device)
    kept = not args.glibc_defaults and keep_freed_memory()
    print(
        f"torch {torch.__version__} on {describe_device(device, threads)}; 3x3 kernel, padding 1; "
        f"ms as min / median / max of {args.repeats} runs; ratios of medians; "
        "memory: peak MB of one forward+backward above its inputs; "
        f"allocator: {'freed blocks kept for reuse' if kept else 'glibc defaults'}"
    )
    for label, (n, cin, cout, size) in SHAPES.items() if "shapes" in args.sections else ():
        r = bench_shape(n, cin, cout, size, args.repeats, device)
        print(f"\n{label}")
        print(f"  {'op':<20}{'forward ms':>24}{'fwd+bwd ms':>26}{'memory MB':>12}")
        for name, (f, fb, mem) in r.items():
            print(f"  {name:<20}{spread(f):>24}{spread(fb):>26}{_mb(mem):>12}")
        med = {name: (statistics.median(f), statistics.median(fb)) for name, (f, fb, _) in r.items()}
        (cf, cfb), (tf, tfb), (of, ofb) = med["regular conv"], med["torchvision deform"], med["ours deform"]
        print(f"  speed-up over torchvision: forward {tf / of:.1f}x, fwd+bwd {tfb / ofb:.1f}x")
        print(f"  cost vs regular conv:      forward {of / cf:.1f}x, fwd+bwd {ofb / cfb:.1f}x")
        uf, ufb = med["plain im2col"]
        print(f"  plain im2col alone vs regular conv: forward {uf / cf:.1f}x, fwd+bwd {ufb / cfb:.1f}x")
        mf, mfb = med["ours' matmul alone"]
        print(f"  ours' matmul alone vs regular conv: forward {mf / cf:.1f}x, fwd+bwd {mfb / cfb:.1f}x")
        gflop = 2 * n * size * size * cout * cin * 9 / 1e9  # the same multiply-adds in both
        print(
            f"  forward throughput, {gflop:.2f} GFLOP each: regular conv {gflop / cf:.0f} GFLOP/s, "
            f"ours' matmul alone {gflop / mf:.0f} GFLOP/s"
        )
        mems = {name: mem for name, (_, _, mem) in r.items()}
        if mems["ours deform"] is not None and mems["regular conv"]:
            print(
                f"  memory vs regular conv:    ours {mems['ours deform'] / mems['regular conv']:.1f}x, "
                f"torchvision {mems['torchvision deform'] / mems['regular conv']:.1f}x"
            )
        if device.type == "cuda":
            print(
                f"  on this GPU the layer uses {'ours' if of <= tf else 'torchvision'} for inference (faster "
                f"forward), {'ours' if ofb <= tfb else 'torchvision'} for training (faster forward+backward)"
            )
    if not args.no_train and "train" in args.sections:
        steps = bench_training(args.repeats, device)
        per_epoch = -(-EPOCH_DIGITS // 128)
        print(f"\ntraining step of the digit classifier (batch 128, 28x28; an epoch of {EPOCH_DIGITS:,} digits)")
        print(f"  {'model':<20}{'step ms':>24}{'epoch s':>12}")
        for arch, t in steps.items():
            print(f"  {arch:<20}{spread(t):>24}{per_epoch * statistics.median(t):>12.1f}")
        reg = statistics.median(steps["regular"])
        print(
            "  epoch vs regular:          "
            + ", ".join(f"{a} {statistics.median(steps[a]) / reg:.1f}x" for a in ("deform", "deform2"))
        )
    if "families" in args.sections:
        bench_families(args.repeats, device)
    if "roi" in args.sections:
        bench_roi(args.repeats, device)
    return 0


#: The scene models' stacked layers: batch 32 of 64-channel 16x16 maps (64x64 scenes at stride 4).
FAMILY_SHAPE = (32, 64, 16)


def _family_ops(device: torch.device) -> dict[str, tuple[Callable[[], object], Callable[[], None]]]:
    """Forward and forward+backward of one scene-shaped layer of each kind, offset branches
    randomised so that the samples move (they start at zero)."""
    from models.ops.dcnv3 import DCNv3
    from models.ops.dcnv4 import DCNv4
    from models.ops.deform_conv import DeformConv2d

    n, c, size = FAMILY_SHAPE
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    layers = {
        "regular conv": torch.nn.Conv2d(c, c, 3, padding=1, bias=False),
        "ours DCNv1 layer": DeformConv2d(c, c, 3, padding=1, bias=False),
        "ours DCNv3 layer": DCNv3(c, 3, pad=1, group=4),
        "ours DCNv4 layer": DCNv4(c, 3, pad=1, group=4, dw_kernel_size=3),
    }
    for layer in layers.values():
        for name, param in layer.named_parameters():
            if any(part in ("offset_conv", "offset", "mask", "offset_mask") for part in name.split(".")[:-1]):
                torch.nn.init.normal_(param, std=0.05)
        layer.to(device)
    x = torch.randn(n, c, size, size, generator=g).to(device).requires_grad_()
    x_cl = x.detach().permute(0, 2, 3, 1).contiguous().requires_grad_()
    x_tok = x.detach().flatten(2).transpose(1, 2).contiguous().requires_grad_()
    inputs = {
        "regular conv": lambda m: m(x),
        "ours DCNv1 layer": lambda m: m(x),
        "ours DCNv3 layer": lambda m: m(x_cl),  # channels-last, as InternImage runs it
        "ours DCNv4 layer": lambda m: m(x_tok, (size, size)),  # tokens and shape
    }
    ops = {name: (lambda m=m, f=inputs[name]: f(m)) for name, m in layers.items()}

    def fwd_bwd(op) -> None:
        op().sum().backward()
        for t in (x, x_cl, x_tok, *(p for m in layers.values() for p in m.parameters())):
            t.grad = None

    return {name: (op, lambda op=op: fwd_bwd(op)) for name, op in ops.items()}


def bench_families(repeats: int, device: torch.device) -> None:
    """Our DCNv3 and DCNv4 layers on the scene shape against our DCNv1 layer and a regular conv of
    the same channels, timed in one run (goal: DCNv3/DCNv4 forward+backward within 1.5x DCNv1)."""
    times = time_forward_and_backward(_family_ops(device), repeats, device)
    n, c, size = FAMILY_SHAPE
    print(
        f"\nDCN families on the scene shape (N={n}, {c}->{c}, {size}x{size}; DCNv3/DCNv4: 4 groups, projections included)"
    )
    print(f"  {'layer':<20}{'forward ms':>24}{'fwd+bwd ms':>26}")
    for name, (f, fb) in times.items():
        print(f"  {name:<20}{spread(f):>24}{spread(fb):>26}")
    med = {name: (statistics.median(f), statistics.median(fb)) for name, (f, fb) in times.items()}
    v1f, v1fb = med["ours DCNv1 layer"]
    cf, cfb = med["regular conv"]
    for name in ("ours DCNv3 layer", "ours DCNv4 layer"):
        f, fb = med[name]
        verdict = "met" if fb <= 1.5 * v1fb else "not met"
        print(
            f"  {name}: vs DCNv1 forward {f / v1f:.2f}x, fwd+bwd {fb / v1fb:.2f}x (goal <= 1.5x: {verdict}); "
            f"vs regular conv forward {f / cf:.1f}x, fwd+bwd {fb / cfb:.1f}x"
        )


def bench_roi(repeats: int, device: torch.device | None = None) -> None:
    """Deformable RoI pooling (ours, random offsets) against roi_align: 128 RoIs, 64 channels."""
    from torchvision.ops import roi_align

    from models.ops.roi_pool import deform_roi_pool

    device = device or torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(8, 64, 32, 32, generator=g).to(device).requires_grad_()
    xy = torch.rand(128, 2, generator=g) * 100
    wh = 8 + torch.rand(128, 2, generator=g) * 40
    rois = torch.cat([torch.randint(0, 8, (128, 1), generator=g).float(), xy, (xy + wh).clamp(max=127)], dim=1)
    rois = rois.to(device)
    off = (0.5 * torch.randn(128, 2, 3, 3, generator=g)).to(device).requires_grad_()
    ops = {
        "roi_align": lambda: roi_align(feats, rois, 3, 0.25, 2, True),
        "ours deform_roi_pool": lambda: deform_roi_pool(feats, rois, off, 3, 0.25, 2, 0.1),
    }
    print("\nRoI pooling (128 RoIs, 64 channels, 8 maps of 32x32, 3x3 bins, sampling ratio 2)")
    print(f"  {'op':<22}{'forward ms':>22}{'fwd+bwd ms':>26}")
    times = time_forward_and_backward(
        {name: (op, lambda op=op: op().sum().backward()) for name, op in ops.items()}, repeats * 4, device
    )
    med = {}
    for name, (f, fb) in times.items():
        med[name] = (statistics.median(f), statistics.median(fb))
        print(f"  {name:<22}{spread(f):>22}{spread(fb):>26}")
    (rf, rfb), (of, ofb) = med["roi_align"], med["ours deform_roi_pool"]
    print(f"  ours vs roi_align: forward {of / rf:.1f}x, fwd+bwd {ofb / rfb:.1f}x (target: within 3x)")


if __name__ == "__main__":
    raise SystemExit(main())
