"""The floor every benchmark names: the time of the same matrix products alone.

A path's matrix products are read off one real run of it (forward and backward) by a
:class:`~torch.utils._python_dispatch.TorchDispatchMode` that records the shape, strides and dtype of
every ``mm`` / ``addmm`` (in place too) / ``bmm`` / ``baddbmm`` operand, so nothing is transcribed by hand
and a changed architecture changes its floor. :func:`time_products` then times those products alone on tensors of the
same layouts, sharing memory where the path's operands did (a weight and its transpose): what the path
would cost if everything but its matrix products were free. A ratio
``path time / floor`` says how far a path is from the machine.

Not a benchmark (no ``main``): imported by the scripts beside it.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
#: the operand positions of the two matrices in each product op
_MATRICES = {aten.mm.default: (0, 1), aten.addmm.default: (1, 2), aten.addmm_.default: (1, 2),
             aten.bmm.default: (0, 1), aten.baddbmm.default: (1, 2)}


class Products(list):
    """The recorded ``(op, [(shape, stride, dtype), (shape, stride, dtype)])`` of each product, and in
    ``storages`` where each operand lived (storage, its size, the offset): operands that shared memory in the
    path (a weight matrix and its transpose, used by three products of an RBM step) share it when timed, so
    the floor keeps the cache hits the path itself gets."""

    def __init__(self):
        super().__init__()
        self.storages: list = []


class RecordProducts(TorchDispatchMode):
    """Records ``(op, [(shape, stride, dtype), (shape, stride, dtype)])`` for every matrix product run under it."""

    def __init__(self):
        super().__init__()
        self.products = Products()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        positions = _MATRICES.get(func)
        if positions is not None:
            self.products.append((func, [(tuple(args[i].shape), tuple(args[i].stride()), args[i].dtype)
                                         for i in positions]))
            self.products.storages.append([(args[i].untyped_storage().data_ptr(), args[i].untyped_storage().nbytes(),
                                            args[i].storage_offset()) for i in positions])
        return func(*args, **(kwargs or {}))


def record_products(step: Callable[[], None]) -> list:
    """The matrix products of one call of ``step`` (forward and backward: call ``backward`` inside it)."""
    with RecordProducts() as recorder:
        step()
    return recorder.products


def _operands(products: list) -> list:
    storages = getattr(products, "storages", None)
    bases: dict = {}
    if storages is not None:  # one buffer per address, as large as the largest storage seen there (memory freed
        sizes: dict = {}      # within the step is reused at the same address by a larger tensor)
        for i, (_, specs) in enumerate(products):
            for j, (_, _, dtype) in enumerate(specs):
                ptr, nbytes, _ = storages[i][j]
                sizes[ptr, dtype] = max(sizes.get((ptr, dtype), 0), nbytes)
        for (ptr, dtype), nbytes in sizes.items():  # values do not matter; denormals and NaNs would
            bases[ptr, dtype] = torch.randn(max(1, nbytes // torch.empty((), dtype=dtype).element_size()), dtype=dtype)
    out = []
    for i, (_, specs) in enumerate(products):
        pair = []
        for j, (shape, stride, dtype) in enumerate(specs):
            if storages is not None:  # the same memory as in the path: views of one buffer per storage
                ptr, _, offset = storages[i][j]
                t = torch.as_strided(bases[ptr, dtype], shape, stride, offset)
            else:
                t = torch.empty_strided(shape, stride, dtype=dtype)
                t.copy_(torch.randn(shape, dtype=dtype))
            pair.append(t)
        out.append(pair)
    return out


def median_seconds(f: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``f()`` over ``repeats`` calls, after one untimed call (first-touch allocation,
    the BLAS's own set-up)."""
    f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def products_pass(products: list, times: int = 1) -> Callable[[], None]:
    """A callable that runs every recorded product once, in order, ``times`` times over (an epoch's worth of
    steps): to be timed interleaved with the path itself (:func:`interleaved_seconds`), so that both meet the
    same machine (on this VM a floor timed minutes apart drifted by up to 10%)."""
    operands = _operands(products)
    mm = [torch.bmm if len(a.shape) == 3 else torch.mm for a, _ in operands]

    def run():
        for _ in range(times):
            for f, (a, b) in zip(mm, operands):
                f(a, b)

    return run


def interleaved_seconds(fns: dict, repeats: int) -> dict:
    """Seconds of each of ``fns`` (name -> callable) over ``repeats`` rounds, one call each per round, the order
    reversed every other round; one untimed call each first. Returns name -> list of seconds (pair them by round)."""
    for f in fns.values():
        f()
    times = {name: [] for name in fns}
    for r in range(repeats):
        for name, f in (list(fns.items()) if r % 2 == 0 else list(fns.items())[::-1]):
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    return times


def time_products(products: list, repeats: int = 7) -> float:
    """Median seconds, over ``repeats``, of running every recorded product once, in order."""
    return median_seconds(products_pass(products), repeats)


def flops(products: list) -> float:
    """Floating-point operations of the recorded products (2 m k n each, times the batch for ``bmm``)."""
    total = 0.0
    for _, ((a_shape, _, _), (b_shape, _, _)) in products:
        batch = a_shape[0] if len(a_shape) == 3 else 1
        m, k = a_shape[-2:]
        total += 2.0 * batch * m * k * b_shape[-1]
    return total
