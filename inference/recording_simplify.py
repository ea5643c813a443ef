"""Simplify a recorded step (an FX graph from ``make_fx(..., pre_dispatch=True)``) without changing what it computes.

A recording of a Pyro step holds work that only the Python route needs: a
plate's ``arange`` nobody reads, reshapes to the shape a tensor already has,
``broadcast_tensors`` of tensors that already agree, ``no_grad`` blocks that
open and close around nothing, literals computed afresh every step. Each is
a few microseconds of dispatch per step (and, for views, one more node for
autograd's backward), a tenth of a small model's step in all. The passes here
remove them; every kept op is the same kernel on the same values, so losses,
gradients and the random stream are unchanged bit for bit
(tests/inference/test_trace_replay.py).

The graph's nodes carry ``meta["val"]``, a fake tensor with the shape and
strides the op produced at recording time; a replay runs only on inputs of
the recorded signature, so those shapes hold on every replay.
"""

from __future__ import annotations

import torch

__all__ = ["mutating_ops", "simplify"]


def _root(node):
    """The node a view chain starts from (a view's output aliases its first input)."""
    while (node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
           and node.target._schema.returns and node.target._schema.returns[0].alias_info is not None and node.args):
        node = node.args[0]
    return node


def mutating_ops(graph, allowed=()) -> list:
    """In-place ops on captured tensors or inputs (a BatchNorm's running mean), which a replay would repeat;
    in-place ops on the program's own fresh tensors (``normal_`` on a new buffer) are harmless, and so are
    those on ``allowed`` tensors: state the step is meant to update once per step (NVIL's running statistics)."""
    allowed_ids = {id(t) for t in allowed}
    found = set()
    for node in graph.graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        for arg, value in zip(node.target._schema.arguments, node.args):
            if arg.alias_info is None or not arg.alias_info.is_write or not hasattr(value, "op"):
                continue
            root = _root(value)
            if root.op == "placeholder" or (root.op == "get_attr"
                                            and id(getattr(graph, root.target)) not in allowed_ids):
                found.add(str(node.target))
    return sorted(found)


#: ops whose result depends only on their arguments' shapes, dtypes and devices (fixed per signature), not values
_FACTORIES = {"aten::new_zeros", "aten::new_ones", "aten::new_full", "aten::zeros", "aten::ones", "aten::full",
              "aten::arange", "aten::scalar_tensor", "aten::zeros_like", "aten::ones_like", "aten::full_like"}


def _is_op(node) -> bool:
    return node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)


def _returns_tensors(node) -> bool:
    """One tensor, or a list of them (``broadcast_tensors``): values a buffer can hold."""
    returns = node.target._schema.returns
    return len(returns) == 1 and str(returns[0].type) in ("Tensor", "List[Tensor]")


def _is_getitem(node) -> bool:
    return node.op == "call_function" and getattr(node.target, "__name__", None) == "getitem"


def _pure(node) -> bool:
    """An op that neither writes a tensor nor draws from the random stream (safe to drop or precompute)."""
    return (_is_op(node) and not node.target._schema.is_mutable
            and torch.Tag.nondeterministic_seeded not in node.target.tags)


def fold_constants(graph) -> None:
    """Precompute what a recording computes from its own literals alone (a prior's ``log(scale)`` on an expanded
    constant, ``zeros``), each value made by the same kernel as before. Ops that draw random numbers or write
    tensors are never touched."""
    nodes = list(graph.graph.nodes)
    # a fresh tensor that the program writes in place (zeros(), then add_) is state of each step, not a constant
    written = {_root(value) for node in nodes if _is_op(node)
               for arg, value in zip(node.target._schema.arguments, node.args)
               if arg.alias_info is not None and arg.alias_info.is_write and hasattr(value, "op")}
    constant = set()
    for node in nodes:
        if _is_getitem(node) and node.args[0] in constant:  # an item of broadcast_tensors of constants
            constant.add(node)
            continue
        if not _pure(node) or node in written or not _returns_tensors(node):
            continue
        name = node.target._schema.name
        inputs = node.all_input_nodes
        literal = (name == "aten::lift_fresh_copy" and all(n.op == "get_attr" for n in inputs))
        if literal or name in _FACTORIES or (inputs and all(n in constant for n in inputs)):
            constant.add(node)
    if constant:
        values = {}
        for node in nodes:  # in order, so that every constant's inputs are computed before it
            if node in constant:
                args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs),
                                                     lambda n: values[n] if n in values else _fetch(graph, n))
                with torch.no_grad():
                    values[node] = node.target(*args, **kwargs)
        for i, node in enumerate(n for n in nodes if n in constant):
            if isinstance(values[node], torch.Tensor) and any(user not in constant for user in node.users):
                attr = f"_folded_{i}"
                graph.register_buffer(attr, values[node].detach(), persistent=False)
                with graph.graph.inserting_before(node):
                    node.replace_all_uses_with(graph.graph.get_attr(attr))


#: ops whose output is a view of their first input that autograd sees through (``detach``, also an alias,
#: is not one of them: it cuts the gradient)
_VIEWS = {"aten::reshape", "aten::view", "aten::_unsafe_view", "aten::expand", "aten::expand_as", "aten::select",
          "aten::slice", "aten::narrow", "aten::t", "aten::transpose", "aten::permute", "aten::squeeze",
          "aten::unsqueeze", "aten::flatten", "aten::unflatten", "aten::alias", "aten::view_as", "aten::reshape_as"}


def _is_view(node) -> bool:
    """A view autograd sees through, which nothing writes in place (a written view is left exactly as recorded)."""
    return (_is_op(node) and node.target._schema.name in _VIEWS and bool(node.args) and hasattr(node.args[0], "op")
            and not any(_is_op(user) and any(arg.alias_info is not None and arg.alias_info.is_write and value is node
                                             for arg, value in zip(user.target._schema.arguments, user.args))
                        for user in node.users))


def _grad_modes(graph, enabled: bool = True) -> dict:
    """For every node, whether gradients are recorded when it runs (pre-dispatch graphs record ``no_grad``
    blocks as ``torch._C._set_grad_enabled`` calls)."""
    modes = {}
    for node in graph.graph.nodes:
        if node.op == "call_function" and node.target is torch._C._set_grad_enabled:
            enabled = bool(node.args[0])
        modes[node] = enabled
    return modes


def _same_layout(a, b) -> bool:
    a, b = a.meta.get("val"), b.meta.get("val")
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
            and a.stride() == b.stride() and a.storage_offset() == b.storage_offset() and a.dtype == b.dtype)


def drop_identities(graph) -> None:
    """Route the users of a chain of views that ends where it started (``reshape`` to ``(1, N)`` then
    ``select`` of row 0; an ``expand`` to the shape a tensor has) to the tensor itself, and likewise the users
    of ``broadcast_tensors`` items that needed no broadcasting. A view made under ``no_grad`` of a tensor that
    needs a gradient is a tensor that does not, so a chain is skipped unless its views and their users all run
    in one grad mode (the tensor it starts from may run in either: it is the same tensor both ways)."""
    modes = _grad_modes(graph)
    for node in list(graph.graph.nodes):
        pairs, chain = [], [node]
        if _is_view(node):
            source = node.args[0]
            while True:
                if _same_layout(node, source):
                    pairs = [(node, source, list(chain))]
                if not _is_view(source):
                    break
                chain.append(source)
                source = source.args[0]
        elif _is_op(node) and node.target._schema.name == "aten::broadcast_tensors":
            pairs = [(user, node.args[0][user.args[1]], [node]) for user in node.users
                     if user.op == "call_function" and user.target.__name__ == "getitem"]
        for out, source, views in pairs:
            mode = modes[out]
            if (hasattr(source, "op") and _same_layout(out, source)
                    and all(modes[n] == mode for n in views) and all(modes[u] == mode for u in out.users)):
                out.replace_all_uses_with(source)


def drop_repeats(graph) -> None:
    """One node for repeated views and ``detach`` calls on the same input in the same grad mode (the Python
    code asked twice for ``lq[0]``): the same storage either way, and no backward arithmetic that could round
    differently (a detach has none; a view's backward only places the gradient)."""
    modes, seen = _grad_modes(graph), {}
    for node in list(graph.graph.nodes):
        if not (_is_view(node) or (_is_op(node) and node.target._schema.name == "aten::detach")):
            continue
        # get_attr nodes of one attribute are one tensor (make_fx writes a fresh get_attr for every read)
        args = torch.fx.node.map_arg((node.args, node.kwargs), lambda n: f"@{n.target}" if n.op == "get_attr" else n)
        key = (node.target, repr(args), modes[node])
        if key in seen:
            node.replace_all_uses_with(seen[key])
        else:
            seen[key] = node


def drop_redundant_grad_modes(graph, enabled: bool = True) -> None:
    """Remove ``_set_grad_enabled`` calls that change nothing: one overridden by the next before any op runs
    (an empty ``no_grad`` block), and one that sets the mode already in force."""
    last = None  # the grad-mode call since which no op has run
    for node in list(graph.graph.nodes):
        if node.op != "call_function":
            continue
        if node.target is torch._C._set_grad_enabled:
            if last is not None:
                graph.graph.erase_node(last)
            last = node
        elif last is not None:
            last = None
    for node in list(graph.graph.nodes):
        if node.op == "call_function" and node.target is torch._C._set_grad_enabled:
            if bool(node.args[0]) == enabled:
                graph.graph.erase_node(node)
            else:
                enabled = bool(node.args[0])


def _drop_detach_of_literals(graph) -> None:
    """``torch.tensor(...)`` records as ``lift_fresh_copy`` then ``detach_``: a fresh copy of a literal, which
    needs no gradient, so ``detach_`` changes nothing (and keeping it would make the literal look written)."""
    for node in list(graph.graph.nodes):
        if (_is_op(node) and node.target._schema.name == "aten::detach_" and hasattr(node.args[0], "op")
                and _is_op(node.args[0]) and node.args[0].target._schema.name == "aten::lift_fresh_copy"):
            node.replace_all_uses_with(node.args[0])
            graph.graph.erase_node(node)


def _drop_dead(graph) -> None:
    changed = True
    while changed:  # drop pure ops, and constants, that nothing uses any more
        changed = False
        for node in reversed(list(graph.graph.nodes)):
            if not node.users and (_pure(node) or _is_getitem(node)
                                   or node.op == "get_attr"):
                graph.graph.erase_node(node)
                changed = True


def simplify(graph, grad_enabled: bool = True) -> int:
    """All of the above, in place; ``grad_enabled``: the grad mode the recording starts (and is replayed) in.
    Returns the number of ops removed."""
    before = len([n for n in graph.graph.nodes if n.op == "call_function"])
    _drop_detach_of_literals(graph)
    fold_constants(graph)
    drop_identities(graph)
    drop_repeats(graph)
    _drop_dead(graph)
    drop_redundant_grad_modes(graph, grad_enabled)
    graph.graph.lint()
    graph.recompile()
    return before - len([n for n in graph.graph.nodes if n.op == "call_function"])


def _fetch(graph, node):
    if node.op == "get_attr":
        return getattr(graph, node.target)
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):  # a factory's template (new_full(x, ...)): only its layout is read
        return torch.empty_strided(val.shape, val.stride(), dtype=val.dtype, device=val.device)
    raise ValueError(f"constant folding met a non-constant input {node}")
