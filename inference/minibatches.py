"""Minibatches through ``torch.utils.data.DataLoader`` without per-epoch copies.

The default ``DataLoader`` fetches one item at a time and stacks them, which
costs a Python call per image; here the sampler yields a whole tensor of
indices and the dataset answers with one fancy-indexing operation, so an epoch
over 60,000 images is 600 index ops for batch 100, and the data set itself is
never copied (it can sit on the GPU once, for good).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class TensorBatches(Dataset):
    """Tensors sharing their first dimension, indexed by a tensor of indices."""

    def __init__(self, *tensors: torch.Tensor):
        n = tensors[0].shape[0]
        if any(t.shape[0] != n for t in tensors):
            raise ValueError("all tensors must have the same number of rows")
        self.tensors = tensors

    def __len__(self):
        return self.tensors[0].shape[0]

    def __getitem__(self, index):
        index = index.to(self.tensors[0].device)
        return tuple(t[index] for t in self.tensors)


class ShuffledIndexBatches(Sampler):
    """Yields index tensors of ``batch_size`` from a permutation drawn from ``generator``.

    The permutation of an epoch is drawn when the epoch starts, so saving the
    generator state at an epoch boundary is enough to resume exactly.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = True):
        self.n, self.batch_size, self.generator, self.shuffle = n, batch_size, generator, shuffle

    def __len__(self):
        return (self.n + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        yield from order.split(self.batch_size)


def make_loader(*tensors: torch.Tensor, batch_size: int, generator: torch.Generator | None = None,
                shuffle: bool = True) -> DataLoader:
    """A ``DataLoader`` over ``tensors`` yielding tuples of batches (no worker processes:
    indexing an in-memory tensor is faster than shipping batches between processes)."""
    sampler = ShuffledIndexBatches(tensors[0].shape[0], batch_size, generator, shuffle)
    return DataLoader(TensorBatches(*tensors), sampler=sampler, batch_size=None, num_workers=0)
