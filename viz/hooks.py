"""One home for the hooks viz puts on a model: :class:`HookContext`.

Every call that watches or changes a forward pass (``viz.capture`` records offsets and masks,
``viz.support`` puts a gate on every sample) opens one ``HookContext``. Its hooks are registered
on entry and removed on exit, even when the forward pass raises.

Why a context and not bare hooks: one model is shared by many threads (one Streamlit server, many
browser sessions). A hook lives on the shared module, so it also fires during every other
thread's forward pass. Each context therefore marks itself active in a :mod:`contextvars`
variable private to the calling thread (and asyncio task); its hooks do nothing in a pass where
another context (or none) is active. No lock serialises the users.

Torchvision-style layers that call ``torchvision.ops.deform_conv2d`` inside their forward hand
their offset and mask to the op, not to a module we can hook: :meth:`HookContext.op_frame` marks
such a layer's forward as running, and :meth:`HookContext.tap_ops` sees (or changes) the
arguments of the op call made by the innermost running layer. Torch function modes are per
thread, so only this thread's op calls pass through it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from contextvars import ContextVar
from typing import Any

from torch import nn
from torch.overrides import TorchFunctionMode

from models.contract import is_torchvision_deform_op

#: The context whose hooks may act in this thread / task; None outside every call.
_ACTIVE: ContextVar[HookContext | None] = ContextVar("deformscope_hooks", default=None)

#: ``handler(layer_index, args) -> args``: sees (and may replace) an op call's arguments.
OpHandler = Callable[[int, tuple[Any, ...]], tuple[Any, ...]]


class HookContext:
    """The hooks of one call, active only for the thread / task that entered it.

    Use as ``with HookContext() as hooks: hooks.forward(module, fn); model(x)``. Every
    ``fn`` runs only in this context's own forward passes; every hook is removed on exit.
    """

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._token = None
        #: indices of the layers whose forward runs now and whose op calls are tapped (innermost last)
        self.op_frames: list[int] = []
        self._framed: set[int] = set()
        self._op_handler: OpHandler | None = None

    def __enter__(self) -> HookContext:
        self._token = _ACTIVE.set(self)
        self._stack.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._stack.__exit__(*exc)
        finally:
            _ACTIVE.reset(self._token)

    def active(self) -> bool:
        """Whether the running forward pass is this context's."""
        return _ACTIVE.get() is self

    def forward(self, module: nn.Module, fn: Callable[..., Any], with_kwargs: bool = False) -> None:
        """``fn(module, args, output)`` (``fn(module, args, kwargs, output)`` with ``with_kwargs``)
        after ``module``'s forward in this context's passes; a non-None return replaces the output."""

        def hook(m: nn.Module, args: tuple[Any, ...], *rest: Any) -> Any:
            # Checked first: torch writes a hook and its with_kwargs flag in two steps, so another
            # thread's pass that overlaps our registration may call it with the other signature.
            # Such a pass is never ours, and it must run unharmed.
            if _ACTIVE.get() is not self:
                return None
            if with_kwargs:
                kwargs, out = rest if len(rest) == 2 else ({}, rest[0])
                return fn(m, args, kwargs, out)
            return fn(m, args, rest[-1])

        self._stack.callback(module.register_forward_hook(hook, with_kwargs=with_kwargs).remove)

    def before(self, module: nn.Module, fn: Callable[..., Any], with_kwargs: bool = False) -> None:
        """``fn(module, args)`` (``fn(module, args, kwargs)`` with ``with_kwargs``) before
        ``module``'s forward in this context's passes; its return value is ignored."""

        def hook(m: nn.Module, args: tuple[Any, ...], *rest: Any) -> None:
            if _ACTIVE.get() is not self:
                return None
            fn(m, args, *(rest if with_kwargs else ()))
            return None

        self._stack.callback(module.register_forward_pre_hook(hook, with_kwargs=with_kwargs).remove)

    def op_frame(self, module: nn.Module, index: int, on_leave: Callable[[Any], None] | None = None) -> None:
        """Mark ``module``'s forward as layer ``index``'s frame, so the op calls it makes are
        tapped as that layer's (once per index); ``on_leave(output)`` runs when it returns."""
        if index in self._framed:
            return
        self._framed.add(index)

        def enter(_m: nn.Module, _args: tuple[Any, ...]) -> None:
            self.op_frames.append(index)

        def leave(_m: nn.Module, _args: tuple[Any, ...], out: Any) -> None:
            if self.op_frames and self.op_frames[-1] == index:
                self.op_frames.pop()
            if on_leave is not None:
                on_leave(out)

        self.before(module, enter)
        self.forward(module, leave)

    def tap_ops(self, handler: OpHandler) -> None:
        """Route every ``torchvision.ops.deform_conv2d`` call made inside a marked frame through
        ``handler(innermost frame's index, args)``, whose returned args are the ones the op gets."""
        if self._op_handler is not None:
            raise RuntimeError("one op handler per context")
        self._op_handler = handler
        self._stack.enter_context(_OpTap(self))


class _OpTap(TorchFunctionMode):
    """The per-thread torch function mode behind :meth:`HookContext.tap_ops`."""

    def __init__(self, context: HookContext) -> None:
        super().__init__()
        self.context = context

    def __torch_function__(self, func, types, args=(), kwargs=None):
        ctx = self.context
        if ctx.op_frames and is_torchvision_deform_op(func):
            args = ctx._op_handler(ctx.op_frames[-1], tuple(args))
        return func(*args, **(kwargs or {}))


__all__ = ["HookContext", "OpHandler"]
