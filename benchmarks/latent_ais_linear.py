"""Latent AIS against the exact log p(x) of a linear-Gaussian decoder, at several temperature counts.

The model is the test suite's linear-Gaussian VAE (``tests/linear_gaussian.py``): :math:`z \\sim \\mathcal{N}(0, I)`,
:math:`x = W z + b + s \\epsilon` with D = 6, Z = 3, whose marginal :math:`p(x) = \\mathcal{N}(b, W W^T + s^2 I)` is
closed form. :func:`inference.latent_ais.latent_ais_log_likelihood` (Wu et al. 2017: AIS over z from the prior to
the posterior, HMC transitions with 10 leapfrog steps, sigmoid schedule) estimates it for 20 images with 32 runs
each, at every ``--temperatures`` count; each row records the mean and mean absolute error against the exact value,
the mean reported standard error, how many images fall within 3 standard errors, and the seconds taken.

The second check is the bound: AIS's weights are unbiased for p(x), so one run per image gives
:math:`E[\\log \\hat p(x)] \\le \\log p(x)` (Jensen), the gap closing as the temperatures grow. On 200 images with
one run each, ``lower_bound`` records the mean of :math:`\\log \\hat p(x) - \\log p(x)` and its standard error.

A few seconds at 10-200 temperatures, about 20 s at 1000, one thread.

Run: ``python benchmarks/latent_ais_linear.py [--temperatures 10 50 200 1000] [--bound-temperatures 10 200]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inference.latent_ais import latent_ais_log_likelihood
from tests.linear_gaussian import LinearGaussian

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
X_DIM, Z_DIM, LEAPFROG = 6, 3, 10


def accuracy_row(model, x, exact, temperatures: int, runs: int) -> dict:
    """One temperature count: the estimates of ``x`` against their exact ``log p(x)``."""
    W, b, s = model.W.detach(), model.b.detach(), float(model.log_s.detach().exp())
    started = time.perf_counter()
    r = latent_ais_log_likelihood(lambda z: z @ W.T + b, x, Z_DIM, sigma=s, num_temperatures=temperatures,
                                  num_runs=runs, leapfrog_steps=LEAPFROG, seed=0)
    seconds = time.perf_counter() - started
    d = r.log_prob - exact
    return {"temperatures": temperatures, "mean_error": float(d.mean()), "mean_abs_error": float(d.abs().mean()),
            "mean_stderr": float(r.stderr.mean()), "within_3_stderr": int((d.abs() < 3 * r.stderr).sum()),
            "images": x.shape[0], "hmc_acceptance": float(r.acceptance.mean()), "seconds": seconds}


def bound_row(model, x, exact, temperatures: int) -> dict:
    """One run per image: the mean of log p_hat - log p, negative in expectation (a stochastic lower bound)."""
    W, b, s = model.W.detach(), model.b.detach(), float(model.log_s.detach().exp())
    r = latent_ais_log_likelihood(lambda z: z @ W.T + b, x, Z_DIM, sigma=s, num_temperatures=temperatures,
                                  num_runs=1, leapfrog_steps=LEAPFROG, seed=1)
    d = r.log_prob - exact
    return {"temperatures": temperatures, "images": x.shape[0], "runs_per_image": 1,
            "mean_log_p_hat_minus_log_p": float(d.mean()), "stderr": float(d.std() / math.sqrt(x.shape[0]))}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--temperatures", type=int, nargs="+", default=[10, 50, 200, 1000])
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--runs", type=int, default=32, help="AIS runs per image of the accuracy rows")
    p.add_argument("--bound-temperatures", type=int, nargs="*", default=[10, 200])
    p.add_argument("--bound-images", type=int, default=200)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the 2-core machine is shared)")
    p.add_argument("--out", default=os.path.join(RESULTS, "latent_ais_linear.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = LinearGaussian(x_dim=X_DIM, z_dim=Z_DIM, seed=0)
    with torch.no_grad():
        x = model.data(args.images, seed=1)
        exact = model.log_marginal(x)
    print("temperatures | mean(est - exact) | mean |est - exact| | mean stderr | within 3 stderr | seconds")
    rows = []
    for t in args.temperatures:
        r = accuracy_row(model, x, exact, t, args.runs)
        rows.append(r)
        print(f"{t} | {r['mean_error']:+.3f} | {r['mean_abs_error']:.3f} | {r['mean_stderr']:.3f} | "
              f"{r['within_3_stderr']}/{r['images']} | {r['seconds']:.1f}", flush=True)
    with torch.no_grad():
        xb = model.data(args.bound_images, seed=4)
        exact_b = model.log_marginal(xb)
    bounds = []
    for t in args.bound_temperatures:
        r = bound_row(model, xb, exact_b, t)
        bounds.append(r)
        print(f"one run, {t} temperatures, {r['images']} images: mean(log p_hat - log p) = "
              f"{r['mean_log_p_hat_minus_log_p']:+.3f} ± {r['stderr']:.3f}", flush=True)
    result = {
        "benchmark": "latent_ais_linear",
        "what": f"latent AIS (HMC, {LEAPFROG} leapfrog steps, sigmoid schedule) against the exact log p(x) of a "
                f"linear-Gaussian decoder x = W z + b + s eps, D={X_DIM}, Z={Z_DIM} (tests/linear_gaussian.py, seed 0)",
        "exact_mean_log_p": float(exact.mean()), "runs_per_image": args.runs,
        "rows": rows, "lower_bound": bounds,
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
