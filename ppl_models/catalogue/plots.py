"""Pictures a person would rather see than read: sample grids and training curves (PNG)."""

from __future__ import annotations

import io
import math
import os

import numpy as np
import torch
from matplotlib.figure import Figure  # no pyplot: works headless and leaves the user's backend alone

from inference.fileio import write_bytes_atomic


def new_figure(nrows: int = 1, ncols: int = 1, figsize=(5, 3.2), **subplots_kw):
    """A figure and its axes, made without pyplot (no global state, any backend)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **subplots_kw)


#: what a picture may be written as, by the file name's extension
IMAGE_FORMATS = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def save_png(fig, path: str) -> None:
    """Write ``fig`` atomically in the format its extension names (PNG unless .jpg/.jpeg/.pdf/.svg)."""
    extension = os.path.splitext(path)[1].lower()
    fmt = {".jpg": "jpg", ".jpeg": "jpg", ".pdf": "pdf", ".svg": "svg"}.get(extension, "png")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=100, bbox_inches="tight")
    write_bytes_atomic(path, buffer.getvalue())


def image_grid(images: torch.Tensor, image_shape: tuple, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile ``images`` of shape ``(n, prod(image_shape))`` into one 2-D array in [0, 1]."""
    images = images.detach().float().cpu().clamp(0, 1).reshape(-1, *image_shape).numpy()
    n, (h, w) = images.shape[0], image_shape
    nrow = nrow or int(math.ceil(math.sqrt(n)))
    ncol = int(math.ceil(n / nrow))
    grid = np.ones((ncol * (h + pad) + pad, nrow * (w + pad) + pad), dtype=np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    return grid


def save_image_grid(images: torch.Tensor, image_shape: tuple, path: str, title: str | None = None,
                    nrow: int | None = None) -> None:
    """Write a grid of grey-level images as a PNG (white = 1)."""
    grid = image_grid(images, image_shape, nrow)
    fig, ax = new_figure(figsize=(max(2.0, grid.shape[1] / 28), max(2.0, grid.shape[0] / 28)))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    save_png(fig, path)


def save_training_curve(history: list[dict], path: str, title: str = "training") -> None:
    """Plot every ``*_loss`` series of a per-epoch history against the epoch."""
    epochs = [h["epoch"] for h in history]
    fig, ax = new_figure(figsize=(5, 3.2))
    for key in sorted({k for h in history for k in h if k.endswith("loss")}):
        ax.plot(epochs, [h.get(key, float("nan")) for h in history], label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss per datapoint (nats)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_png(fig, path)


def save_completion_figure(x: torch.Tensor, mask: torch.Tensor, completions: torch.Tensor, image_shape: tuple,
                           path: str, title: str) -> None:
    """Per row: the image, its observed part (the rest grey), then its completions ``(n, per_image, D)``."""
    x = x.cpu()
    n, per_image = completions.shape[:2]
    observed = torch.where(mask.cpu(), x, torch.full_like(x, 0.5))
    rows = torch.cat([x.unsqueeze(1), observed.unsqueeze(1), completions], 1)  # (n, 2 + per_image, D)
    groups = math.ceil(n / 8)  # at most 8 images per column group
    per_group = math.ceil(n / groups)
    cols = 2 + per_image
    blank = torch.ones(cols, x.shape[1])
    tiles = [rows[g * per_group + r] if g * per_group + r < n else blank for r in range(per_group) for g in range(groups)]
    grid = image_grid(torch.cat(tiles), image_shape, nrow=cols * groups)
    fig, ax = new_figure(figsize=(max(3.0, 0.5 * cols * groups + 1), max(3.0, 0.5 * per_group + 1)))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    ax.set_title(title, fontsize=8)
    save_png(fig, path)
