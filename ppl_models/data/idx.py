"""Reader for the IDX format of MNIST and Fashion-MNIST, gzip-compressed or raw.

An IDX file (LeCun et al., http://yann.lecun.com/exdb/mnist/) is a 4-byte magic
number ``0x00 0x00 <type code> <ndim>``, then ``ndim`` big-endian uint32
dimensions, then the values in C order, big-endian. MNIST images are
``0x00000803`` (unsigned byte, 3 dims: N x 28 x 28), labels ``0x00000801``.

The reader never reshapes silently: a byte count that disagrees with the
header's dimensions, in either direction, is an error.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib

import numpy as np

from ..errors import DataError

__all__ = ["read_idx", "IDX_DTYPES", "idx_magic"]

#: IDX type code -> numpy dtype (big-endian where it matters).
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def idx_magic(type_code: int, ndim: int) -> int:
    """The 32-bit magic number of an IDX file, e.g. ``idx_magic(0x08, 3) == 2051``."""
    return (type_code << 8) | ndim


def _read_bytes(path: str) -> bytes:
    """The file's payload, decompressed when it is gzip (detected by content, not name)."""
    if not os.path.exists(path):
        raise DataError(f"IDX file {path} does not exist")
    if os.path.isdir(path):
        raise DataError(f"IDX file {path} is a directory, expected a file")
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != _GZIP_MAGIC:
        if path.endswith(".gz"):
            raise DataError(
                f"IDX file {path} is named .gz but is not gzip data "
                f"(first bytes {raw[:4].hex() or 'empty'}, expected 1f8b...)"
            )
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"IDX file {path} is a corrupt or truncated gzip file ({e})") from None


def read_idx(path, *, magic: int | None = None) -> np.ndarray:
    """Read an IDX file (gzip or raw) into a numpy array of the header's shape and type.

    :param str path: the file; gzip is recognised by its content.
    :param int magic: if given, the exact magic number expected (2051 for MNIST
        images, 2049 for labels); another one raises :class:`DataError`.
    :returns: an array of shape ``dims`` and the dtype of the header's type code,
        in native byte order. Unsigned-byte data (all of MNIST) is a read-only
        view on the decompressed bytes: no copy is made here.
    :raises DataError: missing file, corrupt gzip, unknown magic number, or a
        byte count that does not match the dimensions (truncated or trailing data).
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"IDX file {path} is truncated: {len(data)} bytes, expected at least a 4-byte header")
    zero, type_code, ndim = data[0:2], data[2], data[3]
    found = int.from_bytes(data[0:4], "big")
    if zero != b"\x00\x00" or type_code not in IDX_DTYPES or ndim == 0:
        raise DataError(
            f"IDX file {path} has magic number {found:#010x}, expected 0x0000TTNN with type "
            f"TT in {{{', '.join(f'{c:#04x}' for c in IDX_DTYPES)}}} and NN >= 1 dimensions "
            "(is it an IDX file?)"
        )
    if magic is not None and found != magic:
        raise DataError(
            f"IDX file {path} has magic number {found} ({found:#010x}), expected {magic} ({magic:#010x})"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"IDX file {path} is truncated inside its header: {len(data)} bytes, expected {header}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path} is {what}: dims {dims} of {dtype.name} need {expected} bytes, found {len(data)}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    if dtype.byteorder == ">":
        array = array.astype(dtype.newbyteorder("="))
    return array
