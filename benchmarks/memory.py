"""Peak resident memory of each family's README run, and of training on full Fashion-MNIST.

Each run is ``ppl-models train FAMILY --dataset D --epochs E`` in a child process with the family's
default settings (the README runs' architecture, batch and evaluation), training then evaluating
then drawing its sample grid, exactly as a user runs it. The peak resident set size is the child's
own ``ru_maxrss`` from ``os.wait4`` (kernel accounting, no sampling). Training one epoch instead of
the README's many does not change the peak: every buffer of a training step and of the evaluation
is allocated in the first epoch and the evaluation; only time grows with epochs (checked below on
the VAE: 1 and 3 epochs peak alike). Writes ``benchmarks/results/memory.json``.

Run: ``python benchmarks/memory.py [--families vae rbm] [--fashion vae rbm]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FAMILIES = ["vae", "iwae", "dcim", "rbm", "gbrbm", "dbm", "fvbm", "dbn", "mixture", "sbn", "nade", "fvsbn",
            "gan", "gmmn", "dae"]


def peak_rss(args: list, threads: int) -> dict:
    """Run ``ppl-models ARGS`` to completion; its peak RSS in MiB, wall seconds and exit status."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "ppl_models", *args, "--no-progress"]
    started = time.perf_counter()
    with open(os.devnull, "w") as quiet:
        child = subprocess.Popen(cmd, env=env, stdout=quiet, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        err = child.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    out = {"command": "ppl-models " + " ".join(args), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
           "seconds": round(time.perf_counter() - started, 1), "exit": code}
    if code:
        out["error"] = err.strip().splitlines()[-1] if err.strip() else "?"
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="*", default=FAMILIES)
    p.add_argument("--fashion", nargs="*", default=["vae", "rbm"], help="families also trained on full Fashion-MNIST")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(HERE, "results", "memory.json"))
    args = p.parse_args()
    scratch = tempfile.mkdtemp(prefix="ppl-memory-")
    rows = []
    try:
        plan = [(f, "mnist5k", args.epochs) for f in args.families] + [(f, "fashion-mnist", args.epochs)
                                                                       for f in args.fashion]
        if "vae" in args.families:
            plan.append(("vae", "mnist5k", 3))  # the epochs-do-not-matter check
        for family, dataset, epochs in plan:
            run = os.path.join(scratch, f"{family}-{dataset}-{epochs}")
            row = {"family": family, "dataset": dataset, "epochs": epochs,
                   **peak_rss(["train", family, "--dataset", dataset, "--epochs", str(epochs), "--out", run],
                              args.threads)}
            shutil.rmtree(run, ignore_errors=True)
            rows.append(row)
            print(f"{family:8s} {dataset:14s} {epochs} epoch(s): {row['peak_rss_mib']:8.1f} MiB  "
                  f"{row['seconds']:7.1f} s{'  FAILED: ' + row['error'] if row['exit'] else ''}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = {"benchmark": "memory", "what": "peak resident memory of `ppl-models train FAMILY` (train, evaluate, "
              "sample grid) with the family's default settings", "threads": args.threads,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
              "rows": rows}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print("->", args.out)


if __name__ == "__main__":
    main()
