"""Download MNIST or Fashion-MNIST IDX files, for users who are online.

Nothing in :func:`~ppl_models.data.load_dataset` downloads: every default
works offline. A user with a network fetches the files once::

    >>> download_idx("mnist", "~/data/mnist")          # doctest: +SKIP
    >>> load_dataset("mnist", path="~/data/mnist")     # doctest: +SKIP

Files are checked against the MD5 sums that the data sets publish (the ones
torchvision uses), tried mirror after mirror, and written atomically, so an
interrupted download never leaves a file the loader would read.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request

from ..errors import DataError

__all__ = ["MIRRORS", "MD5", "download_idx"]

#: data set -> base URLs tried in order.
MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
}
#: data set -> file name -> published MD5 of the gzip file.
MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
_PARTS = {"train": "train-", "test": "t10k-"}


def _md5(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # integrity against the published sums, not security
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, target: str, timeout: float) -> None:
    partial = target + ".part"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def download_idx(name: str, directory, *, parts=("train", "test"), mirrors=None, timeout: float = 60.0) -> str:
    """Fetch a data set's IDX ``.gz`` files into ``directory``; return the directory.

    Files already there with the right MD5 are kept; a wrong or partial one is replaced.

    :param str name: "mnist" or "fashion-mnist".
    :param directory: created if needed; pass it as ``path=`` to ``load_dataset``.
    :param parts: which official parts to fetch, "train" and / or "test".
    :param mirrors: base URLs to try in order (default :data:`MIRRORS` ``[name]``).
    :param float timeout: seconds per connection attempt.
    :raises DataError: unknown name or part, or a file no mirror served with the right MD5.
    """
    if name not in MD5:
        raise DataError(f"download_idx knows {', '.join(map(repr, MD5))}, got name={name!r}")
    unknown = [p for p in parts if p not in _PARTS]
    if unknown or not parts:
        raise DataError(f"parts must be a non-empty subset of ('train', 'test'), got {tuple(parts)!r}")
    directory = os.path.expanduser(os.fspath(directory))
    os.makedirs(directory, exist_ok=True)
    mirrors = tuple(MIRRORS[name] if mirrors is None else mirrors)
    for file_name, md5 in MD5[name].items():
        if not any(file_name.startswith(_PARTS[p]) for p in parts):
            continue
        target = os.path.join(directory, file_name)
        if os.path.isfile(target) and _md5(target) == md5:
            continue
        failures = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + file_name
            try:
                _fetch(url, target, timeout)
            except (urllib.error.URLError, OSError, ValueError) as e:
                failures.append(f"{url}: {getattr(e, 'reason', e)}")
                continue
            found = _md5(target)
            if found == md5:
                break
            os.remove(target)
            failures.append(f"{url}: MD5 {found}, expected {md5}")
        else:
            raise DataError(
                f"could not download {file_name} for {name!r} ({'; '.join(failures)}); "
                f"if this machine is offline, copy the file into {directory} yourself"
            )
    return directory
