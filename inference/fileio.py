"""Atomic file writes: a killed process leaves the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile


def _umask() -> int:
    current = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(current)
    return current


def write_bytes_atomic(path: str, payload: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a result file gets the user's usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json_atomic(obj, path: str) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())
