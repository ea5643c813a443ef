"""Atomic checkpoints and JSON files.

A file is written to a temporary name in the same directory, flushed and
fsync'ed, then renamed over the target (``os.replace`` is atomic on POSIX), so
a run killed at any instant leaves either the old complete file or the new
complete file, never a half-written one.
"""

from __future__ import annotations

import io
import json
import os
import random

import numpy as np
import torch

from .errors import CheckpointError
from .fileio import write_bytes_atomic as _write_atomic


def save_atomic(obj, path: str) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _write_atomic(path, buffer.getvalue())


def load_checkpoint(path: str, map_location=None):
    """Load a file written by :func:`save_atomic`, with a one-line error if unusable."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises many types for a truncated / foreign file
        raise CheckpointError(f"checkpoint {path} is corrupt or not a ppl-models checkpoint ({type(e).__name__})") from None


def read_json(path: str, what: str = "file"):
    if not os.path.exists(path):
        raise CheckpointError(f"{what} {path} does not exist")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{what} {path} is not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None


def rng_state() -> dict:
    """Every random state a training step can consume, for exact resume."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())  # a checkpoint loaded with map_location=cuda moved it
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])

