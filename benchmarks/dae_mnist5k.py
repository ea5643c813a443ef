"""README figures for the ``dae`` family: a denoising autoencoder's chain on MNIST-5k, with and without walkback.

Two runs of the catalogue defaults (784-1000-784 tanh, salt-and-pepper noise 0.4, Adam 1e-3, batch 100,
100 epochs on the default split) are trained into ``--runs-dir`` (a finished run is reused as it is):

- ``mnist5k``: ``ppl-models train dae`` (the denoising criterion, one corrupt-reconstruct step);
- ``mnist5k_walkback3``: ``ppl-models train dae --set objective.walkback_steps=3`` (Bengio et al. 2013's walkback).

Each run's own evaluation (:meth:`ppl_models.catalogue.dae.DAEFamily.evaluate`) gives the figures recorded:
the kernel MMD² of 1,000 chain samples against 1,000 test images with its permutation p-value, the
reconstruction NLL ``-log P(x | x~)`` (the training criterion, not a likelihood), the chain estimate of
``log pi(x)`` (a loose stochastic lower bound) and the training seconds. The DAE has no likelihood to compare, so
``context`` puts the MMD on a scale with the same test (same bandwidths, images and permutations): 1,000
training images against the test images (the floor: the same distribution) and 1,000 binary ancestral samples of
a VAE (``--vae-run``, trained with the catalogue defaults if absent) against them.

Each run's sample grid is copied beside the JSON as ``dae_mnist5k_samples.png`` and
``dae_mnist5k_walkback3_samples.png``, and the first run's completions of 8 test images (top half observed)
as ``dae_mnist5k_completion.png``. Training takes about 10 minutes per run on one thread of the shared machine,
evaluation about 2 minutes, the context tests under a minute.

``--dataset fashion-mnist`` trains on Fashion-MNIST's default split (55,000 training, 5,000 validation images,
threshold 0.5) for ``DATASETS``' epochs (a time budget: each run costing about what its MNIST-5k counterpart did)
and evaluates on 1,000 of the 10,000 test images (``data.test_size=1000``, drawn with the split seed; about 20 s of
evaluation a run, all 10,000 some ten times that); the VAE context row is left out unless
``--vae-run`` names a run trained on that data set, and ``--runs`` may leave out the walkback run. Files are
named ``dae_fashion-mnist.json``, ``dae_fashion-mnist_samples.png``, ``dae_fashion-mnist_completion.png``.

Run: ``python benchmarks/dae_mnist5k.py [--dataset mnist5k] [--runs plain walkback3] [--runs-dir runs/dae]
[--vae-run runs/latent_ais/vae]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inference.mmd import mmd_permutation_test
from inference.queries import sample_model
from ppl_models import catalogue
from ppl_models.catalogue.dae import BANDWIDTHS

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
#: run -> the overrides beyond the catalogue defaults (run names: "<dataset>" and "<dataset>_walkback3")
RUNS = {"plain": [], "walkback3": ["objective.walkback_steps=3"]}
#: data set -> (its description in the JSON, the overrides it adds, the default --vae-run of the context row)
DATASETS = {"mnist5k": ("MNIST-5k, threshold 0.5: the default split (3,500 training, 500 validation, 1,000 test)", [],
                        "runs/latent_ais/vae"),
            # an epoch is 550 updates, some 15 s on one thread of the shared machine (30 s with walkback 3):
            # 12 epochs (6,600 updates) cost less than MNIST-5k's 100 (35,000 updates of 3,500 images) did
            "fashion-mnist": (("Fashion-MNIST, threshold 0.5: the default split (55,000 training, 5,000 validation), "
                               "1,000 of the 10,000 test images drawn with seed 0"),
                              ["data.dataset=fashion-mnist", "data.test_size=1000", "train.epochs=12"], None)}

METRICS = ("test_mmd2", "test_mmd_p_value", "test_reconstruction_nll", "test_reconstruction_nll_stderr",
           "test_log_likelihood", "test_nll_stderr", "eval_particles", "chain_steps", "test_images",
           "train_seconds", "eval_seconds", "final_train_loss", "walkback_steps")


def run_name(args, run: str) -> str:
    return args.dataset if run == "plain" else f"{args.dataset}_{run}"


def run_one(run: str, args, beside: str) -> dict:
    """Train (or reuse) one run, copy its sample grid beside the JSON, return its row."""
    name = run_name(args, run)
    overrides = [*DATASETS[args.dataset][1], *RUNS[run], *args.set]
    out = os.path.join(args.runs_dir, name)
    metrics = catalogue.train(catalogue.make_spec("dae", overrides=overrides), out,
                              progress=sys.stderr.isatty(), log=print)
    row = {k: metrics[k] for k in METRICS if k in metrics}
    row.update(epochs=len(metrics["history"]), mmd=metrics["mmd"], run_directory=out,
               command="ppl-models train dae" + "".join(f" --set {shlex.quote(o)}" for o in overrides))
    samples = os.path.join(beside, f"dae_{name}_samples.png")
    shutil.copyfile(os.path.join(out, "samples.png"), samples)
    print(f"  {name}: MMD² {row['test_mmd2']:.4g} (p = {row['test_mmd_p_value']:.3g}), reconstruction NLL "
          f"{row['test_reconstruction_nll']:.2f}, chain log pi(x) {row['test_log_likelihood']:.2f} ± "
          f"{row['test_nll_stderr']:.2f}, {row['train_seconds']:.0f} s training; samples -> {samples}", flush=True)
    return row


def context(args, dae_row: dict) -> dict:
    """The same MMD test against training images (the floor) and against a VAE's binary samples."""
    if not args.vae_run:  # the floor alone, on the DAE run's own data
        data = catalogue.load(dae_row["run_directory"]).data()
        n, b = dae_row["mmd"]["sample_sizes"][1], dae_row["mmd"]["num_permutations"]
        r = mmd_permutation_test(data.train.x[:n].double(), data.test.x[:n].double(), BANDWIDTHS, b,
                                 generator=torch.Generator().manual_seed(0)).as_dict()
        out = {"train_vs_test": {k: r[k] for k in ("mmd2", "p_value", "num_permutations", "sample_sizes", "bandwidths")}}
        print(f"  context train_vs_test: MMD² {r['mmd2']:.4g} (p = {r['p_value']:.3g})", flush=True)
        return out
    if not os.path.exists(os.path.join(args.vae_run, "metrics.json")):
        print(f"no trained VAE in {args.vae_run}: training one with the catalogue defaults", flush=True)
        catalogue.train(catalogue.make_spec("vae"), args.vae_run, progress=sys.stderr.isatty(), log=print)
    vae = catalogue.load(args.vae_run)
    data = vae.data()
    n, b = dae_row["mmd"]["sample_sizes"][1], dae_row["mmd"]["num_permutations"]
    test = data.test.x[:n].double()
    out = {"vae_run": args.vae_run}

    def test_against(x):
        r = mmd_permutation_test(x, test, BANDWIDTHS, b, generator=torch.Generator().manual_seed(0)).as_dict()
        return {k: r[k] for k in ("mmd2", "p_value", "num_permutations", "sample_sizes", "bandwidths")}

    out["train_vs_test"] = test_against(data.train.x[:n].double())
    torch.manual_seed(0)
    with torch.no_grad():
        out["vae_binary_samples_vs_test"] = test_against(sample_model(vae.module.model, n)["x"].double())
    for k in ("train_vs_test", "vae_binary_samples_vs_test"):
        print(f"  context {k}: MMD² {out[k]['mmd2']:.4g} (p = {out[k]['p_value']:.3g})", flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist5k", choices=list(DATASETS))
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS), help="the first is the one completed")
    p.add_argument("--runs-dir", default="runs/dae")
    p.add_argument("--vae-run", default=None, help="the VAE of the context MMD (trained if absent; '': none); default: "
                   + ", ".join(f"{k} {v[2]}" for k, v in DATASETS.items()))
    p.add_argument("--loaded", action="store_true", help="record that the machine was shared (timings: upper bounds)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="further spec overrides for both runs (e.g. train.epochs=1 for a smoke test)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the 2-core machine is shared)")
    p.add_argument("--out", default=None, help="default: benchmarks/results/dae_<dataset>.json")
    args = p.parse_args()
    args.out = args.out or os.path.join(RESULTS, f"dae_{args.dataset}.json")
    args.vae_run = DATASETS[args.dataset][2] if args.vae_run is None else args.vae_run
    torch.set_num_threads(args.threads)
    beside = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(beside, exist_ok=True)
    rows = {run_name(args, run): run_one(run, args, beside) for run in args.runs}
    first = run_name(args, args.runs[0])
    completion = os.path.join(beside, f"dae_{args.dataset}_completion.png")
    answer = catalogue.query(os.path.join(args.runs_dir, first), "complete", split="test", index="0:8",
                             png=completion)
    print(f"  completions -> {completion}")
    result = {"benchmark": "dae_mnist5k", "rows": rows, "context": context(args, rows[first]),
              "completion": {k: answer.numbers[k] for k in ("inputs_from", "mask", "settings", "estimator")},
              "data": DATASETS[args.dataset][0], "machine_loaded": args.loaded,
              "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
              "command": "python " + " ".join(shlex.quote(a) for a in sys.argv)}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
