"""Data sets, splits and binarisation, all offline.

:func:`load_dataset` is the entry point::

    >>> from ppl_models.data import load_dataset
    >>> data = load_dataset("mnist5k", binarize="dynamic")   # doctest: +SKIP
    >>> data.train.x.shape, data.test.x.shape                 # doctest: +SKIP
    (torch.Size([3500, 784]), torch.Size([1000, 784]))

See :data:`DATASETS` for the names; each data set's module says where its
files come from. Every reader validates what it reads and raises
:class:`~ppl_models.errors.DataError` with a one-line message.
"""

from ..errors import DataError
from .binarize import BINARIZE_OPTIONS, DynamicBinarization, check_binary, check_features
from .download import download_idx
from .idx import read_idx
from .registry import DATASETS, load_dataset
from .splits import Split, Splits

__all__ = [
    "BINARIZE_OPTIONS",
    "DATASETS",
    "DataError",
    "DynamicBinarization",
    "Split",
    "Splits",
    "check_binary",
    "check_features",
    "download_idx",
    "load_dataset",
    "read_idx",
]
