"""Small process-level helpers every command shares: atomic file writes, CPU threads, the
device, timing."""

from __future__ import annotations

import argparse
import ctypes
import functools
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch


def default_file_mode() -> int:
    """The mode ``open()`` would give a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Write ``path`` atomically: ``write(tmp_path)`` fills a temporary file in the same folder,
    which then replaces ``path`` (readers never see a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, default_file_mode())  # mkstemp makes private files; use the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def use_all_cpu_threads() -> int:
    """Let torch use every CPU this process may run on; returns the count."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, Windows, musl)
        return None


def keep_freed_memory(limit_mb: int = 1024) -> bool:
    """Let glibc keep the large blocks a process frees and hand them out again, instead of
    returning each to the system: blocks up to ``limit_mb`` come from its heap, and freed memory
    at the heap's top stays until it exceeds ``limit_mb``. Returns False (and changes nothing)
    where the C library is not glibc.

    Why: by default glibc maps every block above its mmap threshold (which rises with use, but
    never above 32 MB) afresh from the system and unmaps it when freed, so every 4 kB page of a
    new large tensor faults in when first written. A training step makes and frees tensors larger
    than that at every deformable layer (the im2col matrix and its gradient: 58 MB for a 64-channel
    layer of the digit net at batch 128): measured on this project's machine, a DCNv1 training step
    took 20% less time with this, a DCNv2 step 38% less, for 5% more peak resident memory. The
    regular conv's smaller tensors were already reused (its step did not change). Called by the
    commands that train, evaluate and benchmark, never on import: a long-running server that
    wants its memory back between requests keeps glibc's defaults."""
    libc = _libc()
    limit = limit_mb * 2**20
    return libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, limit) and libc.mallopt(_M_TRIM_THRESHOLD, limit))


def hand_freed_memory_back() -> bool:
    """The opposite of :func:`keep_freed_memory`, for measuring memory: glibc maps every block
    above 128 kB afresh and unmaps it when freed, and returns what it holds free now, so that
    resident memory tracks what is in use. Makes later work slower (every large tensor's pages
    fault in). False where the C library is not glibc."""
    libc = _libc()
    if libc is None:
        return False
    libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    libc.malloc_trim(0)
    return True


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto``: the GPU when torch sees one, else the CPU; ``cpu``; ``cuda`` (or ``cuda:N``); a
    ``torch.device`` is returned as it is.

    Raises ValueError, in words, when CUDA is asked for and torch cannot use it."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {name}: torch {torch.__version__} sees no CUDA GPU on this machine "
                "(use --device cpu, or auto to take the GPU only when there is one)"
            )
        return torch.device(name)
    raise ValueError(f"unknown device {name!r}: use one of {', '.join(DEVICES)}")


def device_or_exit(name: str) -> torch.device:
    """:func:`resolve_device` for a command's ``--device``: a bad one prints the reason and exits
    with status 2, as argparse does for a bad option."""
    try:
        return resolve_device(name)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="where to run: auto (the GPU when there is one, else the CPU), cpu, or cuda[:N]",
    )


@functools.cache  # read once per process: the app names the device on every rerun
def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """The processor's model name (``'AMD EPYC'``) from Linux's cpuinfo; None where it is not
    readable. Timings depend on it (torch's BLAS, for one, is much faster on some vendors)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return None


def describe_device(device: torch.device, threads: int | None = None) -> str:
    """``'GPU 0: NVIDIA H200'`` or ``'CPU (AMD EPYC), 2 threads'``, for the commands' first line."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"GPU {index}: {torch.cuda.get_device_name(index)}"
    model = cpu_model()
    return f"CPU{f' ({model})' if model else ''}, {threads or torch.get_num_threads()} threads"


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (the CPU for a model with neither)."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (a no-op on the CPU), so that wall times measure the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_runs(
    fn: Callable[[], object], repeats: int, warmup: int = 1, device: torch.device | None = None
) -> list[float]:
    """Wall times in seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones (on a
    GPU ``device``, each call is waited for before its time is taken). To compare functions,
    time them in turn with :func:`time_interleaved`."""
    return time_interleaved({"fn": fn}, repeats, warmup, device)["fn"]


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    device: torch.device | None = None,
    every: dict[str, int] | None = None,
) -> dict[str, list[float]]:
    """Wall times in seconds of each of ``fns``, timed in turn: round ``r`` calls every function
    once (a function named in ``every`` only in rounds ``r % every[name] == 0``, for a slow one).
    Whatever else the machine is doing then weighs on every function alike, so the ratios of
    their medians stay fair on a shared machine whose speed drifts from minute to minute (timing
    one function's runs, then the next's, does not). ``warmup`` untimed calls of each first; on a
    GPU ``device`` each call is waited for before its time is taken."""
    dev = device or torch.device("cpu")
    every = every or {}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(dev)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats):
        for name, fn in fns.items():
            if r % every.get(name, 1):
                continue
            t0 = time.perf_counter()
            fn()
            synchronize(dev)
            times[name].append(time.perf_counter() - t0)
    return times


def spread(times: list[float], scale: float = 1e3) -> str:
    """``min / median / max`` of timings, scaled (default: milliseconds)."""
    return f"{scale * min(times):.1f} / {scale * statistics.median(times):.1f} / {scale * max(times):.1f}"


__all__ = [
    "DEVICES",
    "add_device_argument",
    "atomic_write",
    "atomic_write_text",
    "cpu_model",
    "default_file_mode",
    "describe_device",
    "device_or_exit",
    "hand_freed_memory_back",
    "keep_freed_memory",
    "model_device",
    "resolve_device",
    "spread",
    "synchronize",
    "time_interleaved",
    "time_runs",
    "use_all_cpu_threads",
]
