"""Reconstructions of MNIST-5k test digits after 5 Gibbs steps: a 3-hidden-layer DBN (500-500-1000) beside a
single RBM (1000 hidden), both pretrained at lr 0.01, batch 20, 20 epochs (PCD-1).

    ppl-models train dbn --dataset mnist5k --epochs 20 --out runs/dbn
    ppl-models train rbm --dataset mnist5k --epochs 20 --set model.num_hidden=1000 --out runs/rbm1000
    OMP_NUM_THREADS=1 python benchmarks/dbn_reconstruction.py runs/dbn runs/rbm1000 benchmarks/results/dbn_rbm_reconstruction.png

RBM: the chain starts at the test image (h ~ p(h | v)), 5 block-Gibbs sweeps, E[v | h] shown.
DBN: the image is passed up the recognition weights to the top RBM's visible layer (h2, sampled),
5 block-Gibbs sweeps of the top RBM, then one pass down (h1 sampled, p(v | h1) shown).
Every chain runs through the project's BlockGibbs kernel under inference.mcmc_driver.run_mcmc.
"""
import sys

import torch

from inference.block_gibbs import BlockGibbs
from inference.mcmc_driver import run_mcmc
from ppl_models import catalogue
from ppl_models.catalogue.plots import image_grid, new_figure, save_png

STEPS = 5


@torch.no_grad()
def gibbs_from(rbm, v0, steps=STEPS):
    kernel = BlockGibbs(rbm, num_chains=v0.shape[0], k=1)
    kernel.initial_params = {"v": v0, "h": torch.bernoulli(rbm.hidden_probs(v0))}
    result = run_mcmc(kernel, num_samples=1, warmup_steps=steps - 1, disable_progbar=True, diagnose=False)
    return result.samples["v"][:, -1], result.samples["h"][:, -1]


def main(dbn_dir, rbm_dir, out):
    torch.manual_seed(0)
    dbn, rbm = catalogue.load(dbn_dir), catalogue.load(rbm_dir)
    test = dbn.data().test
    # two test digits of each class
    idx = torch.cat([(test.y == c).nonzero()[:2, 0] for c in range(10)])
    x = test.x[idx]
    _, h = gibbs_from(rbm.module, x)
    rbm_recon = rbm.module.visible_mean(h)
    net = dbn.module
    top_v = torch.bernoulli(net.up(x, len(net.rbms) - 1))
    v_top, _ = gibbs_from(net.top, top_v)
    _, dbn_recon = net.generate(v_top)
    rows = [("test digits", x), (f"RBM 784-1000, {STEPS} Gibbs steps", rbm_recon),
            (f"DBN 784-500-500-1000, {STEPS} Gibbs steps (top RBM)", dbn_recon)]
    fig, axes = new_figure(3, 1, figsize=(10, 3.6))
    for ax, (title, images) in zip(axes, rows):
        ax.imshow(image_grid(images, (28, 28), nrow=20), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle("MNIST-5k test digits reconstructed after 5 Gibbs steps (RBMs pretrained at lr 0.01, batch 20, "
                 "20 epochs)", fontsize=9)
    save_png(fig, out)
    err = lambda r: float((r - x).pow(2).sum(1).mean())  # noqa: E731
    print(f"squared reconstruction error per image: RBM {err(rbm_recon):.1f}, DBN {err(dbn_recon):.1f}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
