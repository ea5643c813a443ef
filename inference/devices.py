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


def to_device(tensor: torch.Tensor, device) -> torch.Tensor:
    """``tensor`` on ``device``; from host memory to a GPU through pinned (page-locked) memory with a
    non-blocking copy, so that the copy is one DMA transfer queued on the stream instead of a staged,
    synchronous one (the kernels that use it are queued after it on the same stream). Elsewhere
    ``tensor.to(device)`` (the same tensor when it is already there)."""
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
