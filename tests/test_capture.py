"""Capture: one forward pass, right shapes, hooks always removed."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

import viz
from models import build_model


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("arch", ["deform", "deform2", "regular"])
def test_capture_shapes_and_logits(arch):
    torch.manual_seed(0)
    model = build_model(arch).eval()
    x = torch.rand(4, 1, 28, 28)
    cap = viz.capture(model, x)
    assert torch.allclose(cap.logits, model(x))
    assert cap.probabilities.shape == (4, 10) and torch.allclose(cap.probabilities.sum(1), torch.ones(4))
    assert len(cap.layers) == 3
    for layer in cap.layers:
        assert layer.offsets_yx.shape == (4, 1, 9, 2, 14, 14)
        assert layer.in_size == layer.out_size == (14, 14)
        assert (layer.mask is not None) == (arch == "deform2")
        assert layer.deformable == (arch != "regular")
        assert layer.out_pixel_stride == (2.0, 2.0) and layer.out_pixel_offset == (0.5, 0.5)
    if arch == "deform2":
        assert cap.top.mask.shape == (4, 1, 9, 14, 14)
        assert torch.allclose(cap.top.mask, torch.full_like(cap.top.mask, 0.5))  # fresh DCNv2
    assert _hook_count(model) == 0


def test_captured_offsets_are_the_offset_branch_output():
    torch.manual_seed(0)
    model = build_model("deform").eval()
    torch.nn.init.normal_(model.top[1].offset_conv.weight, std=0.1)
    x = torch.rand(2, 1, 28, 28)
    cap = viz.capture(model, x, keep_features=True)
    expected = model.top[1].offset_conv(cap.layers[1].inputs)
    assert torch.allclose(cap.layers[1].offsets_yx.reshape(2, 18, 14, 14), expected)
    assert cap.layers[1].offsets_yx.abs().sum() > 0


def test_single_image_is_a_batch_of_one():
    cap = viz.capture(build_model("deform").eval(), torch.rand(1, 28, 28))
    assert cap.images.shape == (1, 1, 28, 28)


def test_hooks_removed_when_forward_raises():
    model = build_model("deform2").eval()

    def boom(*_):
        raise RuntimeError("boom")

    handle = model.head.register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        viz.capture(model, torch.rand(1, 1, 28, 28))
    handle.remove()
    assert _hook_count(model) == 0


def test_training_mode_is_restored():
    model = build_model("deform").train()
    viz.capture(model, torch.rand(1, 1, 28, 28))
    assert model.training


def test_model_without_contract():
    with pytest.raises(TypeError, match="sampling_layers"):
        viz.capture(nn.Conv2d(1, 1, 3), torch.rand(1, 1, 8, 8))


def _randomised(model: nn.Module, std: float = 0.1) -> nn.Module:
    """Non-zero offset and mask branches, so every input gets its own points."""
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "offset_conv" in name or "mask_conv" in name:
            torch.nn.init.normal_(p, std=std)
    return model.eval()


class TorchvisionStack(nn.Module):
    """Two torchvision ``DeformConv2d`` layers fed by sibling offset convs: sources are forward
    arguments, as in detection toolkits."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.ops import DeformConv2d as TvDeformConv2d

        torch.manual_seed(0)
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.offsets = nn.ModuleList([nn.Conv2d(4, 18, 3, padding=1) for _ in range(2)])
        self.masks = nn.ModuleList([nn.Conv2d(4, 9, 3, padding=1) for _ in range(2)])
        self.layers = nn.ModuleList([TvDeformConv2d(4, 4, 3, padding=1) for _ in range(2)])

    def forward(self, x):
        x = torch.relu(self.stem(x))
        for off, msk, layer in zip(self.offsets, self.masks, self.layers, strict=True):
            x = torch.relu(layer(x, off(x), mask=torch.sigmoid(msk(x))))
        return x.mean(dim=(2, 3))

    def sampling_layers(self):
        from models import describe_layer

        return [describe_layer(f"layers.{i}", m, (1.0, 1.0), (0.0, 0.0)) for i, m in enumerate(self.layers)]


def _shared_models():
    from models import SceneNet

    return {
        "digits": (_randomised(build_model("deform2")), (1, 28, 28)),
        "scenes": (_randomised(SceneNet("deform", widths=(8, 8, 8, 8, 8))), (1, 32, 32)),
        "torchvision": (TorchvisionStack().eval(), (1, 12, 12)),
        "discovered": (_discovered(), (1, 12, 12)),
    }


def _discovered():
    """A user's model with no contract, found by discovery: a torchvision DeformConv2d layer and
    an inline op call whose offsets are read by a per-thread torch function mode."""
    from models.discovery import discover
    from tests.user_models import FrontAndStack, InlineDeform, TvPair

    torch.manual_seed(0)
    model = FrontAndStack([nn.Conv2d(1, 4, 3, padding=1)], [TvPair(4, 4, mask=True), InlineDeform(4, 4)])
    return discover(model, 12, mean=0.0, std=1.0)


@pytest.mark.parametrize("which", ["digits", "scenes", "torchvision", "discovered"])
def test_concurrent_captures_on_one_shared_model_equal_serial_ones(which):
    model, shape = _shared_models()[which]
    threads, per_thread = 4, 6
    g = torch.Generator().manual_seed(1)
    inputs = [[torch.rand(1, *shape, generator=g) for _ in range(per_thread)] for _ in range(threads)]
    serial = [[viz.capture(model, x) for x in row] for row in inputs]
    results: list[list] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(t: int) -> None:
        try:
            start.wait()
            for x in inputs[t]:
                results[t].append(viz.capture(model, x))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert not errors
    for t in range(threads):
        for got, want in zip(results[t], serial[t], strict=True):
            assert torch.equal(got.logits, want.logits)
            for a, b in zip(got.layers, want.layers, strict=True):
                assert torch.equal(a.offsets_yx, b.offsets_yx)
                assert (a.mask is None) == (b.mask is None)
                if a.mask is not None:
                    assert torch.equal(a.mask, b.mask)
            assert torch.equal(viz.backproject(got, (3, 3)).x, viz.backproject(want, (3, 3)).x)
    assert _hook_count(model) == 0


def _their_forward(model: nn.Module, x: torch.Tensor, seen: list, errors: list) -> threading.Thread:
    """Another user's plain forward pass on the shared model, in its own thread."""

    def run() -> None:
        try:
            seen.append(model(x))
        except BaseException as exc:  # reported by the caller, not lost in the thread
            errors.append(exc)

    return threading.Thread(target=run)


def test_a_forward_pass_while_capture_registers_its_hooks_is_unharmed():
    """torch registers a ``with_kwargs`` forward hook in two steps: the hook into
    ``_forward_hooks``, then its id into ``_forward_hooks_with_kwargs``. Another thread's forward
    pass that lands between them calls the hook as ``hook(module, args, output)``; CI once failed
    on it (TypeError: missing 'out'). Here such a pass is forced into that gap on every hook."""
    from collections import OrderedDict

    model = _randomised(build_model("deform2"))
    x_mine, x_theirs = torch.rand(1, 1, 28, 28), torch.rand(1, 1, 28, 28)
    want_mine, want_theirs = viz.capture(model, x_mine), model(x_theirs)
    seen: list[torch.Tensor] = []
    errors: list[BaseException] = []

    class Gap(OrderedDict):
        def __setitem__(self, key, value):
            th = _their_forward(model, x_theirs, seen, errors)  # the hook is in, its flag not yet
            th.start()
            th.join()
            super().__setitem__(key, value)

    for m in model.modules():
        m._forward_hooks_with_kwargs = Gap(m._forward_hooks_with_kwargs)
    got = viz.capture(model, x_mine)
    assert not errors
    assert len(seen) >= 6 and all(torch.equal(y, want_theirs) for y in seen)
    assert torch.equal(got.logits, want_mine.logits)
    for a, b in zip(got.layers, want_mine.layers, strict=True):
        assert torch.equal(a.offsets_yx, b.offsets_yx) and torch.equal(a.mask, b.mask)
    assert _hook_count(model) == 0


def test_a_forward_pass_that_outlives_the_capture_hooks_is_unharmed():
    """The same gap on removal: a forward pass takes a snapshot of the hooks, capture ends and
    removes its hooks and their ``with_kwargs`` flags, and the pass then calls the removed hook
    from its snapshot without kwargs. Forced here with a gate hook (registered first, so it runs
    first) that parks the other pass inside its hook loop until the capture has ended."""
    model = _randomised(build_model("deform"))
    layer = model.sampling_layers()[0].module
    x_mine, x_theirs = torch.rand(1, 1, 28, 28), torch.rand(1, 1, 28, 28)
    want_mine, want_theirs = viz.capture(model, x_mine), model(x_theirs)
    seen: list[torch.Tensor] = []
    errors: list[BaseException] = []
    parked, capture_done = threading.Event(), threading.Event()
    mine = threading.get_ident()
    theirs = _their_forward(model, x_theirs, seen, errors)

    def gate(_m, _args, _out):
        if threading.get_ident() == mine and not theirs.is_alive() and not parked.is_set():
            theirs.start()  # their pass starts now: its snapshot holds capture's hooks
            assert parked.wait(10)
        elif threading.get_ident() != mine:
            parked.set()
            capture_done.wait(10)  # resume the loop only once capture removed its hooks

    handle = layer.register_forward_hook(gate)
    try:
        got = viz.capture(model, x_mine)
        capture_done.set()
        theirs.join()
    finally:
        handle.remove()
    assert parked.is_set() and not errors
    assert len(seen) == 1 and torch.equal(seen[0], want_theirs)
    assert torch.equal(got.logits, want_mine.logits)
    assert _hook_count(model) == 0


def test_failing_forward_in_one_thread_leaves_nothing_for_the_others():
    model = _randomised(build_model("deform"))
    x_ok, x_other = torch.rand(1, 1, 28, 28), torch.rand(1, 1, 20, 20)  # any size works: global pooling
    want = viz.capture(model, x_ok)
    outcome: dict[str, object] = {}

    def bad() -> None:
        try:
            viz.capture(model, torch.rand(1, 2, 28, 28))  # wrong channel count: the stem raises
        except RuntimeError as exc:
            outcome["bad"] = exc

    th = threading.Thread(target=bad)
    th.start()
    th.join()
    assert isinstance(outcome["bad"], RuntimeError)
    assert _hook_count(model) == 0
    got = viz.capture(model, x_ok)
    assert torch.equal(got.top.offsets_yx, want.top.offsets_yx)
    assert viz.capture(model, x_other).top.out_size == (10, 10)


def test_torchvision_layers_are_captured_through_forward_arguments():
    model = TorchvisionStack()
    x = torch.rand(2, 1, 12, 12)
    cap = viz.capture(model, x, keep_features=True)
    feats = torch.relu(model.stem(x))
    expected = model.offsets[0](feats)
    assert torch.allclose(cap.layers[0].offsets_yx.reshape(2, 18, 12, 12), expected)
    assert torch.allclose(cap.layers[0].mask.reshape(2, 9, 12, 12), torch.sigmoid(model.masks[0](feats)))
    assert cap.layers[1].deformable and cap.layers[1].modulated


def test_a_layer_that_runs_twice_is_refused():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return self.conv(self.conv(x))

        def sampling_layers(self):
            from models import describe_layer

            return [describe_layer("conv", self.conv, (1.0, 1.0), (0.0, 0.0))]

    with pytest.raises(RuntimeError, match="ran 2 times"):
        viz.capture(Twice(), torch.rand(1, 1, 8, 8))


def test_a_window_of_a_deep_stack_back_projects_from_its_own_top():
    import pytest

    from tests.stack_model import Stack, constant_offsets

    size = (10, 10)
    cap = viz.capture(Stack([constant_offsets(0.5 * i, 0, size) for i in range(4)]), torch.rand(1, 10, 10))
    window = cap.up_to(1)
    assert window.top is cap.layers[1] and len(window.layers) == 2 and window.logits is cap.logits
    pts = viz.backproject(window, (5, 5))
    assert pts.levels == 2 and pts.count(level=2) == 81
    # level 1 of the window is layer 2's own samples: its offsets (0.5 rows) from unit (5, 5)
    assert torch.allclose(pts.y[pts.where(level=1)].mean(), torch.tensor(5.5))
    with pytest.raises(ValueError, match="between 0 and 3"):
        cap.up_to(4)
