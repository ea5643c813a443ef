"""Simplifying a recorded step (inference.recording_simplify): fewer ops, the same values and gradients bit for
bit, and never a rewrite that changes where a gradient flows (no_grad blocks, detach, sampled values)."""

import collections

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from inference.recording_simplify import simplify


def record(program, *inputs):
    return make_fx(program, pre_dispatch=True)(*inputs)


def ops(graph) -> collections.Counter:
    return collections.Counter(str(n.target) for n in graph.graph.nodes if n.op == "call_function")


def run(program, p, *inputs):
    """The program's output and the gradient its sum sends to ``p``."""
    p.grad = None
    out = program(*inputs)
    out.sum().backward()
    return out.detach(), p.grad.clone()


def same_as_eager(program, p, *inputs, removed_at_least=1):
    """Record, simplify, and compare the replay with the eager program: values and gradients bit for bit."""
    graph = record(program, *inputs)
    before = sum(ops(graph).values())
    simplify(graph)
    assert before - sum(ops(graph).values()) >= removed_at_least
    eager_out, eager_grad = run(program, p, *inputs)
    replay_out, replay_grad = run(graph, p, *inputs)
    assert torch.equal(eager_out, replay_out) and torch.equal(eager_grad, replay_grad)
    return graph


def test_a_view_chain_back_to_its_own_shape_is_dropped():
    p = torch.randn(5, requires_grad=True)

    def program(x):
        s = (p * x).sum(-1)  # (3,)
        return s.reshape(1, 3).reshape(1, 3)[0] * 2.0 + s.expand(3)

    graph = same_as_eager(program, p, torch.randn(3, 5), removed_at_least=3)
    assert not {"aten.reshape.default", "aten.select.int", "aten.expand.default"} & set(ops(graph))


def test_a_view_made_under_no_grad_is_kept_when_read_with_grad():
    p = torch.randn(4, requires_grad=True)

    def program(x):
        with torch.no_grad():
            frozen = p.reshape(4)  # does not require grad; dropping it would make it p and double the gradient
        return frozen * x + p * x

    graph = record(program, torch.randn(4))
    simplify(graph)
    assert "aten.reshape.default" in ops(graph)
    x = torch.randn(4)
    assert torch.equal(run(program, p, x)[1], run(graph, p, x)[1])


def test_detach_is_not_a_view_to_drop_but_repeats_of_it_are_shared():
    p = torch.randn(4, requires_grad=True)

    def program(x):
        return p.detach() * p * x + p.detach()

    graph = same_as_eager(program, p, torch.randn(4))
    assert ops(graph)["aten.detach.default"] == 1


def test_a_value_drawn_under_no_grad_stays_out_of_the_backward():
    """A distribution's sample is drawn under no_grad; replayed with grad on, the draw would join autograd's graph
    (bernoulli's derivative is zero: the same gradient, one more matrix product to compute it)."""
    w = torch.randn(6, 6, requires_grad=True)

    def program(x):
        logits = x @ w
        with torch.no_grad():
            h = torch.bernoulli(torch.sigmoid(logits))
        return (h @ w).sum(-1) + logits.sum(-1)

    x = torch.randn(3, 6)
    graph = record(program, x)
    simplify(graph)
    torch.manual_seed(1)
    eager_out, eager_grad = run(program, w, x)
    torch.manual_seed(1)
    replay_out, replay_grad = run(graph, w, x)
    assert torch.equal(eager_out, replay_out) and torch.equal(eager_grad, replay_grad)
    torch.manual_seed(1)
    assert backward_nodes(graph(x)) == backward_nodes(program(x)) == {"AddBackward0": 1, "MmBackward0": 2,
                                                                      "SumBackward1": 2, "AccumulateGrad": 1}


def backward_nodes(out) -> dict:
    counts, seen, stack = collections.Counter(), set(), [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is not None and fn not in seen:
            seen.add(fn)
            counts[type(fn).__name__] += 1
            stack.extend(f for f, _ in fn.next_functions)
    return dict(counts)


def test_empty_no_grad_blocks_are_removed():
    p = torch.randn(3, requires_grad=True)

    def program(x):
        with torch.no_grad():
            pass
        with torch.no_grad():
            c = x * 2.0
        return p * c

    graph = same_as_eager(program, p, torch.randn(3))
    assert [bool(n.args[0]) for n in graph.graph.nodes
            if n.op == "call_function" and n.target is torch._C._set_grad_enabled] == [False, True]


def test_broadcast_of_literals_is_precomputed():
    p = torch.randn(4, requires_grad=True)

    def program(x):
        loc, scale = torch.broadcast_tensors(torch.zeros(4), torch.ones(1))
        return ((p * x - loc) / scale.pow(2)).neg()

    graph = same_as_eager(program, p, torch.randn(4), removed_at_least=4)
    assert not {"aten.broadcast_tensors.default", "aten.pow.Tensor_Scalar", "aten.zeros.default"} & set(ops(graph))
