"""Device choice, timing and memory helpers, and the device paths of training, the layer, its
CUDA dispatch and every view.

The CUDA tests run wherever torch sees a GPU and are skipped, with the reason, elsewhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor

from models import runtime
from models.bench import cpu_peaks, peak_memory_mb
from models.checkpoint import load_checkpoint, save_checkpoint
from models.ops import deform_conv
from models.runtime import describe_device, resolve_device

ROOT = Path(__file__).resolve().parents[1]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="sees no CUDA GPU.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_describe_device_names_the_cpu(monkeypatch, tmp_path):
    info, empty = tmp_path / "cpuinfo", tmp_path / "empty"  # one file each: a file is read once
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654 96-Core Processor\n")
    assert runtime.cpu_model(info) == "AMD EPYC 9654 96-Core Processor"
    empty.write_text("processor\t: 0\nmodel name\t:\n")  # some virtual machines leave it empty
    assert runtime.cpu_model(empty) is None
    assert runtime.cpu_model(tmp_path / "absent") is None
    monkeypatch.setattr(runtime, "cpu_model", lambda: "AMD EPYC")
    assert describe_device(torch.device("cpu"), 3) == "CPU (AMD EPYC), 3 threads"
    monkeypatch.setattr(runtime, "cpu_model", lambda: None)
    assert describe_device(torch.device("cpu"), 3) == "CPU, 3 threads"


def _peak_of_64_mb() -> float | None:
    return peak_memory_mb(lambda: torch.ones(64 * 2**20 // 4).sum(), torch.device("cpu"))


@pytest.mark.slow
def test_peak_memory_measures_an_allocation():
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:  # it changes glibc's settings: a child
        mb = pool.apply(_peak_of_64_mb)
    if mb is None:
        pytest.skip("this system cannot reset the peak resident memory (/proc/self/clear_refs)")
    assert 60 <= mb <= 80  # the 64 MB tensor, plus a little


@pytest.mark.slow
def test_cpu_peaks_of_the_benchmark_ops():
    peaks = cpu_peaks(8, 16, 16, 20)
    if peaks["regular conv"] is None:
        pytest.skip("this system cannot reset the peak resident memory (/proc/self/clear_refs)")
    assert set(peaks) == {"regular conv", "torchvision deform", "ours deform", "plain im2col", "ours' matmul alone"}
    im2col_mb = 8 * 16 * 9 * 20 * 20 * 4 / 2**20  # ours holds its sampled columns for the backward
    assert im2col_mb <= peaks["ours deform"] < 50


def test_measure_faster_times_both_and_leaves_inputs_alone():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 6, 6, generator=g, requires_grad=True)
    off = torch.randn(1, 18, 6, 6, generator=g)
    w = torch.randn(3, 2, 3, 3, generator=g)
    name, medians = deform_conv.measure_faster((x, off, w, None, 1, 1, 1, None), repeats=1)
    assert set(medians) == {"ours", "torchvision"} and name == min(medians, key=medians.get)
    assert x.grad is None  # copies were timed, not the caller's tensors


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_measure_faster_inside_a_no_grad_call(mode):
    # a model's first call on the GPU (where the layer measures) is often an inference under
    # no_grad or inference_mode, with inference tensors as inputs: the timing must still run
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 2, 3, 3, generator=g)
    with getattr(torch, mode)():
        x = torch.randn(1, 2, 6, 6, generator=g)
        off = torch.randn(1, 18, 6, 6, generator=g)
        mask = torch.rand(1, 9, 6, 6, generator=g)
        name, medians = deform_conv.measure_faster((x, off, w, None, 1, 1, 1, mask), repeats=1)
        assert not torch.is_grad_enabled()  # the caller's mode is back
    assert name in ("ours", "torchvision") and all(t > 0 for t in medians.values())


def test_training_on_cpu_device_argument(tmp_path):
    from models.data.mnist import Split
    from models.train.loop import TrainConfig, predict, train

    g = torch.Generator().manual_seed(0)
    data = Split(torch.rand(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g), "16 random")
    model, log = train(TrainConfig(arch="deform", epochs=1, batch_size=8), data, progress=False, device="cpu")
    assert log["steps"] == 2 and predict(model, data.images).shape == (16,)


@needs_cuda
def test_layer_on_cuda_equals_cpu():
    torch.manual_seed(0)
    layer = deform_conv.DeformConv2d(4, 6, 3, padding=1, modulated=True)
    torch.nn.init.normal_(layer.offset_conv.weight, std=0.5)
    x = torch.randn(2, 4, 9, 9)
    for impl in ("ours", "torchvision", "auto"):
        deform_conv.CUDA_IMPL = impl
        try:
            gpu = layer.cuda()(x.cuda()).cpu()
        finally:
            deform_conv.CUDA_IMPL = "auto"
        assert torch.allclose(gpu, layer.cpu()(x), atol=1e-4), impl
    deform_conv._CUDA_CHOICE.clear()  # so that "auto" measures again, inside inference mode
    with torch.inference_mode():
        gpu = layer.cuda()(x.cuda()).cpu()
    assert torch.allclose(gpu, layer.cpu()(x), atol=1e-4), "auto under inference_mode"


@needs_cuda
def test_training_on_cuda_saves_a_cpu_checkpoint(tmp_path):
    from models.data.mnist import Split
    from models.train.loop import TrainConfig, model_config, predict, train

    g = torch.Generator().manual_seed(0)
    data = Split(torch.rand(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g), "16 random")
    cfg = TrainConfig(arch="deform2", epochs=1, batch_size=8)
    model, _ = train(cfg, data, progress=False, device="cuda")
    assert next(model.parameters()).is_cuda
    save_checkpoint(model, tmp_path / "m.pt", model_config(model, cfg), {})
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert torch.equal(predict(loaded, data.images), predict(model, data.images))


def test_a_command_refuses_an_unknown_device(capsys):
    from models.train import evaluate

    with pytest.raises(SystemExit) as exc:
        evaluate.main(["no_such.pt", "--device", "tpu"])
    assert exc.value.code == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


# A child process: page faults of freeing and re-making a 64 MB tensor, in glibc's default mode,
# after keep_freed_memory() and after hand_freed_memory_back(); the last rounds of each, once
# the heap has settled.
_FAULTS_CHILD = """
import resource, torch
from models.runtime import hand_freed_memory_back, keep_freed_memory

def faults():
    for _ in range(6):
        torch.ones(16 * 2**20)  # 64 MB, every page written
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        torch.ones(16 * 2**20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults()
assert keep_freed_memory()
kept = faults()
assert hand_freed_memory_back()
handed_back = faults()
print(default, kept, handed_back)
"""


@pytest.mark.slow
@pytest.mark.skipif(runtime._libc() is None, reason="glibc only: this C library has no mallopt")
def test_keep_freed_memory_reuses_large_blocks():
    pages = 4 * 64 * 2**20 // 4096  # what four fresh 64 MB blocks fault in, in 4 kB pages
    # Page-fault counts come from the kernel; once in a full run here a fresh child counted no
    # faults for fresh mappings at all (the kernel's memory daemon at work), so the measurement
    # is taken up to three times and the first that shows the default behaviour is judged.
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS_CHILD], capture_output=True, text=True, check=True, cwd=ROOT
        )
        default, kept, handed_back = map(int, out.stdout.split())
        if default > pages // 2 and handed_back > pages // 2:
            break
    # default: each block is a fresh mapping; kept: the freed block is handed out again
    assert default > pages // 2, (default, kept, handed_back)
    assert kept < pages // 20, (default, kept, handed_back)
    assert handed_back > pages // 2, (default, kept, handed_back)


def test_time_interleaved_times_in_turn():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "slow")}
    times = runtime.time_interleaved(fns, repeats=4, warmup=1, every={"slow": 3})
    assert calls[:3] == ["a", "b", "slow"]  # one warm-up each
    # then round by round; the slow one only in rounds 0 and 3
    assert calls[3:] == ["a", "b", "slow", "a", "b", "a", "b", "a", "b", "slow"]
    assert [len(times[n]) for n in fns] == [4, 4, 2]
    assert all(t >= 0 for ts in times.values() for t in ts)


def test_cuda_dispatch_measures_once_per_shape_and_obeys_a_forced_choice(monkeypatch):
    # The dispatch logic is device-agnostic: run it on CPU tensors, with the measurement replaced
    # by a slow counting stub, from several threads at once.
    import threading
    import time

    measured = []

    def fake_measure(args, repeats=3, backward=True):
        measured.append((tuple(args[0].shape), backward))
        time.sleep(0.05)  # the other threads arrive while this one measures
        return "torchvision", {"ours": 2.0, "torchvision": 1.0}

    monkeypatch.setattr(deform_conv, "measure_faster", fake_measure)
    monkeypatch.setattr(deform_conv, "_CUDA_CHOICE", {})
    w = torch.randn(3, 2, 3, 3, requires_grad=True)  # a layer's weight: its calls are differentiated

    def args_for(size):
        return (torch.randn(1, 2, size, size), torch.zeros(1, 18, size, size), w, None, 1, 1, 1, None)

    chosen = []
    threads = [threading.Thread(target=lambda: chosen.append(deform_conv._cuda_op(args_for(6)))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deform_conv._cuda_op(args_for(7))
    # once per shape, however many callers; forward and backward, as training will run
    assert measured == [((1, 2, 6, 6), True), ((1, 2, 7, 7), True)]
    assert len(chosen) == 4 and all(op is deform_conv._implementations()["torchvision"] for op in chosen)
    with torch.no_grad():  # an inference of a known shape is measured again, forward alone
        deform_conv._cuda_op(args_for(6))
        deform_conv._cuda_op(args_for(6))
    assert measured[2:] == [((1, 2, 6, 6), False)]
    monkeypatch.setattr(deform_conv, "CUDA_IMPL", "ours")
    assert deform_conv._cuda_op(args_for(8)) is deform_conv.deform_conv2d and len(measured) == 3


def test_measure_faster_is_hidden_from_torch_function_modes():
    # viz records the op calls of a layer with a torch function mode; the trial runs of the
    # dispatch (inside a layer's first forward on a GPU) must not be recorded as the layer's
    from torch.overrides import TorchFunctionMode

    seen = []

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(func)
            return func(*args, **(kwargs or {}))

    x, off, w = torch.rand(1, 2, 5, 5), torch.rand(1, 18, 5, 5), torch.rand(3, 2, 3, 3)
    with Recorder():
        deform_conv.measure_faster((x, off, w, None, 1, 1, 1, None), repeats=1)
        assert seen == []
        deform_conv.deform_conv2d(x, off, w, padding=1)  # while an ordinary call is seen
    assert seen


def test_measure_faster_times_what_will_run(monkeypatch):
    # forward alone for an inference, forward and backward for training: each implementation is
    # called (warm-up + repeats) and, with backward, differentiated
    calls = []

    def fake(name):
        def op(x, offset, weight, *rest):
            calls.append((name, torch.is_grad_enabled(), x.requires_grad))
            return (x * weight.sum()).sum() + offset.sum()

        return op

    monkeypatch.setattr(deform_conv, "_implementations", lambda: {"ours": fake("ours"), "torchvision": fake("tv")})
    x, off, w = torch.rand(1, 2, 4, 4), torch.zeros(1, 18, 4, 4), torch.rand(3, 2, 3, 3)
    deform_conv.measure_faster((x, off, w, None, 1, 1, 1, None), repeats=2, backward=False)
    assert calls == [("ours", False, False)] * 3 + [("tv", False, False)] * 3
    calls.clear()
    with torch.no_grad():  # the caller's mode does not decide; the argument does
        deform_conv.measure_faster((x, off, w, None, 1, 1, 1, None), repeats=2, backward=True)
    assert calls == [("ours", True, True)] * 3 + [("tv", True, True)] * 3


def _every_view(device: str) -> dict[str, Tensor | list[Tensor]]:
    """What the app and the export compute for a scene, a digit, an RoI box and a user model, run
    on ``device``; all of it comes back on the CPU."""
    import viz
    from viz.roi import roi_bins
    from viz.samples import load_samples, load_scene_samples
    from viz.support import saliency_region, unit_support

    scenes, digit = load_scene_samples(), load_samples().images[1]
    scene = scenes.images[10]
    out: dict[str, Tensor | list[Tensor]] = {}
    for name, image, unit in (("scene_deform2", scene, (6, 10)), ("deform_rts", digit, (7, 7))):
        model = viz.load(name, device)
        cap = viz.capture(model, image)
        out[f"{name} logits"] = cap.logits
        out[f"{name} offsets"] = [layer.offsets_yx for layer in cap.layers]
        for method in viz.METHODS:
            pts = viz.backproject(cap, unit, method=method)
            if method == "bilinear":  # a fixed number of points: compare them one by one
                out[f"{name} {method}"] = torch.stack([pts.x, pts.y, pts.weight])
            else:  # rounding or merging may differ at a tie: compare mass and centre
                mass = pts.weight.sum()
                out[f"{name} {method}"] = torch.stack(
                    [mass, (pts.x * pts.weight).sum() / mass, (pts.y * pts.weight).sum() / mass]
                )
        out[f"{name} erf"] = unit_support(model, image, unit).erf
        out[f"{name} saliency errors"] = saliency_region(model, image, unit).errors
    first_box = scenes.boxes[(scenes.scene == 10).nonzero()[0, 0]]  # boxes are listed for all scenes
    bins = roi_bins(viz.load("roi_deform", device), scene, tuple(float(v) for v in first_box))
    out["roi bins"], out["roi probabilities"] = bins.moved, bins.probabilities
    user = viz.load_user_model(
        "examples.dcn_resnet:dcn_resnet", weights=ROOT / "examples" / "dcn_resnet_digits.pt", device=device
    )
    out["user model offsets"] = [layer.offsets_yx for layer in viz.capture(user, digit).layers]
    return out


@needs_cuda
def test_every_view_on_cuda_equals_cpu():
    cpu, gpu = _every_view("cpu"), _every_view("cuda")
    for key, want in cpu.items():
        got = gpu[key]
        for w, g in zip(
            want if isinstance(want, list) else [want], got if isinstance(got, list) else [got], strict=True
        ):
            assert not g.is_cuda, key  # views always come back on the CPU
            assert g.shape == w.shape and torch.allclose(g, w, rtol=1e-3, atol=1e-3), key
