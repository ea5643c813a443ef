"""Data-parallel scaling on this machine: 1 process x 2 threads against 2 processes x 1 thread, per family.

For every family of the catalogue, ``ppl-models train FAMILY`` runs three times
on the same data and settings: one process with one thread (the baseline), one
process with two threads (intra-op parallelism: what a single run gets from a
second core), and ``--nproc 2`` with one thread each (data parallelism over
``torch.distributed`` / gloo: the same global batch split in two, gradients
all-reduced every update). The time of the *last* epoch is read from the run's
``metrics.json`` (the driver's per-epoch ``seconds``: training only, the first
epoch's one-off costs excluded, evaluation excluded; the evaluation settings are
made small so that it does not dominate the wall time).

Reported per family: the three epoch times, ``speedup_threads`` = t(1x1) / t(1x2),
``speedup_processes`` = t(1x1) / t(2x1), their parallel efficiencies (speedup / 2)
and ``processes_vs_threads`` = t(1x2) / t(2x1) (> 1: data parallelism beats a
second thread). A family whose objective cannot run data-parallel (EM) records
the one-line refusal. On a machine shared with other jobs the times are noisy:
the JSON records the load average before and after.

Run: ``python benchmarks/scaling.py [--dataset digits] [--epochs 2] [--families vae,rbm]``
(writes ``benchmarks/results/scaling.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = {"1x1": (1, 1), "1x2": (1, 2), "2x1": (2, 1)}  # processes x threads each
#: evaluation made cheap (the benchmark times training epochs only)
SMALL_EVALUATION = {"train.eval_particles": 10, "train.ais_temperatures": 100, "train.sample_sweeps": 10}


def _overrides(family: str) -> list:
    from ppl_models import catalogue

    spec = catalogue.make_spec(family)
    out = []
    for key, value in SMALL_EVALUATION.items():
        if hasattr(spec.train, key.split(".")[1]):
            out += ["--set", f"{key}={value}"]
    return out


def run_one(family: str, processes: int, threads: int, dataset: str, epochs: int, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"scaling-{family}-") as out:
        cmd = [sys.executable, "-m", "ppl_models", "train", family, "--dataset", dataset, "--epochs", str(epochs),
               "--out", out, "--no-progress", "--nproc", str(processes), *_overrides(family)]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        started = time.perf_counter()
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:g}s"}
        wall = time.perf_counter() - started
        if done.returncode != 0:
            return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1], "wall_s": wall}
        with open(os.path.join(out, "metrics.json")) as f:
            history = json.load(f).get("history") or []
        seconds = [h["seconds"] for h in history if isinstance(h, dict) and "seconds" in h]
        return {"epoch_s": seconds[-1] if seconds else None, "epochs_s": seconds, "wall_s": wall}


def summarise(times: dict) -> dict:
    t = {k: v.get("epoch_s") for k, v in times.items()}
    out = {}
    if t.get("1x1") and t.get("1x2"):
        out["speedup_threads"] = t["1x1"] / t["1x2"]
        out["efficiency_threads"] = out["speedup_threads"] / 2
    if t.get("1x1") and t.get("2x1"):
        out["speedup_processes"] = t["1x1"] / t["2x1"]
        out["efficiency_processes"] = out["speedup_processes"] / 2
    if t.get("1x2") and t.get("2x1"):
        out["processes_vs_threads"] = t["1x2"] / t["2x1"]
    return out


def main():
    from ppl_models import catalogue

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run; the last one is timed")
    parser.add_argument("--families", default=",".join(catalogue.FAMILIES))
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "scaling.json"))
    args = parser.parse_args()
    families = [f for f in args.families.split(",") if f]
    unknown = [f for f in families if f not in catalogue.FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; the catalogue has {', '.join(catalogue.FAMILIES)}")
    result = {"benchmark": "data-parallel scaling, 1 process x 2 threads vs 2 processes x 1 thread (gloo)",
              "command": " ".join([os.path.relpath(__file__), *sys.argv[1:]]), "dataset": args.dataset,
              "epochs": args.epochs, "timed": "last epoch's training seconds (metrics.json history)",
              "torch": torch.__version__, "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "load_average_before": os.getloadavg(), "families": {}}
    for family in families:
        times = {}
        for name, (processes, threads) in CONFIGS.items():
            times[name] = run_one(family, processes, threads, args.dataset, args.epochs, args.timeout)
            print(f"{family:8s} {name}: {times[name]}", flush=True)
        result["families"][family] = {"runs": times, **summarise(times)}
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        result["load_average_after"] = os.getloadavg()
        with open(args.out, "w") as f:  # after every family: a long run killed midway keeps what it measured
            json.dump(result, f, indent=2)
    print(args.out)


if __name__ == "__main__":
    main()
