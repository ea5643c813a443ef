"""``ppl-models``: list the catalogue, print a family's spec, train, evaluate, sample.

Every user error ends with one line on stderr (``ppl-models: error: ...``) and
exit status 2; an interrupted training run says how to resume (run the same
command again) and exits 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import catalogue
from .errors import PPLModelsError


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="family name (see `ppl-models list`)")
    p.add_argument("--out", default=None, help="run directory (default runs/MODEL)")
    p.add_argument("--spec", default=None, help="JSON spec file to start from")
    p.add_argument("--dataset", help="data set: mnist5k, mnist, fashion-mnist, digits")
    p.add_argument("--data-path", help="directory of IDX files for mnist / fashion-mnist")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--eval-particles", type=int, help="importance samples per test image (default 5000)")
    p.add_argument("--objective", help="training objective (objective.name), e.g. generative for dcim")
    p.add_argument("--arch", help="architecture (model.arch), e.g. dense or cnn for dcim")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any spec field, e.g. --set model.z_dim=2 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


FLAG_KEYS = {"dataset": "data.dataset", "data_path": "data.path", "epochs": "train.epochs",
             "batch_size": "train.batch_size", "lr": "train.lr", "seed": "train.seed", "device": "train.device",
             "eval_particles": "train.eval_particles", "objective": "objective.name", "arch": "model.arch"}


def _overrides(args) -> list[str]:
    out = []
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            out.append(f"{key}={json.dumps(value)}")
    return out + args.set


def cmd_list(args) -> None:
    print(f"{'model':8s} {'kind':9s} summary")
    for f in catalogue.FAMILIES.values():
        print(f"{f.name:8s} {f.kind:9s} {f.summary}")


def cmd_spec(args) -> None:
    if args.describe:
        print("\n".join(catalogue.spec_keys(args.model)))
    else:
        print(json.dumps(catalogue.default_spec(args.model), indent=2))


def cmd_train(args) -> None:
    spec = catalogue.make_spec(args.model, args.spec, _overrides(args))
    out = args.out or os.path.join("runs", spec.family)
    metrics = catalogue.train(spec, out, progress=not args.no_progress)
    _print_eval(metrics)
    print(f"samples: {os.path.join(out, 'samples.png')}   curve: {os.path.join(out, 'training_curve.png')}")


def _print_eval(m: dict) -> None:
    print(catalogue.summary(m))


def cmd_evaluate(args) -> None:
    _print_eval(catalogue.evaluate(args.directory, num_particles=args.particles, progress=not args.no_progress))


def cmd_sample(args) -> None:
    out = args.output or os.path.join(args.directory, "samples.png")
    options = {} if args.label is None else {"class": args.label}
    if args.mode is not None:
        options["mode"] = args.mode
    print(catalogue.sample(args.directory, args.n, out, seed=args.seed, **options))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ppl-models", description="Deep generative models in Pyro.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the catalogue").set_defaults(func=cmd_list)
    s = sub.add_parser("spec", help="print a family's default spec (JSON)")
    s.add_argument("model")
    s.add_argument("--describe", action="store_true", help="one line per key with its meaning")
    s.set_defaults(func=cmd_spec)
    t = sub.add_parser("train", help="train a model into a run directory (resumes a killed run)")
    _add_train_flags(t)
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("evaluate", help="test NLL of a trained model")
    e.add_argument("directory")
    e.add_argument("--particles", type=int, default=None, help="importance samples per image")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=cmd_evaluate)
    m = sub.add_parser("sample", help="write a PNG grid of samples")
    m.add_argument("directory")
    m.add_argument("-n", type=int, default=64)
    m.add_argument("-o", "--output", default=None)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--class", dest="label", type=int, default=None, help="class-conditional samples of class C (dcim)")
    m.add_argument("--mode", default=None, help="what to draw, per family: dcim both|ancestral|top|mean; "
                   "rbm/gbrbm samples|completion (top half of test images clamped, bottom half by Gibbs)")
    m.set_defaults(func=cmd_sample)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except PPLModelsError as e:
        print(f"ppl-models: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ppl-models: interrupted; run the same command again to resume from the last finished epoch",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
