"""README figures for the implicit families: GAN and GMMN on MNIST-5k grey levels, beside a VAE decoder.

Each model is trained through the catalogue (``ppl-models train gan|gmmn|vae``) on the 3,500 training images of
MNIST-5k's default split, grey levels in [0, 1]: the GAN with the family's defaults (discriminator 512-256 with a
sigmoid output, generator 256-512-1024 with batch normalisation, leaky ReLU, tanh on standardised images, noise
100, batch 32, one discriminator step per generator step, Adam 2e-4 with beta1 0.5, one-sided label smoothing
0.1; 273 epochs = 30,030 iterations), the GMMN with its defaults (Li et al.'s 64-256-256-1024 ReLU generator,
noise 10, batch 1000, MMD² over the bandwidths 2-80), and a VAE with a Gaussian likelihood of learned per-pixel
scale (784-200-20, the catalogue's default architecture) whose decoder mean stands beside the two generators.

Written to ``benchmarks/results/``: a 5x5 grid of 25 samples per model (the GAN's is the anchor of the
introduction this default reproduces), the GAN's images at fixed latent codes by epoch, and
``implicit_mnist5k.json`` with, per model:

- the kernel MMD² between ``--mmd-images`` samples and as many test images, with the permutation p-value
  (``--permutations`` relabellings), and the same test between validation and test images as the
  real-against-real reference;
- log p(x) by AIS over the latent code (Wu et al. 2017) with a Gaussian observation model N(x; G(z), σ² I),
  σ fitted per model on validation images (the grid value with the highest cheap-AIS log-likelihood), on the
  first ``--ais-images`` test images, ``--ais-runs`` runs x ``--ais-temperatures`` temperatures: a stochastic
  lower bound on the log-density of the σ-smoothed model (nats per image; a density of grey levels, so it can
  be positive), the same estimator for all three models.

``--dataset fashion-mnist`` trains the same three models on Fashion-MNIST's default split (55,000 training,
5,000 validation, 10,000 test images; the MMD and AIS read the first test images as above) for the epochs of
``DATASETS`` (a time budget, each run costing about what its MNIST-5k counterpart did or less on the shared
machine: the GAN's 18 epochs are 30,942 iterations, as many as MNIST-5k's 30,030; the GMMN's 16 are 880, against MNIST-5k's 1,600), and names its files ``implicit_fashion-mnist.json``,
``implicit_fashion-mnist_<model>_samples.png`` and the run directories ``<model>_fashion-mnist``.

Run: ``python benchmarks/implicit_mnist5k.py [--dataset mnist5k] [--models gan gmmn vae] [--epochs gan=N ...] [--threads 1]``;
a run directory already holding the model (``--runs-dir``) is reused (an unfinished one resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inference.latent_ais import fit_sigma, latent_ais_log_likelihood  # noqa: E402
from inference.mmd import mmd_permutation_test  # noqa: E402
from ppl_models import catalogue  # noqa: E402
from ppl_models.catalogue.plots import save_image_grid  # noqa: E402
from ppl_models.data import load_dataset  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
BANDWIDTHS = [2.0, 5.0, 10.0, 20.0, 40.0, 80.0]
#: the runs' own (catalogue) evaluation is kept cheap; this script scores every model the same way below
RUN_EVALUATION = ["train.ais_images=20", "train.ais_temperatures=100", "train.eval_particles=4"]
MODELS = {
    "gan": {"family": "gan", "overrides": RUN_EVALUATION, "epochs": 273},
    "gmmn": {"family": "gmmn", "overrides": RUN_EVALUATION, "epochs": 400},
    "vae": {"family": "vae", "overrides": ["model.likelihood=gaussian", "data.binarize=none",
                                           "train.eval_particles=100"], "epochs": 50, "directory": "vae_gaussian"},
}
#: data set -> (its description in the JSON, epochs per model where they differ from MNIST-5k's)
DATASETS = {"mnist5k": ("MNIST-5k grey levels in [0, 1]: 3,500 training, 500 validation, 1,000 test images", {}),
            # a time budget on one thread of the shared machine: an epoch is 1,719 GAN iterations (36-65 s),
            # 55 GMMN iterations (some 35 s), 550 VAE iterations (some 6 s). The README's GMMN row was trained for
            # 6 epochs, then resumed to 16 (--epochs gmmn=16: the run directory is reused)
            "fashion-mnist": (("Fashion-MNIST grey levels in [0, 1]: 55,000 training, 5,000 validation, "
                               "10,000 test images"), {"gan": 18, "gmmn": 16, "vae": 20})}
LITERATURE = ("Wu et al. 2017 (full MNIST, the same estimator with far more temperatures and BDMC checks) found "
              "the VAE's latent-AIS log-likelihood far above the GAN's and the GMMN's; their models and data differ "
              "from ours: a pattern to compare, not numbers")


def decoder(name, module):
    """``decode(z) -> mean image`` and the latent size of a trained module (eval mode: batch norm by its
    running statistics)."""
    module.eval()
    if name == "vae":
        return module.decode_mean, module.arch.z_dim
    return module, module.z_dim


def train(name, args):
    m = MODELS[name]
    epochs = args.epochs.get(name, DATASETS[args.dataset][1].get(name, m["epochs"]))
    out = os.path.join(args.runs_dir, f"{m.get('directory', name)}_{args.dataset}")
    overrides = [f"data.dataset={args.dataset}", *m["overrides"], f"train.epochs={epochs}"]
    spec = catalogue.make_spec(m["family"], overrides=overrides)
    started = time.perf_counter()
    metrics = catalogue.train(spec, out, progress=sys.stderr.isatty(), log=print)
    command = f"ppl-models train {m['family']} --out {out} " + " ".join(f"--set {shlex.quote(o)}" for o in overrides)
    return out, metrics, time.perf_counter() - started, command


def score(name, out, metrics, args) -> dict:
    trained = catalogue.load(out)
    data = trained.data()
    decode, z_dim = decoder(name, trained.module)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        samples = decode(torch.randn(args.mmd_images, z_dim)).clamp(0, 1)
    grid = os.path.join(RESULTS, f"implicit_{args.dataset}_{name}_samples.png")
    save_image_grid(samples[:25], data.image_shape, grid, nrow=5,
                    title=f"{name}: 25 samples" + (" (decoder means)" if name == "vae" else " G(z)"))
    test = data.test.x
    n = min(args.mmd_images, len(test))
    g = torch.Generator().manual_seed(args.seed)
    mmd = mmd_permutation_test(samples[:n].double(), test[:n].double(), BANDWIDTHS, args.permutations, generator=g)

    started = time.perf_counter()
    with torch.no_grad():
        sigma, sigma_scores = fit_sigma(decode, data.valid.x[:args.sigma_images], z_dim, grid=args.sigma_grid,
                                        num_temperatures=args.sigma_temperatures, num_runs=2, seed=args.seed)
        r = latent_ais_log_likelihood(decode, test[:args.ais_images], z_dim, sigma=sigma,
                                      num_temperatures=args.ais_temperatures, num_runs=args.ais_runs, seed=args.seed)
    ll = r.log_prob
    history = metrics.get("history", [])
    row = {"mmd2": mmd.mmd2, "mmd_p_value": mmd.p_value, "mmd_sample_sizes": list(mmd.sizes),
           "ais_log_likelihood": float(ll.mean()), "ais_log_likelihood_stderr": float(ll.std() / len(ll) ** 0.5),
           "ais_runs_stderr_mean": float(r.stderr.mean()), "ais_sigma": sigma, "ais_sigma_scores": sigma_scores,
           "ais_hmc_acceptance": float(r.acceptance.mean()), "ais_images": len(ll), "ais_runs": args.ais_runs,
           "ais_temperatures": args.ais_temperatures, "ais_seconds": time.perf_counter() - started,
           "epochs": len(history), "iterations": len(history) * -(-data.train.x.shape[0] // trained.spec.train.batch_size),
           "seconds_per_epoch_median": statistics.median(h["seconds"] for h in history) if history else None,
           "train_seconds": sum(h["seconds"] for h in history), "final_train_loss": history[-1]["train_loss"] if history
           else None, "samples_png": grid, "run_directory": out}
    for key in ("test_mmd2", "test_mmd_p_value", "test_nll", "estimator"):
        if key in metrics:
            row[f"run_evaluation_{key}"] = metrics[key]
    if name == "gan" and os.path.exists(os.path.join(out, "fixed_latents.png")):
        row["fixed_latents_png"] = os.path.join(RESULTS, f"implicit_{args.dataset}_gan_fixed_latents.png")
        shutil.copyfile(os.path.join(out, "fixed_latents.png"), row["fixed_latents_png"])
    print(f"  {name}: MMD² {row['mmd2']:.4g} (p = {row['mmd_p_value']:.3g}); latent-AIS log p(x) "
          f"{row['ais_log_likelihood']:.1f} ± {row['ais_log_likelihood_stderr']:.1f} nats (sigma {sigma:.3g}, "
          f"{len(ll)} test images); samples -> {grid}", flush=True)
    return row


def reference_row(args) -> dict:
    """The MMD test between two sets of real images (validation and test): what 'indistinguishable' reads as."""
    data = load_dataset(args.dataset, binarize="none")  # the default split every model above trains on
    n = min(args.mmd_images, len(data.valid.x), len(data.test.x))  # the models' test size at most
    g = torch.Generator().manual_seed(args.seed)
    t = mmd_permutation_test(data.valid.x[:n].double(), data.test.x[:n].double(), BANDWIDTHS, args.permutations,
                             generator=g)
    return {"mmd2": t.mmd2, "mmd_p_value": t.p_value, "mmd_sample_sizes": list(t.sizes)}


def merge(path, key, row, args):
    # merge into the file as it is now: other invocations (one per model, in parallel) write other rows
    result = json.load(open(path)) if os.path.exists(path) else {}
    result.update({"benchmark": "implicit_mnist5k", "threads": torch.get_num_threads(),
                   "machine": platform.processor() or platform.machine(),
                   "data": DATASETS[args.dataset][0], "machine_loaded": args.loaded,
                   "mmd": f"unbiased MMD^2, Gaussian kernels summed over bandwidths {BANDWIDTHS}, "
                          f"{args.permutations} permutations",
                   "ais": "latent AIS (inference.latent_ais), Gaussian observation model, sigma fitted on validation "
                          "images; a stochastic lower bound on log p(x) of the sigma-smoothed model",
                   "literature": LITERATURE})
    result.setdefault("rows", {})[key] = row | {"date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
                                                "script_command": "python " + " ".join(map(shlex.quote, sys.argv))}
    with open(path, "w") as f:
        json.dump(result, f, indent=2)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist5k", choices=list(DATASETS))
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--epochs", nargs="*", default=[], metavar="MODEL=N", help="epochs per model (default: "
                   + ", ".join(f"{k} {v['epochs']}" for k, v in MODELS.items()) + ")")
    p.add_argument("--mmd-images", type=int, default=1000)
    p.add_argument("--permutations", type=int, default=1000)
    p.add_argument("--ais-images", type=int, default=20)
    p.add_argument("--ais-runs", type=int, default=4)
    p.add_argument("--ais-temperatures", type=int, default=200)
    p.add_argument("--sigma-images", type=int, default=10)
    p.add_argument("--sigma-temperatures", type=int, default=20)
    p.add_argument("--sigma-grid", type=float, nargs="+", default=[0.03, 0.05, 0.08, 0.12, 0.18, 0.27, 0.4])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the 2-core machine is shared)")
    p.add_argument("--runs-dir", default="runs/implicit")
    p.add_argument("--reference", action="store_true", help="also the real-against-real MMD row")
    p.add_argument("--loaded", action="store_true", help="record that the machine was shared (timings: upper bounds)")
    p.add_argument("--out", default=None, help="default: benchmarks/results/implicit_<dataset>.json")
    args = p.parse_args()
    args.out = args.out or os.path.join(RESULTS, f"implicit_{args.dataset}.json")
    args.epochs = {k: int(v) for k, v in (e.split("=", 1) for e in args.epochs)}
    torch.set_num_threads(args.threads)
    os.makedirs(RESULTS, exist_ok=True)
    if args.reference:
        merge(args.out, f"{args.dataset}/validation_vs_test", reference_row(args), args)
    for name in args.models:
        out, metrics, wall, command = train(name, args)
        row = score(name, out, metrics, args) | {"command": command, "train_wall_seconds": wall,
                                                  "resumed_from_epoch": metrics.get("resumed_from_epoch")}
        merge(args.out, f"{args.dataset}/{name}", row, args)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
