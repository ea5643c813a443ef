"""Replay a Pyro objective as the tensor program it traces to, without Pyro's handlers on every step.

A VAE step through Pyro spends a fifth of its time in the effect handlers
(messages, plates, traces, ``pyro.module`` re-registering every parameter),
none of it tensor work. For a model/guide pair whose structure depends only on
the shapes of its inputs (no branch on a tensor's value, no Python state that
changes between steps), the tensor operations of one step, sampling included,
are the same every step. :func:`torch.fx.experimental.proxy_tensor.make_fx`
records them once above autograd (``pre_dispatch=True``: the ``no_grad`` block
around a distribution's draw is recorded too, so a sample never joins the
backward), :mod:`inference.recording_simplify` removes what only the Python
route needed, and later steps run the recording. Parameters
are captured by reference (an optimiser's in-place update is seen), random ops
are recorded as ops that draw from the global generator afresh, and the
recording calls the same kernels in the same order as the Pyro route, so the
losses, the gradients and the random stream are the same, bit for bit on CPU
(tests/inference/test_trace_replay.py trains with and without it).

What keeps it honest:

- a program that reads a traced value into Python (``.item()``, a branch on a
  tensor) cannot be recorded (make_fx refuses), and one whose recording mutates
  a captured tensor (a BatchNorm's running mean) is not replayed: both stay on
  the Pyro route;
- the first call of every input signature is Pyro's own (it guesses plate
  nesting and registers parameters); the second is recorded while it runs, so
  recording draws nothing extra (an abandoned recording is undone: random state
  and buffers restored, the step re-taken through Pyro);
- the first replay of every signature, and every ``check_every``-th call after
  it, runs the Pyro route for real and the recording on the same random state,
  and compares the loss and every gradient; a mismatch puts that signature back
  on the Pyro route for good, with a warning naming it.

Only objectives that declare ``replayable = True`` use it: those whose
``loss_and_grads`` is exactly ``differentiable_loss(...).backward()`` with no
other side effect (an annealed weight read as a float), or that say what more
a step does with ``replay_step`` (the tensors to differentiate and report,
updating declared ``state`` such as NVIL's running statistics) and ``report``
(those outputs to the float the step returns).
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from pyro.infer.util import is_validation_enabled

from .recording_simplify import mutating_ops, simplify

__all__ = ["TraceReplay"]


def _signature(batch) -> tuple:
    return tuple((tuple(t.shape), t.dtype, t.device, t.requires_grad) if isinstance(t, torch.Tensor) else ("value", t)
                 for t in batch) + (torch.is_grad_enabled(),)


def _devices(batch) -> list:
    return sorted({t.device.index or 0 for t in batch if isinstance(t, torch.Tensor) and t.device.type == "cuda"})


class TraceReplay:
    """``loss_and_grads(*batch)`` through a recording of ``differentiable_loss``, falling back to ``pyro_step``.

    :param pyro_step: the Pyro route: ``pyro_step(*batch)`` returns the loss as a float and accumulates gradients.
    :param differentiable_loss: ``differentiable_loss(*batch)`` returns the same loss as a tensor whose
        ``backward()`` accumulates the same gradients.
    :param buffers: ``buffers()`` lists the tensors the program may update in place (a module's buffers), restored
        when a recording is abandoned so that the step it stood for runs once, through Pyro.
    :param int check_every: compare against the Pyro route every this many calls of a signature.
    :param float rtol: relative tolerance of that comparison (loss and gradients).
    """

    def __init__(self, pyro_step: Callable, differentiable_loss: Callable, buffers: Callable = list,
                 check_every: int = 1000, rtol: float = 1e-5, state: Callable = list, report: Callable = None):
        self.pyro_step, self.differentiable_loss, self.buffers = pyro_step, differentiable_loss, buffers
        self.check_every, self.rtol = check_every, rtol
        self.state = state  # tensors the step itself updates in place (running statistics): replayed as written
        # the float a step returns, from the program's outputs: the loss itself, or (loss, reported, extras...)
        self.report = report or (lambda out: out.item())
        self._graphs: dict = {}  # signature -> recorded GraphModule, or the reason it runs Pyro's route
        self._calls: dict = {}

    @property
    def status(self) -> dict:
        """Per input shape: ``"replayed"`` or why that signature runs the Pyro route."""
        return {str([s[0] for s in key[:-1]]): ("replayed" if not isinstance(g, str) else g)
                for key, g in self._graphs.items()}

    def __call__(self, *batch) -> float:
        if not torch.is_grad_enabled() or is_validation_enabled():  # validation is what the Pyro route is for
            return self.pyro_step(*batch)
        key = _signature(batch)
        graph = self._graphs.get(key)
        calls = self._calls[key] = self._calls.get(key, 0) + 1
        if isinstance(graph, str) or (graph is None and calls == 1):  # the first is Pyro's own: it guesses plate
            return self.pyro_step(*batch)                                # nesting and registers the parameters
        if graph is None:
            return self._recorded_step(key, batch)
        if calls == 3 or calls % self.check_every == 0:
            return self._checked_step(key, graph, batch)
        out = graph(*batch)
        _backward(out)
        return self.report(out)

    def _refuse(self, key, reason: str) -> str:
        self._graphs[key] = reason
        return reason

    def _recorded_step(self, key, batch) -> float:
        """This step, run once for real while make_fx records it (so recording costs no extra draw or update)."""
        from torch.fx.experimental.proxy_tensor import make_fx

        devices = _devices(batch)
        rng, saved = _rng_state(devices), [(b, b.clone()) for b in self.buffers()]
        ran = {}

        def program(*args):
            ran["out"] = self.differentiable_loss(*args)
            return ran["out"]

        reason = None
        try:
            graph = make_fx(program, pre_dispatch=True)(*batch)
        except Exception as e:  # noqa: BLE001 -- whatever stops the recording, the Pyro route still works
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            reason = f"Pyro route: the program cannot be recorded ({first[:160]})"
        else:
            mutating = mutating_ops(graph, self.state())
            if mutating:
                reason = f"Pyro route: the program updates tensors in place ({', '.join(mutating[:3])})"
        if reason is not None:
            return self._abandon(key, reason, rng, saved, devices, batch)
        simplify(graph)
        if mutating_ops(graph, self.state()):  # a safeguard: nothing simplify made a constant may be written by a step
            return self._abandon(key, "Pyro route: the simplified program would write a precomputed tensor", rng,
                                 saved, devices, batch, ran)
        self._graphs[key] = graph
        _backward(ran["out"])
        return self.report(ran["out"])

    def _abandon(self, key, reason, rng, saved, devices, batch, ran=None) -> float:
        """Undo the recorded run (random state, buffers), then take the step through Pyro."""
        _set_rng_state(rng, devices)
        for buffer, value in saved:
            buffer.copy_(value)
        self._refuse(key, reason)
        return self.pyro_step(*batch)

    def _checked_step(self, key, graph, batch) -> float:
        """The Pyro route's step, and the recording's on the same random state, compared."""
        captured = {id(t): t for t in (getattr(graph, n.target) for n in graph.graph.nodes if n.op == "get_attr")
                    if isinstance(t, torch.Tensor)}
        params = [t for t in captured.values() if t.requires_grad]
        before = [None if p.grad is None else p.grad.clone() for p in params]
        devices = _devices(batch)
        state = _rng_state(devices)
        held = self.state()
        held_before = [t.clone() for t in held]
        loss = self.pyro_step(*batch)
        held_pyro = [t.clone() for t in held]
        with torch.random.fork_rng(devices=devices):
            _set_rng_state(state, devices)
            for t, v in zip(held, held_before):  # the replay's own update starts where Pyro's did
                t.copy_(v)
            out = graph(*batch)
            first = out[0] if isinstance(out, (tuple, list)) else out
            grads = (torch.autograd.grad(first, params, allow_unused=True) if first.requires_grad
                     else [None] * len(params))
            replayed_loss = self.report(out)
        problem = None
        if not _close(torch.tensor(loss), torch.tensor(replayed_loss), self.rtol):
            problem = f"loss {replayed_loss:.9g} against Pyro's {loss:.9g}"
        for t, pyro_value in zip(held, held_pyro):
            if problem is None and not _close(pyro_value, t, self.rtol):
                problem = f"an updated state tensor of shape {list(t.shape)} differs from Pyro's"
            t.copy_(pyro_value)  # the step's state is the Pyro route's, as for the parameters' gradients
        for p, b, g in zip(params, before, grads):
            pyro_g = None if p.grad is None else (p.grad if b is None else p.grad - b)
            if problem is None and not _close(pyro_g, g, self.rtol):
                problem = f"a gradient of shape {list(p.shape)} differs from Pyro's"
        if problem is not None:
            self._refuse(key, f"Pyro route: the recording no longer matches ({problem})")
            warnings.warn(f"trace replay: the recorded program no longer matches the Pyro route ({problem}); "
                          "this input shape runs through Pyro from now on", RuntimeWarning, stacklevel=3)
        return loss


def _backward(out) -> None:
    loss = out[0] if isinstance(out, (tuple, list)) else out
    if loss.requires_grad:
        loss.backward()


def _rng_state(devices) -> tuple:
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]


def _set_rng_state(state, devices) -> None:
    torch.set_rng_state(state[0])
    for d, s in zip(devices, state[1]):
        torch.cuda.set_rng_state(s, d)


def _close(a, b, rtol: float) -> bool:
    if a is None or b is None:
        return (a is None or not bool(a.any())) and (b is None or not bool(b.any()))
    scale = float(b.abs().max()) if b.numel() else 0.0
    return bool(torch.allclose(a.to(b.device), b, rtol=rtol, atol=rtol * max(scale, 1e-12)))
