"""A VAE's test log p(x): importance sampling with the guide (k = 5000) against latent AIS, and BDMC.

Default mode: the first ``--images`` MNIST-5k test images of a trained VAE (``--run``; trained with the
catalogue defaults, ``ppl-models train vae``, when the directory holds no finished run) are scored by
``ppl-models query RUN log_prob --estimator importance --particles 5000`` (the IWAE bound with the guide as
proposal) and by ``--estimator latent_ais --particles 16 --temperatures T`` for every ``--temperatures`` T
(Wu et al. 2017: AIS over z from the prior to the posterior, HMC transitions, no guide involved). Both are
stochastic lower bounds of log p(x), so the larger is the tighter; each AIS row records its mean, the paired
difference AIS - IS over the same images with its standard error, how many images AIS scores higher, the
HMC acceptance rate and the seconds taken, and keeps the per-image values.

``--bdmc``: bidirectional Monte Carlo (Grosse et al. 2015) on ``--images`` binary images simulated from the
same VAE (z ~ N(0, I), x ~ p(x | z)): forward latent AIS (a stochastic lower bound), reverse latent AIS started
at the simulating z, an exact posterior draw (a stochastic upper bound), and importance sampling with the guide
(k = 5000), on the same images. The BDMC gap (reverse - forward) bounds the forward estimate's error on data
like the model's own; ``forward_minus_is`` says how much tighter AIS is than the guide there.

Cost on one thread of the shared machine: the default mode about 30 minutes at T = 1000 (100 images),
--bdmc about 17 minutes at T = 1000 (50 images, both directions).

Run: ``python benchmarks/latent_ais_vae.py [--run runs/latent_ais/vae] [--images 100] [--temperatures 100 1000]``
     ``python benchmarks/latent_ais_vae.py --bdmc [--images 50] [--temperatures 300 1000]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inference.latent_ais import latent_ais
from inference.log_likelihood import log_likelihood_with_stderr
from ppl_models import catalogue

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
IS_PARTICLES, AIS_RUNS, LEAPFROG = 5000, 16, 10


def trained_vae(run: str):
    """The VAE in ``run``, trained there with the catalogue defaults first if it is not a finished run."""
    if not os.path.exists(os.path.join(run, "metrics.json")):
        print(f"no trained VAE in {run}: training one with the catalogue defaults (ppl-models train vae)", flush=True)
        catalogue.train(catalogue.make_spec("vae"), run, progress=sys.stderr.isatty(), log=print)
    return catalogue.load(run)


def per_image(numbers: dict) -> list[float]:
    return [row["log_prob"] for row in numbers["inputs"]]


def comparison(is_numbers: dict, is_seconds: float, ais: dict) -> dict:
    """The rows of the default mode from the two queries' JSON (``ais``: temperatures -> (numbers, seconds)).

    Shared with the conversion of a run made by hand through ``ppl-models query``, so both read the same."""
    base = per_image(is_numbers)
    n = len(base)
    rows = {"importance": {"estimator": is_numbers["estimator"], "settings": is_numbers["settings"],
                           "mean": is_numbers["mean"], "stderr_over_images": statistics.stdev(base) / math.sqrt(n),
                           "seconds": is_seconds, "log_prob": base}}
    for t, (numbers, seconds) in sorted(ais.items()):
        values = per_image(numbers)
        d = [a - b for a, b in zip(values, base)]
        rows[f"latent_ais_T{t}"] = {
            "estimator": numbers["estimator"], "settings": numbers["settings"], "mean": numbers["mean"],
            "stderr_over_images": statistics.stdev(values) / math.sqrt(n),
            "ais_minus_is": {"mean": statistics.mean(d), "paired_stderr": statistics.stdev(d) / math.sqrt(n),
                             "images_ais_higher": sum(v > 0 for v in d)},
            "hmc_acceptance": numbers["hmc_acceptance"], "seconds": seconds, "log_prob": values}
    return {"images": n, "inputs_from": is_numbers["inputs_from"], "units": is_numbers["units"], "rows": rows}


def compare(args) -> dict:
    trained_vae(args.run)
    index = f"0:{args.images}"
    started = time.perf_counter()
    is_answer = catalogue.query(args.run, "log_prob", split="test", index=index, estimator="importance",
                                num_particles=args.particles)
    is_seconds = time.perf_counter() - started
    print(f"importance sampling k={args.particles}: mean {is_answer.numbers['mean']:.2f} ({is_seconds:.0f} s)",
          flush=True)
    ais = {}
    for t in args.temperatures:
        started = time.perf_counter()
        answer = catalogue.query(args.run, "log_prob", split="test", index=index, estimator="latent_ais",
                                 num_particles=args.runs, temperatures=t)
        ais[t] = (answer.numbers, time.perf_counter() - started)
        print(f"latent AIS T={t}: mean {answer.numbers['mean']:.2f} ({ais[t][1]:.0f} s)", flush=True)
    out = comparison(is_answer.numbers, is_seconds, ais)
    for name, row in out["rows"].items():
        if "ais_minus_is" in row:
            d = row["ais_minus_is"]
            print(f"{name} - importance: {d['mean']:+.2f} ± {d['paired_stderr']:.2f} nats "
                  f"(AIS higher on {d['images_ais_higher']}/{out['images']} images)")
    return out


def bdmc_row(vae, z_dim, log_likelihood_of, n: int, temperatures: int, runs: int, particles: int) -> dict:
    """Forward and reverse latent AIS and importance sampling on ``n`` images simulated from the VAE."""
    torch.manual_seed(0)
    with torch.no_grad():
        z = torch.randn(n, z_dim)
        x = torch.bernoulli(torch.sigmoid(vae.decoder(z)))
    out = {"temperatures": temperatures, "runs": runs, "images": n}
    started = time.perf_counter()
    fwd = latent_ais(log_likelihood_of(x), n, z_dim, num_temperatures=temperatures, num_runs=runs,
                     leapfrog_steps=LEAPFROG)
    out["forward_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    rev = latent_ais(log_likelihood_of(x), n, z_dim, num_temperatures=temperatures, num_runs=runs,
                     leapfrog_steps=LEAPFROG, reverse=True, initial=z.expand(runs, n, z_dim).contiguous())
    out["reverse_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    is_ll, _ = log_likelihood_with_stderr(vae.model, vae.guide, x, num_particles=particles)
    out["is_seconds"] = time.perf_counter() - started
    for name, v in (("forward_ais", fwd.log_prob), ("reverse_ais", rev.log_prob), (f"is_k{particles}", is_ll.double())):
        out[name] = {"mean": float(v.mean()), "stderr_over_images": float(v.std() / math.sqrt(n))}
    gap = rev.log_prob - fwd.log_prob
    out["bdmc_gap"] = {"mean": float(gap.mean()), "max": float(gap.max())}
    d = fwd.log_prob - is_ll.double()
    out["forward_minus_is"] = {"mean": float(d.mean()), "paired_stderr": float(d.std() / math.sqrt(n))}
    out["acceptance"] = [float(fwd.acceptance.mean()), float(rev.acceptance.mean())]
    return out


def bdmc(args) -> dict:
    trained = trained_vae(args.run)
    z_dim, log_likelihood_of = trained.family.latent_decoder(trained.module)
    rows = {}
    for t in args.temperatures:
        r = bdmc_row(trained.module, z_dim, log_likelihood_of, args.images, t, args.runs, args.particles)
        rows[f"T{t}"] = r
        print(f"T={t}: forward {r['forward_ais']['mean']:.2f}, reverse {r['reverse_ais']['mean']:.2f} (gap "
              f"{r['bdmc_gap']['mean']:.2f}, max {r['bdmc_gap']['max']:.2f}), IS k={args.particles} "
              f"{r[f'is_k{args.particles}']['mean']:.2f}; forward - IS {r['forward_minus_is']['mean']:+.2f} ± "
              f"{r['forward_minus_is']['paired_stderr']:.2f}", flush=True)
    return {"images": args.images, "simulated": "z ~ N(0, I), x ~ Bernoulli(sigmoid(decoder(z))), torch seed 0",
            "units": "nats per binary image", "rows": rows}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/latent_ais/vae", help="a trained VAE run directory (trained if absent)")
    p.add_argument("--bdmc", action="store_true", help="bidirectional Monte Carlo on images simulated from the VAE")
    p.add_argument("--images", type=int, default=None, help="default: 100 test images; 50 simulated with --bdmc")
    p.add_argument("--temperatures", type=int, nargs="+", default=None,
                   help="default: 100 1000; 300 1000 with --bdmc")
    p.add_argument("--runs", type=int, default=AIS_RUNS, help="AIS runs per image")
    p.add_argument("--particles", type=int, default=IS_PARTICLES, help="importance samples per image")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the 2-core machine is shared)")
    p.add_argument("--out", default=None,
                   help="default: benchmarks/results/latent_ais_vae.json (latent_ais_vae_bdmc.json with --bdmc)")
    args = p.parse_args()
    args.images = args.images or (50 if args.bdmc else 100)
    args.temperatures = args.temperatures or ([300, 1000] if args.bdmc else [100, 1000])
    args.out = args.out or os.path.join(RESULTS, "latent_ais_vae_bdmc.json" if args.bdmc else "latent_ais_vae.json")
    torch.set_num_threads(args.threads)
    body = bdmc(args) if args.bdmc else compare(args)
    with open(os.path.join(args.run, "spec.json")) as f:
        model = json.load(f)["model"]
    result = {"benchmark": "latent_ais_vae_bdmc" if args.bdmc else "latent_ais_vae", "run": args.run,
              "model": model, **body,
              "ais_runs": args.runs, "leapfrog_steps": LEAPFROG, "is_particles": args.particles,
              "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
              "command": "python " + " ".join(shlex.quote(a) for a in sys.argv)}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
