"""The ``sbn`` family through the CLI: every objective trains and is scored, exactly where the net is small,
and its own bad inputs are one-line errors. (The shared checks, resume included, are in the conformance test.)"""

import json
import os

import pytest

from ppl_models.catalogue.sbn import OBJECTIVES
from tests.cli_util import run_cli

TINY = ["--dataset", "digits", "--epochs", "2", "--no-progress", "--set", "model.hidden=[6,3]", "--lr", "0.01"]


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_each_objective_trains_and_its_bound_sits_below_the_exact_likelihood(objective, capsys, tmp_path):
    out = str(tmp_path / objective)
    code, stdout, err = run_cli(capsys, "train", "sbn", *TINY, "--set", f"objective.name={objective}",
                                "--eval-particles", "2000", "--out", out)
    assert code == 0, err
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["objective"] == objective and metrics["num_particles"] == (5 if objective in ("vimco", "rws", "iwae") else 1)
    # 9 hidden bits: the exact NLL by enumeration; the importance-sampled NLL is an upper bound on it in
    # expectation and, at k = 2000 on 9 bits, within a fraction of a nat
    assert "exact" in stdout
    gap = metrics["test_nll"] - metrics["test_nll_exact"]
    assert gap == pytest.approx(metrics["importance_sampling_gap"])
    assert -0.05 < gap < 0.5, (objective, gap)


@pytest.mark.parametrize("argv, message", [
    (["--set", "objective.name=vimco", "--set", "objective.num_particles=1"], "vimco needs objective.num_particles >= 2"),
    (["--set", "objective.name=rws", "--set", "objective.num_particles=1"], "one sample per datapoint is wake_sleep"),
    (["--set", "objective.name=nvil", "--set", "objective.num_particles=5"], "nvil uses one sample per datapoint"),
    (["--set", "objective.name=reinforce"], "objective.name must be one of"),
    (["--set", "model.hidden=[]"], "model.hidden must list at least one hidden layer"),
    (["--set", "model.hidden=[4,0]"], "model.hidden"),
    (["--set", "objective.insomnia=2"], "objective.insomnia"),
    (["--set", "objective.baseline_decay=1.0"], "objective.baseline_decay"),
    (["--set", "data.binarize=none"], "the sbn family needs binary data"),
    (["--set", "model.x_dim=100"], "model.x_dim is 100 but data set digits has 64 pixels"),
])
def test_bad_sbn_options_are_one_line_errors(argv, message, capsys, tmp_path):
    out = str(tmp_path / "bad")
    code, _, err = run_cli(capsys, "train", "sbn", *TINY, *argv, "--out", out)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not os.path.exists(out)
