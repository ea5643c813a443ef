"""UCI optical digits as shipped by scikit-learn: 1,797 real 8 x 8 handwritten digits.

``sklearn.datasets.load_digits()`` gives 64 grey levels per image on a scale
of 17 levels (0..16), which are scaled here to [0, 1] by dividing by 16. Small
enough for fast tests on real data.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from ..errors import DataError
from .splits import Splits, carve, grey_split

__all__ = ["load_digits"]

DEFAULT_TEST_SIZE = 297
DEFAULT_VALID_SIZE = 200


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    if importlib.util.find_spec("sklearn") is None:
        raise DataError(
            "dataset 'digits' needs scikit-learn, which is not installed; install it with "
            "`pip install scikit-learn` (or `pip install ppl-models[data]`)"
        )
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    images, labels = np.asarray(bunch.data), np.asarray(bunch.target)
    if images.ndim != 2 or images.shape[1] != 64 or len(labels) != len(images):
        raise DataError(f"sklearn's load_digits() returned data {images.shape} and labels {labels.shape}, expected (N, 64) and (N,)")
    if images.min() < 0 or images.max() > 16 or not np.array_equal(images, np.round(images)):
        raise DataError("sklearn's load_digits() returned values outside the integer grey levels 0..16")
    return images, labels


def load_digits(path, valid_size: int | None, test_size: int | None, split_seed: int) -> Splits:
    """The digits as grey-level splits (defaults: 297 test, 200 valid, 1,300 train).

    :param path: must be None; the data come with scikit-learn.
    """
    if path is not None:
        raise DataError(f"dataset 'digits' comes with scikit-learn and takes no --data-path (path=), got {path!r}")
    images, labels = _read_digits()
    defaulted = [part for part, size in (("test", test_size), ("valid", valid_size)) if size is None]
    test_size = DEFAULT_TEST_SIZE if test_size is None else test_size
    valid_size = DEFAULT_VALID_SIZE if valid_size is None else valid_size
    rows = carve(len(images), {"test": test_size, "valid": valid_size, "train": 0}, split_seed, what="the digits", defaulted=defaulted)
    return Splits(
        name="digits",
        train=grey_split(images, labels, rows["train"], 16.0),
        valid=grey_split(images, labels, rows["valid"], 16.0) if valid_size else None,
        test=grey_split(images, labels, rows["test"], 16.0),
        image_shape=(8, 8),
        note=(
            f"sklearn load_digits(): {len(images)} rows shuffled with seed {split_seed}, then "
            f"test {test_size}, valid {valid_size}, train {len(rows['train'])}"
        ),
    )
