"""viz.hooks: one context holds a call's hooks, acts only in its own thread, and leaves nothing behind."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn
from torchvision.ops import deform_conv2d

from models.contract import TORCHVISION_OP_ARGS
from viz.hooks import HookContext


def test_hooks_fire_in_the_context_and_are_gone_after_it_even_when_the_pass_raises():
    conv = nn.Conv2d(1, 1, 3)
    seen = []
    with HookContext() as hooks:
        hooks.forward(conv, lambda m, args, out: seen.append(out.shape))
        hooks.before(conv, lambda m, args: seen.append("before"))
        conv(torch.zeros(1, 1, 5, 5))
    assert seen == ["before", torch.Size([1, 1, 3, 3])]
    assert not conv._forward_hooks and not conv._forward_pre_hooks
    with pytest.raises(RuntimeError), HookContext() as hooks:
        hooks.forward(conv, lambda m, args, out: seen.append("again"))
        conv(torch.zeros(1, 2, 5, 5))  # wrong channels: the pass raises
    assert not conv._forward_hooks


def test_a_return_value_replaces_the_output_and_kwargs_reach_with_kwargs_hooks():
    conv = nn.Conv2d(1, 1, 3)
    got = {}
    with HookContext() as hooks:
        hooks.forward(conv, lambda m, args, kwargs, out: got.update(kwargs=kwargs), with_kwargs=True)
        hooks.forward(conv, lambda m, args, out: out * 0 + 7)
        out = conv(torch.zeros(1, 1, 5, 5))
    assert got == {"kwargs": {}} and torch.all(out == 7)


def test_another_threads_forward_pass_is_not_seen():
    conv = nn.Conv2d(1, 1, 3)
    seen, inside, done = [], threading.Event(), threading.Event()

    def other() -> None:  # runs the shared module while our context is open
        inside.wait()
        conv(torch.zeros(1, 1, 5, 5))
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with HookContext() as hooks:
        hooks.forward(conv, lambda m, args, out: seen.append(threading.get_ident()))
        inside.set()
        done.wait(10)
        conv(torch.zeros(1, 1, 5, 5))
    t.join()
    assert seen == [threading.get_ident()]  # only our own pass


class InlineDeform(nn.Module):
    """A layer that calls torchvision's op inside its forward (no module holds the offsets)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, 1, 3, 3))

    def forward(self, x):
        offsets = torch.full((x.shape[0], 18, x.shape[2] - 2, x.shape[3] - 2), 0.5)
        return deform_conv2d(x, offsets, self.weight)


def test_op_calls_inside_a_frame_go_through_the_handler():
    layer = InlineDeform()
    x = torch.rand(1, 1, 6, 6)
    calls = []

    def handler(index, args):
        calls.append((index, args[TORCHVISION_OP_ARGS["offset"]].shape))
        return args

    with HookContext() as hooks:
        hooks.op_frame(layer, 4)
        hooks.tap_ops(handler)
        out = layer(x)
        deform_conv2d(x, torch.zeros(1, 18, 4, 4), layer.weight)  # outside the frame: not tapped
    assert calls == [(4, torch.Size([1, 18, 4, 4]))]
    assert torch.allclose(out, layer(x))  # the handler passed the arguments on unchanged
    with HookContext() as hooks, pytest.raises(RuntimeError, match="one op handler"):
        hooks.tap_ops(handler)
        hooks.tap_ops(handler)
