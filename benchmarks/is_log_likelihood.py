"""Importance-sampled log p(x) through Pyro against a hand-written loop of the same maths, and the floor.

VAE 784-200-20 (Bernoulli), k = 1000 particles for each of 100 MNIST-5k test images, 500 particles per
pass, one thread. Three timings, interleaved so that load from other processes hits them alike:

- ``ours``: :func:`inference.log_likelihood.log_likelihood_with_stderr` (the guide and the model traced by
  Pyro, every site's log-density kept per image, running log-sum-exps of w and w^2 for the standard error);
- ``plain``: the same estimator written by hand in PyTorch (encoder once, reparameterised draws, decoder,
  the three log-densities, the Bernoulli's as x.l - sum softplus(l) as the model scores it, the same
  running log-sum-exps);
- ``floor``: the matrix products of ``plain`` alone (recorded from it, timed on fresh tensors).

The two estimates are checked to agree (same estimator, different draws) before anything is written.

Run: ``python benchmarks/is_log_likelihood.py [--repeats 7] [--particles 1000]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from _floor import flops, record_products, time_products
from inference.log_likelihood import log_likelihood_with_stderr
from ppl_models.data import load_dataset
from ppl_models.vae import VAE, VAEArchitecture

LOG_2PI = math.log(2 * math.pi)


@torch.no_grad()
def plain_log_likelihood(vae: VAE, x: torch.Tensor, k: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x) per image and its delta-method standard error, by hand (the maths of ``log_likelihood``)."""
    loc, scale = vae.encoder(x)
    acc = acc2 = None
    done = 0
    while done < k:
        m = min(chunk, k - done)
        eps = torch.randn(m, *loc.shape)
        z = loc + scale * eps
        logits = vae.decoder(z)
        # the cheapest form of the Bernoulli log-likelihood (the model's own: ppl_models.likelihoods)
        log_px = torch.einsum("...d,...d->...", x, logits) - F.softplus(logits).sum(-1)
        log_pz = -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * LOG_2PI)
        log_qz = -0.5 * (eps.pow(2).sum(-1) + z.shape[-1] * LOG_2PI) - scale.log().sum(-1)
        log_w = log_px + log_pz - log_qz
        chunk_sum, chunk_sum2 = torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w.double(), 0)
        acc = chunk_sum if acc is None else torch.logaddexp(acc, chunk_sum)
        acc2 = chunk_sum2 if acc2 is None else torch.logaddexp(acc2, chunk_sum2)
        done += m
    ratio = torch.exp(acc2 - 2 * acc.double() + math.log(k))
    stderr = torch.sqrt((ratio - 1).clamp(min=0) / (k - 1))
    return acc - math.log(k), stderr.to(acc.dtype)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--particles", type=int, default=1000)
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--chunk", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "is_log_likelihood.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = load_dataset("mnist5k", binarize="threshold").test.x[:args.images]
    vae = VAE(VAEArchitecture(x_dim=784, z_dim=20, hidden=[200])).eval()

    def ours():
        return log_likelihood_with_stderr(vae.model, vae.guide, x, num_particles=args.particles,
                                          batch_size=args.images, particle_chunk=args.chunk)

    def plain():
        return plain_log_likelihood(vae, x, args.particles, args.chunk)

    (a, a_se), (b, b_se) = ours(), plain()  # warm-up, and the check that both compute the same estimator
    gap = (a - b).abs() / torch.sqrt(a_se**2 + b_se**2 + 1e-12)
    if not bool((gap < 6).all()):
        raise SystemExit(f"the two estimators disagree: max {gap.max():.1f} standard errors")
    with torch.no_grad():
        products = record_products(plain)
    t_ours, t_plain, t_floor = [], [], []
    for _ in range(args.repeats):
        for fn, times in ((ours, t_ours), (plain, t_plain)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        t_floor.append(time_products(products, repeats=1))
    med = {name: statistics.median(t) for name, t in (("ours", t_ours), ("plain", t_plain), ("floor", t_floor))}
    result = {
        "benchmark": "is_log_likelihood",
        "what": f"log p(x) by importance sampling with the guide, VAE 784-200-20 Bernoulli, k={args.particles}, "
                f"{args.images} images, {args.chunk} particles per pass",
        "data": "MNIST-5k test split, threshold 0.5", "repeats": args.repeats, "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "ours_seconds": t_ours, "plain_seconds": t_plain, "floor_seconds": t_floor,
        **{f"{k}_median_s": v for k, v in med.items()},
        "floor_gflop": flops(products) / 1e9,
        "ratio_ours_over_plain": med["ours"] / med["plain"],
        "ratio_ours_over_floor": med["ours"] / med["floor"],
        "ratio_plain_over_floor": med["plain"] / med["floor"],
        "mean_log_likelihood": {"ours": a.mean().item(), "plain": b.mean().item()},
        "aim": 1.05, "aim_against": "plain",
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"ours {med['ours']:.3f}s  plain {med['plain']:.3f}s  floor {med['floor']:.3f}s  ours/plain "
          f"{result['ratio_ours_over_plain']:.2f} (aim <= 1.05)  plain/floor {result['ratio_plain_over_floor']:.2f}"
          f"  -> {args.out}")


if __name__ == "__main__":
    main()
