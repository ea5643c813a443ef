"""Device selection: one rule for every driver, nothing hard-coded."""

from __future__ import annotations

from typing import Optional

import torch

from .errors import SpecError


def resolve_device(device: Optional[str]) -> torch.device:
    """``None`` / ``"auto"``: CUDA when present, else CPU; otherwise the named device, checked."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise SpecError(f"unknown device {device!r}; expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev
