"""README figures for the VAE and the IWAE: MNIST-5k, 4,000 training images, 100 epochs.

Trains (or, if the run directory is already complete, reuses) the two CLI
runs below, then writes their test NLL (k = 5000 importance samples on the
other 1,000 images) to ``benchmarks/results/vae_iwae_mnist5k.json`` and copies
their sample grids and training curves beside it::

    ppl-models train vae  --epochs 100 --set data.valid_size=0 --out runs/readme-vae
    ppl-models train iwae --epochs 100 --set data.valid_size=0 --out runs/readme-iwae5

Reference (plain PyTorch, planning notes): 90.1 (VAE) and 89.5 (IWAE k=5) nats at
100 epochs with k = 1000 evaluation.
"""

import json
import os
import shutil
import sys

import torch

from ppl_models import catalogue

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
RUNS = {"vae": "runs/readme-vae", "iwae": "runs/readme-iwae5"}


def main():
    out = {"data": "MNIST-5k, threshold 0.5, 4000 train / 1000 test (split_seed 0)", "epochs": 100,
           "architecture": "784-200-20 softplus, Bernoulli", "optimiser": "Adam 1e-3, batch 100", "runs": {}}
    for family, directory in RUNS.items():
        metrics_path = os.path.join(directory, "metrics.json")
        done = os.path.exists(os.path.join(directory, "test_log_likelihood.pt"))
        if not done:  # trains, or only re-evaluates a finished run
            spec = catalogue.make_spec(family, overrides=["train.epochs=100", "data.valid_size=0"])
            catalogue.train(spec, directory, progress=sys.stderr.isatty())
        m = json.load(open(metrics_path))
        out["runs"][family] = {k: m[k] for k in ("test_nll", "test_nll_stderr", "eval_particles", "test_images",
                                                 "train_seconds", "eval_seconds", "final_train_loss")}
        out["runs"][family]["objective"] = json.load(open(os.path.join(directory, "spec.json")))["objective"]
        for png in ("samples.png", "training_curve.png"):
            shutil.copy(os.path.join(directory, png), os.path.join(RESULTS, f"{family}_mnist5k_{png}"))
    ll = {f: torch.load(os.path.join(d, "test_log_likelihood.pt")) for f, d in RUNS.items()
          if os.path.exists(os.path.join(d, "test_log_likelihood.pt"))}
    if len(ll) == 2:
        diff = ll["iwae"] - ll["vae"]  # same 1,000 test images: a paired comparison
        out["iwae_minus_vae_log_likelihood"] = {"mean": diff.mean().item(),
                                                "paired_stderr": diff.std().item() / len(diff) ** 0.5}
    with open(os.path.join(RESULTS, "vae_iwae_mnist5k.json"), "w") as f:
        json.dump(out, f, indent=2)
    for family, r in out["runs"].items():
        print(f"{family}: test NLL {r['test_nll']:.2f} ± {r['test_nll_stderr']:.2f} nats (k={r['eval_particles']})")
    if "iwae_minus_vae_log_likelihood" in out:
        d = out["iwae_minus_vae_log_likelihood"]
        print(f"IWAE - VAE log-likelihood, paired over test images: {d['mean']:.3f} ± {d['paired_stderr']:.3f} nats")


if __name__ == "__main__":
    main()
