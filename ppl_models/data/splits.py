"""Train / validation / test splits, and how they are carved deterministically.

A :class:`Split` is a pair of tensors, images flattened to rows of values in
[0, 1] and integer labels. :class:`Splits` holds the three of them with what a
model needs to know about the data (image shape, binarisation, and the
per-epoch transform that dynamic binarisation applies to the training set).

Carving draws one permutation of the rows from ``numpy.random.default_rng(seed)``
and cuts it into test, validation and training parts, so the same seed gives
the same split on every machine, and the parts are disjoint by construction.
The permutation matters: MNIST-5k is stored sorted by class.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import numpy as np
import torch

from ..errors import DataError

__all__ = ["Split", "Splits", "carve", "check_size", "grey_split"]


@dataclasses.dataclass
class Split:
    """One part of a data set.

    :ivar torch.Tensor x: float32, shape (N, D), images flattened row-major, values in [0, 1].
    :ivar torch.Tensor y: int64, shape (N,), class labels.
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self):
        if self.x.dim() != 2 or self.x.dtype != torch.float32:
            raise DataError(f"Split.x must be a 2-D float32 tensor (N, D), got {self.x.dtype} {tuple(self.x.shape)}")
        if self.y.dim() != 1 or self.y.dtype != torch.int64 or len(self.y) != len(self.x):
            raise DataError(
                f"Split.y must be an int64 tensor of shape ({len(self.x)},), got {self.y.dtype} {tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        return len(self.x)

    def to(self, device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


@dataclasses.dataclass
class Splits:
    """A data set cut into training, validation and test parts.

    :ivar str name: the data set's name in :data:`~ppl_models.data.DATASETS`.
    :ivar Split train: training data (grey levels when ``binarize == "dynamic"``).
    :ivar valid: validation data, or None when ``valid_size == 0``.
    :ivar Split test: test data.
    :ivar tuple image_shape: (28, 28) or (8, 8); ``x.shape[1] == prod(image_shape)``.
    :ivar str binarize: "threshold", "dynamic" or "none".
    :ivar train_transform: applied to each training minibatch at every epoch
        (a :class:`~ppl_models.data.DynamicBinarization` for "dynamic"), else None.
    :ivar str note: where the data came from and how the parts were carved.
    :ivar int num_classes: number of label values (10 for every set here).
    """

    name: str
    train: Split
    valid: Optional[Split]
    test: Split
    image_shape: tuple
    binarize: str = "none"
    train_transform: Optional[Callable] = None
    note: str = ""
    num_classes: int = 10

    @property
    def x_dim(self) -> int:
        """Number of pixels per image, ``prod(image_shape)``."""
        return math.prod(self.image_shape)

    def to(self, device) -> "Splits":
        """The same splits with every tensor on ``device`` (e.g. once, onto the GPU)."""
        return dataclasses.replace(
            self,
            train=self.train.to(device),
            valid=self.valid.to(device) if self.valid is not None else None,
            test=self.test.to(device),
        )

    def __repr__(self) -> str:
        sizes = ", ".join(
            f"{part}={len(s) if s is not None else None}" for part, s in (("train", self.train), ("valid", self.valid), ("test", self.test))
        )
        return f"Splits({self.name!r}, {sizes}, image_shape={self.image_shape}, binarize={self.binarize!r})"


def check_size(name: str, value, default: int) -> int:
    """``value`` as a non-negative int (``default`` when None), or a DataError naming ``name``."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{name} must be a non-negative integer or None, got {value!r}")
    if value < 0:
        raise DataError(f"{name} must be >= 0, got {value}")
    return int(value)


def carve(n: int, sizes: dict[str, int], seed: int, *, what: str, defaulted=()) -> dict[str, np.ndarray]:
    """Cut a fixed permutation of ``range(n)`` into consecutive parts of the given sizes.

    :param int n: number of rows available.
    :param dict sizes: part name -> size, in the order they are cut; the part
        named "train" (size ignored) takes what is left, and must not be empty.
    :param int seed: seed of the permutation.
    :param str what: the data described in error messages.
    :param defaulted: names of the parts whose size is the data set's default,
        so that an error says the user did not ask for it.
    :returns: part name -> int64 row indices.
    """
    taken = sum(size for part, size in sizes.items() if part != "train")
    if taken >= n:
        asked = ", ".join(
            f"{part}_size={size}" + (" (default)" if part in defaulted else "")
            for part, size in sizes.items()
            if part != "train"
        )
        raise DataError(f"{asked} take {taken} of the {n} rows of {what}, leaving no training data; expected a total < {n}")
    perm = np.random.default_rng(seed).permutation(n)
    parts, start = {}, 0
    for part, size in sizes.items():
        if part == "train":
            continue
        parts[part] = perm[start:start + size]
        start += size
    if "train" in sizes:
        parts["train"] = perm[start:]
    return parts


def grey_split(images: np.ndarray, labels: np.ndarray, rows, scale: float) -> Split:
    """Rows of integer images as a float32 Split scaled to [0, 1], converted once.

    :param images: (N, ...) integer array (uint8 for MNIST, 0..16 for digits).
    :param labels: (N,) integer array.
    :param rows: row indices, or None for all rows in stored order.
    :param float scale: the largest grey level (255 or 16).
    """
    if rows is not None:
        images, labels = images[rows], labels[rows]
    # np.array copies, always: the source may be a read-only view, and div_ below is in place.
    x = torch.from_numpy(np.array(images.reshape(len(images), -1), dtype=np.float32, order="C"))
    x.div_(scale)  # a division, not a multiply by 1/scale, so the top level is exactly 1.0
    y = torch.from_numpy(np.array(labels, dtype=np.int64))
    return Split(x, y)
