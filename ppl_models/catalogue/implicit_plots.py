"""The generator's images at fixed latent codes across training: how a GAN's samples form (``fixed_latents.png``)."""

from __future__ import annotations

import os

import torch

from inference.checkpoint import save_atomic

from .plots import image_grid, new_figure, save_png

#: codes kept; the picture shows the first COLUMNS of them per epoch
NUM_CODES, COLUMNS = 25, 10
PICTURE, TENSORS = "fixed_latents.png", "fixed_latents.pt"


def snapshot_epochs(epochs: int, snapshots: int) -> set:
    """``snapshots`` epochs spread evenly up to ``epochs``, and the first (none when ``snapshots`` is 0)."""
    if snapshots < 1:
        return set()
    return {1} | {max(1, round(i * epochs / snapshots)) for i in range(1, snapshots + 1)}


class FixedLatentSnapshots:
    """An ``on_epoch_end`` callback of :func:`inference.training.fit`: at the chosen epochs, the images G(z) of
    the same :data:`NUM_CODES` codes z (drawn once from N(0, I) with their own generator, so that training's
    random stream is untouched and a resumed run shows the same codes), kept in ``fixed_latents.pt`` and drawn
    as one picture with a row per epoch.

    :param module: the generator: ``module(z)`` images in [0, 1], ``module.z_dim``.
    :param run: the :class:`~ppl_models.catalogue.run_directory.RunDirectory` written into.
    """

    def __init__(self, module, run, image_shape: tuple, epochs: int, snapshots: int, seed: int = 0,
                 title: str = "generator"):
        self.module, self.run, self.image_shape, self.title = module, run, tuple(image_shape), title
        self.epochs = snapshot_epochs(epochs, snapshots)
        self.codes = torch.randn(NUM_CODES, module.z_dim, generator=torch.Generator().manual_seed(seed))

    def __call__(self, metrics: dict) -> None:
        epoch = metrics["epoch"]
        if epoch not in self.epochs:
            return
        was_training = self.module.training
        self.module.eval()  # batch normalisation by its running statistics, as the trained model samples
        with torch.no_grad():
            images = self.module(self.codes.to(next(self.module.parameters()))).cpu()
        self.module.train(was_training)
        path = self.run.path(TENSORS)
        kept = torch.load(path, weights_only=True) if os.path.exists(path) else {}
        kept = {e: v for e, v in kept.items() if e < epoch}  # a run restarted from scratch rewrites its later rows
        kept[epoch] = images
        save_atomic(kept, path)
        save_fixed_latent_picture(kept, self.image_shape, self.run.path(PICTURE),
                                  f"{self.title}: G(z) at {COLUMNS} fixed codes z, by epoch")


def save_fixed_latent_picture(kept: dict, image_shape: tuple, path: str, title: str) -> None:
    """One row per epoch of ``{epoch: images (NUM_CODES, D)}``, the rows labelled with their epochs."""
    epochs = sorted(kept)
    rows = torch.cat([kept[e][:COLUMNS] for e in epochs])
    columns = min(COLUMNS, kept[epochs[0]].shape[0])
    grid = image_grid(rows, image_shape, nrow=columns)
    h = image_shape[0] + 1
    fig, ax = new_figure(figsize=(max(3.0, grid.shape[1] / 28 + 1), max(2.0, grid.shape[0] / 28)))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([1 + h * i + image_shape[0] / 2 for i in range(len(epochs))])
    ax.set_yticklabels([f"epoch {e}" for e in epochs], fontsize=7)
    ax.set_title(title, fontsize=9)
    save_png(fig, path)
