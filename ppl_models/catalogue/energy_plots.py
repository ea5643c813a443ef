"""Pictures of energy families: per-epoch monitors and Gibbs sample grids (completions: :mod:`.plots`)."""

from __future__ import annotations

import math

import torch

from .plots import image_grid, new_figure, save_png


def save_energy_curves(history: list, path: str, title: str) -> None:
    """Per-epoch monitors: pseudo-likelihood (binary) or exact log-likelihood, and reconstruction error."""
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = new_figure(1, 2, figsize=(9, 3.2))
    for key, label in (("pseudo_ll", "train pseudo-LL"), ("valid_pseudo_ll", "valid pseudo-LL"),
                       ("valid_exact_ll", "valid exact LL")):
        if any(key in h for h in history):
            left.plot(epochs, [h.get(key, float("nan")) for h in history], label=label)
    if not left.get_lines() and any("free_energy_gap" in h for h in history):
        # no log-likelihood monitor (grey levels, large hidden layer): the overfitting monitor instead
        left.plot(epochs, [h.get("free_energy_gap", float("nan")) for h in history], label="F(valid) - F(train)")
    left.set_ylabel("nats per image")
    for key, label in (("recon_error", "train"), ("valid_recon_error", "valid")):
        if any(key in h for h in history):
            right.plot(epochs, [h.get(key, float("nan")) for h in history], label=label)
    right.set_ylabel("reconstruction error (visible units)")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    save_png(fig, path)


def save_gibbs_grid(images: torch.Tensor, image_shape: tuple, path: str, title: str) -> None:
    """A square grid at about 0.6 inch per image whatever its pixel size (8x8 digits would otherwise be stamps)."""
    n = images.shape[0]
    per_row = math.ceil(math.sqrt(n))
    fig, ax = new_figure(figsize=(0.6 * per_row + 0.5, 0.6 * math.ceil(n / per_row) + 0.8))
    ax.imshow(image_grid(images, image_shape, nrow=per_row), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    ax.set_title(title, fontsize=8)
    save_png(fig, path)
