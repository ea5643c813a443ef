"""README figures for the RBM families: a 784x500 RBM on MNIST-5k and a Gaussian-Bernoulli RBM on grey digits.

Both are trained through the catalogue (what ``ppl-models train rbm|gbrbm`` does) into run
directories under ``runs/``; their sample, completion and training-curve PNGs are copied to
``benchmarks/results/`` and the numbers written to ``benchmarks/results/rbm_mnist5k.json``.

The RBM's test log-likelihood is :math:`-F(v) - \\log \\hat Z` with AIS (base-rate start,
Salakhutdinov & Murray's schedule scaled to the number of temperatures). Because one AIS
estimate can be badly off for a sharply trained RBM without saying so in its own spread,
the estimate is repeated with independent seeds (each evaluation itself is two independent
halves of its runs) and with more temperatures: the estimate counts as stable only when these
agree. A model small enough for exact log Z (784x20 here) is trained the same way, and its
AIS error is reported as a calibration of the same AIS settings.

The Gaussian-Bernoulli RBM (64x200 on the 8x8 sklearn digits, grey levels z-scored per pixel)
learns its per-pixel variances by default here: its samples look more like digits than with
unit variances, and its log-likelihood is far higher, much of it from the variances of the
near-constant border pixels shrinking (a density of discrete grey levels has no upper bound);
``--gb-fixed-sigma`` keeps them at 1. Its hidden layer (200) is summed out by AIS with a
Gaussian base model; the chains there mix easily and the estimate is tight.

Run: ``python benchmarks/rbm_mnist5k.py [--threads 1] [--epochs 100] [--ais-temperatures 14500 50000 100000]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppl_models import catalogue  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def train_run(family: str, out: str, overrides: list[str], log, reuse: bool = False) -> dict:
    if reuse and os.path.exists(os.path.join(out, "model.pt")):  # e.g. to repeat only the AIS study
        log(f"reusing the trained model in {out}")
        return json.load(open(os.path.join(out, "metrics.json")))
    shutil.rmtree(out, ignore_errors=True)
    spec = catalogue.make_spec(family, overrides=overrides)
    started = time.perf_counter()
    metrics = catalogue.train(spec, out, progress=False, log=log)
    metrics["wall_seconds_train_and_eval"] = time.perf_counter() - started
    return metrics


def ais_repeats(out: str, temperatures: list[int], seeds: list[int], runs: int) -> list[dict]:
    """Independent AIS evaluations of one trained model: the first number of temperatures with
    every seed, each larger one once (with a seed of its own)."""
    trained = catalogue.load(out)
    data = trained.family.load_data(trained.spec)
    rows = []
    pairs = [(temperatures[0], s) for s in seeds] + [(t, 100 + i) for i, t in enumerate(temperatures[1:])]
    for temps, seed in pairs:
        m = trained.family.evaluate(trained, data, num_particles=runs, temperatures=temps, seed=seed)
        rows.append({k: m.get(k) for k in (
            "ais_runs", "ais_temperatures", "ais_log_z", "ais_log_z_std", "ais_log_z_halves", "ais_seconds",
            "test_log_likelihood", "test_log_likelihood_stderr", "test_log_likelihood_interval",
            "exact_log_z", "test_log_likelihood_exact", "ais_error", "test_pseudo_likelihood")} | {"seed": seed})
        r = rows[-1]
        print(f"  AIS {temps} temperatures, seed {seed}: log Z {r['ais_log_z']:.2f} ± {r['ais_log_z_std']:.3f} "
              f"(halves {r['ais_log_z_halves'][0]:.2f} / {r['ais_log_z_halves'][1]:.2f}), test LL "
              f"{r['test_log_likelihood']:.2f}, {r['ais_seconds']:.0f}s"
              + (f", exact log Z {r['exact_log_z']:.2f}" if r.get("exact_log_z") is not None else ""), flush=True)
    return rows


def copy_pngs(out: str, prefix: str) -> list[str]:
    paths = []
    for name in ("samples", "completion", "training_curve"):
        target = os.path.join(RESULTS, f"{prefix}_{name}.png")
        shutil.copyfile(os.path.join(out, f"{name}.png"), target)
        paths.append(os.path.relpath(target, os.path.dirname(RESULTS)))
    return paths


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the 2-core machine is shared)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--k", type=int, default=1, help="Gibbs sweeps per update (PCD-k)")
    p.add_argument("--weight-decay", type=float, default=1e-3,
                   help="L2 on the weights (2e-4 gave a model on which AIS was not stable even at 100,000 temperatures)")
    p.add_argument("--ais-runs", type=int, default=100)
    p.add_argument("--ais-temperatures", type=int, nargs="+", default=[14500, 50000, 100000])
    p.add_argument("--ais-seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--gb-epochs", type=int, default=100)
    p.add_argument("--gb-hidden", type=int, default=200)
    p.add_argument("--gb-lr", type=float, default=0.002, help="(0.005 diverged in a trial)")
    p.add_argument("--gb-fixed-sigma", action="store_true", help="keep the unit variances at 1 (standardised units)")
    p.add_argument("--skip", nargs="*", default=[], choices=["rbm", "exact", "gbrbm"])
    p.add_argument("--runs-dir", default="runs/readme")
    p.add_argument("--reuse", action="store_true", help="reuse trained models found in --runs-dir (AIS study only)")
    p.add_argument("--out", default=os.path.join(RESULTS, "rbm_mnist5k.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(RESULTS, exist_ok=True)
    result = json.load(open(args.out)) if os.path.exists(args.out) else {}
    updated = {"benchmark", "threads", "machine", "command"}  # keys this invocation (re)writes
    result.update({"benchmark": "rbm_mnist5k", "threads": torch.get_num_threads(),
                   "machine": platform.processor() or platform.machine(), "command": " ".join(sys.argv)})

    def save():
        # merge into the file as it is now: another invocation (e.g. --skip rbm) may have written other parts
        current = json.load(open(args.out)) if os.path.exists(args.out) else {}
        for k in updated:
            if isinstance(result.get(k), dict):
                result[k]["command"] = result["command"]  # the invocation that produced this part
        current.update({k: v for k, v in result.items() if k in updated or k not in current})
        with open(args.out, "w") as f:
            json.dump(current, f, indent=2)

    rbm_overrides = ["data.dataset=mnist5k", "data.binarize=threshold", f"train.epochs={args.epochs}",
                     f"train.lr={args.lr}", "train.lr_schedule=linear", "train.momentum=0.9",
                     f"train.weight_decay={args.weight_decay}", "train.batch_size=20", "objective.name=pcd", f"objective.k={args.k}",
                     "objective.num_chains=100", f"train.eval_particles={args.ais_runs}",
                     f"train.ais_temperatures={args.ais_temperatures[0]}", "train.seed=0"]
    if "rbm" not in args.skip:
        out = os.path.join(args.runs_dir, "rbm_mnist5k_500")
        print("RBM 784x500 on MNIST-5k", flush=True)
        m = train_run("rbm", out, rbm_overrides + ["model.num_hidden=500"], print, args.reuse)
        print("  " + catalogue.summary(m), flush=True)
        earlier = result.get("rbm_500", {}).get("ais_repeats", []) if args.reuse else []
        updated.add("rbm_500")
        result["rbm_500"] = {
            "spec": json.load(open(os.path.join(out, "spec.json"))), "train_seconds": m.get("train_seconds"),
            "history_last": m["history"][-1], "evaluation": {k: v for k, v in m.items() if k != "history"},
            # with --reuse the same model's earlier repetitions are kept
            "ais_repeats": earlier + ais_repeats(out, args.ais_temperatures, args.ais_seeds, args.ais_runs),
            "pngs": copy_pngs(out, "rbm_mnist5k"),
        }
        save()
    if "exact" not in args.skip:
        out = os.path.join(args.runs_dir, "rbm_mnist5k_20")
        print("RBM 784x20 on MNIST-5k (exact log Z: calibrates the AIS settings)", flush=True)
        m = train_run("rbm", out, rbm_overrides + ["model.num_hidden=20"], print, args.reuse)
        print("  " + catalogue.summary(m), flush=True)
        updated.add("rbm_20_exact")
        result["rbm_20_exact"] = {"evaluation": {k: v for k, v in m.items() if k != "history"},
                                  "ais_repeats": ais_repeats(out, args.ais_temperatures[:1], args.ais_seeds, args.ais_runs)}
        save()
    if "gbrbm" not in args.skip:
        out = os.path.join(args.runs_dir, "gbrbm_digits")
        print(f"Gaussian-Bernoulli RBM 64x{args.gb_hidden} on grey digits", flush=True)
        m = train_run("gbrbm", out, ["data.dataset=digits", "data.binarize=none", f"model.num_hidden={args.gb_hidden}",
                                     f"train.epochs={args.gb_epochs}", f"train.lr={args.gb_lr}", "train.momentum=0.9",
                                     f"model.learn_sigma={json.dumps(not args.gb_fixed_sigma)}",
                                     "train.batch_size=20", "objective.num_chains=100",
                                     f"train.eval_particles={args.ais_runs}",
                                     f"train.ais_temperatures={args.ais_temperatures[0]}", "train.seed=0"], print, args.reuse)
        print("  " + catalogue.summary(m), flush=True)
        updated.add("gbrbm_digits")
        result["gbrbm_digits"] = {
            "spec": json.load(open(os.path.join(out, "spec.json"))), "train_seconds": m.get("train_seconds"),
            "history_last": m["history"][-1], "evaluation": {k: v for k, v in m.items() if k != "history"},
            "ais_repeats": ais_repeats(out, args.ais_temperatures[:1], args.ais_seeds[1:], args.ais_runs),
            "pngs": copy_pngs(out, "gbrbm_digits"),
        }
        save()
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
