"""``ppl-models``: list the catalogue, print a family's spec, train, evaluate, sample, query, check.

Every failure a user can cause ends with one line on stderr (``ppl-models:
error: ...``) and exit status 2, argument errors included; an interrupted
training run says how to resume (run the same command again) and exits 130;
a ``check`` whose re-run is out of tolerance exits 3; anything else is a bug:
one line saying so and asking for a report, exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from inference import distributed

from . import catalogue, launch
from .errors import PPLModelsError, SpecError
from .specs import describe


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints the usage and then the error, two lines and more; ours prints the error alone."""

    def error(self, message: str):
        self.exit(2, f"ppl-models: error: {message} (see `{self.prog} --help`)\n")


#: the largest count a flag takes (particles, temperatures, sweeps, samples): a tensor dimension PyTorch
#: indexes with 32 bits, and far beyond any run that finishes (a mistyped 10**20 particles otherwise runs
#: its chunks for ever instead of being refused)
MAX_COUNT = 2**31 - 1


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    if value > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_COUNT} (2**31 - 1), got {text!r}")
    return value


def seed(text: str) -> int:
    """A seed every generator takes (NumPy's: 0 .. 2**32 - 1)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {2**32 - 1}, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {2**32 - 1}, got {text!r}")
    return value


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="family name (see `ppl-models list`), or a model file (.yaml, .yml or .json; "
                   "write one with `ppl-models spec NAME > my.yaml`)")
    p.add_argument("--out", default=None, help="run directory (default runs/NAME, or runs/STEM for a model file "
                   "STEM.yaml); an existing one is resumed")
    p.add_argument("--spec", default=None, help="model file (YAML for .yaml / .yml, else JSON) to start from, with "
                   "MODEL a family name")
    p.add_argument("--dataset", help="data set: mnist5k, mnist, fashion-mnist, digits (data.dataset)")
    p.add_argument("--data-path", help="directory of IDX files for mnist / fashion-mnist (data.path)")
    p.add_argument("--epochs", type=int, help="passes over the training split (train.epochs)")
    p.add_argument("--batch-size", type=int, help="minibatch size (train.batch_size)")
    p.add_argument("--lr", type=number, help="learning rate (train.lr)")
    p.add_argument("--seed", type=seed, help="random seed of the weights, shuffling and sampling (train.seed)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (train.device)")
    p.add_argument("--eval-particles", type=int, help="importance samples per test image, or AIS runs "
                   "(train.eval_particles)")
    p.add_argument("--objective", help="training objective (objective.name), e.g. generative for dcim, em for mixture")
    p.add_argument("--arch", help="architecture (model.arch), e.g. dense or cnn for dcim")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any spec field, e.g. --set model.z_dim=2 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they are off anyway when "
                   "stderr is not a terminal)")
    p.add_argument("--nproc", type=positive_int, default=1, help="data-parallel processes on this machine "
                   "(gloo on CPU, NCCL on GPUs; across machines use torchrun --nproc-per-node N -m ppl_models train)")
    p.add_argument("--backend", default="auto", choices=("auto", "gloo", "nccl"), help="torch.distributed "
                   "backend of a data-parallel run (auto: nccl on GPUs, else gloo)")


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


def _log(message: str) -> None:
    if distributed.is_main():  # one voice in a data-parallel run
        print(message, flush=True)


def cmd_list(args) -> None:
    print(f"{'model':8s} {'kind':9s} summary")
    for f in catalogue.FAMILIES.values():
        print(f"{f.name:8s} {f.kind:9s} {f.summary}")


def _model_file(args):
    """The model file a command names (MODEL as a path, or --spec), or None; MODEL as a family name or None."""
    model_files = catalogue.model_files
    if args.model in catalogue.FAMILIES:
        name = args.model
    elif model_files.is_model_file_path(args.model):
        if getattr(args, "spec", None) is not None:
            raise SpecError(f"model file {args.model} given as MODEL and --spec {args.spec} given too; give one")
        return None, model_files.read(args.model)
    elif os.path.isfile(args.model):
        raise SpecError(f"{args.model} is not a model file: a model file's name ends in "
                        f"{', '.join(model_files.EXTENSIONS)} (or give a family name: {', '.join(catalogue.FAMILIES)})")
    else:
        name = catalogue.family(args.model).name  # unknown: one line naming the catalogue
    spec_file = getattr(args, "spec", None)
    return name, (model_files.read(spec_file) if spec_file is not None else None)


def cmd_spec(args) -> None:
    name, source = _model_file(args)
    spec = catalogue.make_spec(name, source)
    if args.describe:
        print("\n".join(describe(spec)))
    elif args.json:
        print(catalogue.model_files.to_json(spec))
    else:
        sys.stdout.write(catalogue.model_files.to_yaml(spec))
    sys.stdout.flush()  # a closed pipe (`| head`) is met here, inside main, not at exit


def cmd_train(args):
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:  # the launcher: N ranks of this same command
        return launch.run_ranks(args.nproc, args.argv)
    name, source = _model_file(args)
    spec = catalogue.make_spec(name, source, _overrides(args))
    stem = source.stem if source is not None and name is None else spec.family
    out = args.out or os.path.join("runs", stem)
    _join_ranks(args, spec.train.device)
    metrics = catalogue.train(spec, out, progress=not args.no_progress, log=_log, source=source)
    if metrics is None:  # a rank other than 0: rank 0 reports
        return None
    print(catalogue.summary(metrics, out))
    print(f"samples: {os.path.join(out, 'samples.png')}   curve: {os.path.join(out, 'training_curve.png')}")


def _join_ranks(args, device) -> None:
    """Join the process group when started as a rank (torchrun, or --nproc's children)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if getattr(args, "nproc", 1) > 1 and world > 1 and args.nproc != world:
        raise SpecError(f"--nproc {args.nproc} given to a run started with {world} processes (WORLD_SIZE); give one")
    distributed.init_from_env(getattr(args, "backend", "auto"), device)


def cmd_evaluate(args) -> None:
    _join_ranks(args, None)
    options = {} if args.temperatures is None else {"temperatures": args.temperatures}
    with distributed.sharing():  # under torchrun: AIS runs / importance samples split across the ranks
        metrics = catalogue.evaluate(args.directory, num_particles=args.particles, progress=not args.no_progress,
                                     output=args.output, seed=args.seed, log=_log, **options)
    if distributed.is_main():
        print(catalogue.summary(metrics, args.directory))


def cmd_sample(args) -> None:
    out = args.output or os.path.join(args.directory, "samples.png")
    options = {} if args.label is None else {"class": args.label}
    if args.mode is not None:
        options["mode"] = args.mode
    if args.sweeps is not None:
        options["sweeps"] = args.sweeps
    print(catalogue.sample(args.directory, args.n, out, seed=args.seed, progress=not args.no_progress, **options))


#: query flags -> the query option they set (given only when the flag is)
QUERY_OPTIONS = {"samples": "num_samples", "particles": "num_particles", "estimator": "estimator", "mask": "mask",
                 "mask_seed": "mask_seed", "fill": "fill", "sweeps": "sweeps", "draws": "draws", "thin": "thin",
                 "temperatures": "temperatures"}


def cmd_query(args) -> None:
    options = {option: getattr(args, flag) for flag, option in QUERY_OPTIONS.items() if getattr(args, flag) is not None}
    answer = catalogue.query(args.directory, args.kind, split=args.split, index=args.index, files=args.input or (),
                             binarize=args.binarize, seed=args.seed, device=args.device, output=args.output,
                             png=args.png, netcdf=args.netcdf, **options)
    if args.output is None:
        print(answer.to_json())
    else:
        print(args.output)
    sys.stdout.flush()


#: exit status of `ppl-models check` when a check is out of tolerance (2 is bad input, 1 a bug)
CHECK_FAILED = 3


def cmd_check(args) -> int:
    from .catalogue.check import check, measure_reduced
    from .catalogue.references import records_of

    if args.measure:  # the reduced fields of each record, measured again, to paste into its YAML
        if args.full:
            raise SpecError("--measure measures the reduced protocol; it takes no --full")
        for record in records_of(args.model, args.record):
            if record.reduced is None:
                print(f"# {record.name}: no reduced protocol ({record.reduced_not_by_check})")
                continue
            fields = measure_reduced(record)
            print(f"# {record.name}\n" + "\n".join(f"{k}: {json.dumps(v)}" for k, v in fields.items()), flush=True)
        return 0
    verdicts = check(args.model, record=args.record, full=args.full, log=_log)
    failed = [v.record.name for v in verdicts if v.ok is False]
    skipped = sum(v.ok is None for v in verdicts)
    print(f"{len(verdicts) - len(failed) - skipped} of {len(verdicts)} {'full' if args.full else 'reduced'} checks ok"
          + (f", {skipped} not re-run" if skipped else "")
          + (f"; out of tolerance: {', '.join(failed)}" if failed else ""), flush=True)
    return CHECK_FAILED if failed else 0


def _add_check_parser(sub) -> None:
    c = sub.add_parser("check", help="re-run a family's reference answers (its README figures, kept in "
                       "ppl_models/references) at reduced size, or --full, and say how far today's code is from them")
    c.add_argument("model", help="family name (see `ppl-models list`)")
    size = c.add_mutually_exclusive_group()
    size.add_argument("--reduced", action="store_true", help="the reduced protocol of each record, against its own "
                      "measured value and tolerance (the default)")
    size.add_argument("--full", action="store_true", help="the figure's own protocol, against the README value "
                      "(fails beyond 3 standard errors; minutes to hours)")
    c.add_argument("--record", default=None, help="only this record (default: every record of the family)")
    c.add_argument("--measure", action="store_true", help="measure the reduced protocol again with training seeds "
                   "0, 1, 2 and print the record's reduced value and tolerance (after an intended change)")
    c.set_defaults(func=cmd_check)


#: --estimator's choices per family and query (tests/test_cli.py checks them against each family's own)
ESTIMATOR_HELP = (
    "per family: log_prob: auto|exact|ais (rbm, gbrbm, fvbm); auto|exact|bound|ais (dbm); auto|exact|bound (dbn); "
    "auto|exact|importance|latent_ais (vae, iwae, dcim, mixture, sbn, nade, fvsbn; latent_ais needs one Gaussian "
    "latent and a decoder: vae, iwae); posterior: mean_field|gibbs (dbm); auto|exact|guide|importance_resampling "
    "(every other family that answers posterior); any other value is refused naming the family's own")


def _add_query_parser(sub) -> None:
    q = sub.add_parser("query", help="ask a trained model a question: sample, log_prob, posterior, complete or "
                       "classify; JSON with each answer's estimator and uncertainty")
    q.add_argument("directory")
    q.add_argument("kind", help="sample | log_prob | posterior | complete | classify (a family refuses those it "
                   "cannot answer, naming the ones it can)")
    q.add_argument("--split", default=None, help="inputs: images of this split of the model's data: train, valid or "
                   "test (default test)")
    q.add_argument("--index", default=None, help="which images of the split: START:STOP, N or N,M,... (default 0:16)")
    q.add_argument("--input", nargs="+", default=None, metavar="FILE", help="inputs: .npy arrays ((N, D), (N, H, W), "
                   "(D,) or (H, W), values in [0, 1]) or PNG images of the model's size")
    q.add_argument("--binarize", action="store_true", help="threshold grey input files at data.threshold for a "
                   "binary model")
    q.add_argument("-n", "--samples", type=positive_int, default=None, help="sample: images drawn; posterior: draws "
                   "per input; complete: completions per input; classify: forward samples")
    q.add_argument("--particles", type=positive_int, default=None, help="importance samples per input (directed "
                   "log_prob, posterior, complete) or AIS runs (energy log_prob)")
    q.add_argument("--estimator", default=None, help=ESTIMATOR_HELP)
    q.add_argument("--mask", default=None, help="complete: the OBSERVED pixels: top, bottom, left, right (that half), "
                   "random:F (a fraction F, --mask-seed), or a .npy / .png file (nonzero = observed); default top")
    q.add_argument("--mask-seed", type=seed, default=None, help="seed of a random mask (default 0)")
    q.add_argument("--fill", default=None, help="directed complete: what the guide sees in a missing pixel: mean "
                   "(the training split's pixel mean, default) or a number in [0, 1]")
    q.add_argument("--sweeps", type=positive_int, default=None, help="energy sample / complete: warm-up Gibbs sweeps "
                   "(default train.sample_sweeps)")
    q.add_argument("--draws", type=positive_int, default=None, help="energy sample / complete: draws kept per chain "
                   "for R-hat and ESS (default 100)")
    q.add_argument("--thin", type=positive_int, default=None, help="energy: Gibbs sweeps between kept draws (default 1)")
    q.add_argument("--temperatures", type=positive_int, default=None, help="energy log_prob: AIS temperatures (runs "
                   "AIS again; default: the run's stored estimate); vae log_prob --estimator latent_ais: its "
                   "temperatures (default 500)")
    q.add_argument("--seed", type=seed, default=0, help="seed of every draw (default 0)")
    q.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default train.device)")
    q.add_argument("-o", "--output", default=None, help="write the JSON answer to this file instead of stdout")
    q.add_argument("--png", default=None, help="sample / complete: write the picture (.png, .jpg, .pdf, .svg)")
    q.add_argument("--netcdf", default=None, help="sample / posterior / complete: write the draws as ArviZ "
                   "InferenceData (.nc)")
    q.set_defaults(func=cmd_query)


def parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="ppl-models", description="Deep generative models in Pyro.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    sub.add_parser("list", help="the catalogue").set_defaults(func=cmd_list)
    s = sub.add_parser("spec", help="print a family's default spec as a commented YAML model file "
                       "(`ppl-models spec sbn > my.yaml`), or a model file's full spec")
    s.add_argument("model", help="family name, or a model file (.yaml, .yml, .json): its spec with the defaults "
                   "filled in")
    s.add_argument("--json", action="store_true", help="print the spec as JSON instead of YAML")
    s.add_argument("--describe", action="store_true", help="one line per key with its default and meaning")
    s.set_defaults(func=cmd_spec)
    t = sub.add_parser("train", help="train a model into a run directory (resumes a killed run)")
    _add_train_flags(t)
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("evaluate", help="score a trained model on its test split (never needs write access to it)")
    e.add_argument("directory")
    e.add_argument("--particles", type=positive_int, default=None,
                   help="importance samples per image, or AIS runs (default: the spec's train.eval_particles)")
    e.add_argument("--temperatures", type=positive_int, default=None,
                   help="AIS temperatures of energy models (default: the spec's train.ais_temperatures)")
    e.add_argument("--seed", type=seed, default=None, help="seed of the estimator (default: the spec's train.seed)")
    e.add_argument("-o", "--output", default=None, help="write the evaluation as JSON to this file instead of the "
                   "run's metrics.json (which is updated only when the run directory is writable)")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_evaluate)
    m = sub.add_parser("sample", help="write a grid of samples as an image (PNG, JPEG, PDF or SVG by extension)")
    m.add_argument("directory")
    m.add_argument("-n", type=positive_int, default=64, help="number of samples (default 64)")
    m.add_argument("-o", "--output", default=None, help="image file (default DIR/samples.png)")
    m.add_argument("--seed", type=seed, default=0, help="random seed of the samples")
    m.add_argument("--class", dest="label", type=int, default=None, help="class-conditional samples of class C (dcim)")
    m.add_argument("--mode", default=None, help="what to draw, per family: dcim both|ancestral|top|mean; "
                   "rbm/gbrbm samples|completion (top half of test images clamped, bottom half by Gibbs)")
    m.add_argument("--sweeps", type=positive_int, default=None, help="Gibbs sweeps per picture (rbm, gbrbm)")
    m.add_argument("--no-progress", action="store_true", help="no progress bars")
    m.set_defaults(func=cmd_sample)
    _add_query_parser(sub)
    _add_check_parser(sub)
    return p


def main(argv=None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad argument (2, its one line already printed)
        return e.code
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what --nproc's ranks are started with
    try:
        code = args.func(args)
    except PPLModelsError as e:
        if distributed.should_report(e):  # in a data-parallel run, one line for what every rank meets
            print(f"ppl-models: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if distributed.is_main():
            print("ppl-models: interrupted; run the same command again to resume from the last finished epoch",
                  file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`ppl-models spec sbn | head`): nothing to report
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # the file system said no: read-only, full, missing, a file where a directory should be
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"ppl-models: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 (anything else is our bug: one line, and how to report it)
        message = " ".join(str(e).split())[:300]
        print(f"ppl-models: internal error ({type(e).__name__}: {message}); this is a bug, please report it with "
              "the command that caused it", file=sys.stderr)
        return 1
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
