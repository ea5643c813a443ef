"""MNIST and Fashion-MNIST from a directory of IDX files.

Both use the same four file names, each gzip-compressed (``.gz``) or raw::

    train-images-idx3-ubyte   train-labels-idx1-ubyte    (60,000 images)
    t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte     (10,000 images)

A directory may hold only one of the two pairs (the developers' machines here
have only MNIST's t10k pair). Then the official split that exists is used as
such where it can be, any missing part is carved from what is there with a
permutation seeded by ``split_seed``, and :attr:`Splits.note` says so.
A torchvision download root (``<root>/MNIST/raw``, ``<root>/FashionMNIST/raw``)
is accepted too.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..errors import DataError
from .idx import idx_magic, read_idx
from .splits import Splits, carve, grey_split

__all__ = ["IdxSource", "MNIST", "FASHION_MNIST", "load_idx_dataset", "read_idx_pair"]

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC = idx_magic(0x08, 3)  # 2051
LABELS_MAGIC = idx_magic(0x08, 1)  # 2049
# (test_size, valid_size) when the set is carved from one official part only.
DEFAULTS_ONLY_TEST = (2000, 1000)
DEFAULTS_ONLY_TRAIN = (10000, 5000)
DEFAULT_VALID_SIZE = 5000


@dataclasses.dataclass(frozen=True)
class IdxSource:
    """Where an IDX data set is looked for, and what to tell a user who lacks it."""

    name: str
    env_var: str
    default_dir: str | None
    torchvision_dir: str
    hint: str


MNIST = IdxSource(
    "mnist", "PPL_MODELS_MNIST_DIR", None, "MNIST",
    "give a directory holding the MNIST IDX files with --data-path DIR (path=DIR in Python), or set "
    "PPL_MODELS_MNIST_DIR (online, ppl_models.data.download_idx('mnist', DIR) fetches them)",
)
FASHION_MNIST = IdxSource(
    "fashion-mnist", "PPL_MODELS_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist", "FashionMNIST",
    "install them with `apt-get install dataset-fashion-mnist` (files in /usr/share/datasets/fashion-mnist), "
    "or give a directory holding them with --data-path DIR (path=DIR in Python)",
)


def _directory(source: IdxSource, path) -> str:
    if path is None:
        path = os.environ.get(source.env_var) or source.default_dir
    if path is None:
        raise DataError(f"dataset {source.name!r} needs a directory of IDX files: {source.hint}")
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isdir(path):
        raise DataError(f"dataset {source.name!r}: directory {path} does not exist; {source.hint}")
    return path


def _find(directory: str, stem: str) -> str | None:
    for name in (stem, stem + ".gz"):  # raw first: no decompression
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def _find_pairs(source: IdxSource, directory: str) -> dict[str, tuple[str, str]]:
    """Official part -> (images path, labels path), for the parts whose two files exist."""
    for d in (directory, os.path.join(directory, source.torchvision_dir, "raw")):
        found = {part: tuple(_find(d, stem) for stem in stems) for part, stems in FILES.items()}
        if any(p is not None for pair in found.values() for p in pair):
            break
    else:
        expected = ", ".join(f"{stem}[.gz]" for stems in FILES.values() for stem in stems)
        raise DataError(f"dataset {source.name!r}: no IDX files in {directory}, expected {expected}; {source.hint}")
    for part, (images, labels) in found.items():
        if (images is None) != (labels is None):
            present, missing = (images, FILES[part][1]) if labels is None else (labels, FILES[part][0])
            raise DataError(f"dataset {source.name!r}: {present} has no partner {missing}[.gz] in {d}; {source.hint}")
    return {part: pair for part, pair in found.items() if pair[0] is not None}


def read_idx_pair(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and cross-check an images / labels pair: (uint8 (N, 28, 28), uint8 (N,))."""
    images = read_idx(images_path, magic=IMAGES_MAGIC)
    if images.shape[1:] != (28, 28):
        raise DataError(f"IDX file {images_path} holds images of {images.shape[1:]} pixels, expected (28, 28)")
    labels = read_idx(labels_path, magic=LABELS_MAGIC)
    if len(labels) != len(images):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    if len(labels) and labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise DataError(f"IDX file {labels_path} holds label {labels[bad]} at row {bad}, expected labels 0..9")
    return images, labels


def load_idx_dataset(source: IdxSource, path, valid_size, test_size, split_seed: int) -> Splits:
    """Grey-level splits of an IDX data set (see the module docstring for the rules)."""
    directory = _directory(source, path)
    pairs = _find_pairs(source, directory)
    data = {part: read_idx_pair(*pair) for part, pair in pairs.items()}
    parts, notes = {}, []
    defaulted = [part for part, size in (("test", test_size), ("valid", valid_size)) if size is None]
    if "train" in data and "test" in data:
        images, labels = data["train"]
        valid_size = DEFAULT_VALID_SIZE if valid_size is None else valid_size
        rows = carve(len(images), {"valid": valid_size, "train": 0}, split_seed, what=pairs["train"][0], defaulted=defaulted)
        parts["train"] = grey_split(images, labels, rows["train"], 255.0)
        parts["valid"] = grey_split(images, labels, rows["valid"], 255.0) if valid_size else None
        notes.append(f"train {len(rows['train'])} and valid {valid_size} carved from the official train set with seed {split_seed}")
        images, labels = data["test"]
        if test_size is None or test_size == len(images):
            parts["test"] = grey_split(images, labels, None, 255.0)
            notes.append(f"test = the official test set ({len(images)})")
        else:
            if test_size > len(images):
                raise DataError(f"test_size={test_size} exceeds the {len(images)} images of {pairs['test'][0]}")
            rows = np.random.default_rng(split_seed).permutation(len(images))[:test_size]
            parts["test"] = grey_split(images, labels, rows, 255.0)
            notes.append(f"test = {test_size} of the official test set's {len(images)}, drawn with seed {split_seed}")
    else:
        (part, (images, labels)), = data.items()
        default_test, default_valid = DEFAULTS_ONLY_TEST if part == "test" else DEFAULTS_ONLY_TRAIN
        test_size = default_test if test_size is None else test_size
        valid_size = default_valid if valid_size is None else valid_size
        rows = carve(len(images), {"test": test_size, "valid": valid_size, "train": 0}, split_seed, what=pairs[part][0], defaulted=defaulted)
        parts["train"] = grey_split(images, labels, rows["train"], 255.0)
        parts["valid"] = grey_split(images, labels, rows["valid"], 255.0) if valid_size else None
        parts["test"] = grey_split(images, labels, rows["test"], 255.0)
        missing = "train" if part == "test" else "test (t10k)"
        notes.append(
            f"no official {missing} files: test {test_size}, valid {valid_size} and train {len(rows['train'])} "
            f"all carved from the official {part} set's {len(images)} images with seed {split_seed}"
        )
    return Splits(
        name=source.name, **parts, image_shape=(28, 28), note=f"{source.name} from {directory}: " + "; ".join(notes)
    )
