"""Data-parallel training and parallel estimators with 2 gloo processes on this machine.

Each check runs the same code once with a process group of 2 ranks (spawned
processes, one thread each) and once in this process (no process group), and
compares. "The same random draws": SVI uses a Delta guide (its ELBO gradient
has no randomness) and CD replaces the uniform draws of the Gibbs sampler by
0.5 (the chains become deterministic), so that one process and two must agree
parameter for parameter up to the order of floating-point sums; AIS, the
importance-sampled NLL and MCMC run each rank's share of the runs, particles
or chains from the rank's stream (``distributed.distinct_stream``), which this
process replays share by share.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import socket
import traceback

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import distributed
from inference.ais import ais_log_partition
from inference.contrastive_divergence import ContrastiveDivergence
from inference.log_likelihood import log_likelihood, log_likelihood_with_stderr
from inference.mcmc_driver import chain_diagnostics, run_mcmc
from inference.training import PyroObjective, fit

WORLD = 2
JOIN_TIMEOUT_S = 300  # generous: a loaded 2-core machine runs this job in a minute, an idle one in seconds


# -- small models --------------------------------------------------------------------------------
class TinyLatent(torch.nn.Module):
    """z ~ N(0, I_2), x ~ N(W z + b, I); guide a Delta at an affine map of x (``delta=True``) or a Normal."""

    def __init__(self, delta: bool = True):
        super().__init__()
        self.delta = delta
        self.decoder = torch.nn.Linear(2, 5)
        self.encoder = torch.nn.Linear(5, 2)
        self.log_scale = torch.nn.Parameter(torch.zeros(2))

    def model(self, x):
        pyro.module("tiny", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 1.0).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("tiny", self)
        with pyro.plate("data", x.shape[0]):
            if self.delta:
                pyro.sample("z", dist.Delta(self.encoder(x), event_dim=1))
            else:
                pyro.sample("z", dist.Normal(self.encoder(x), self.log_scale.exp()).to_event(1))


def _data(n=21, d=5, binary=False):
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, d, generator=g)
    return (x > 0.3).float() if binary else x


def _rbm():
    from ppl_models.rbm import RBM

    torch.manual_seed(7)
    rbm = RBM(6, 4, weight_scale=0.5)
    with torch.no_grad():
        rbm.visible_bias.normal_(0, 0.3)
        rbm.hidden_bias.normal_(0, 0.3)
    return rbm


def _deterministic_draws(monkeypatch=None):
    """Uniforms of 0.5: ``bernoulli_draw(p)`` becomes ``p > 0.5`` (Gibbs without randomness)."""
    def fake(t, **kw):
        return torch.full_like(t, 0.5)

    if monkeypatch is not None:
        monkeypatch.setattr(torch, "rand_like", fake)
    else:
        torch.rand_like = fake


def train_svi(epochs=3, batch_size=8, checkpoint_path=None, delta=True, n=21, die_at=None):
    torch.manual_seed(0)
    module = TinyLatent(delta=delta)
    objective = PyroObjective(pyro.infer.Trace_ELBO(), module.model, module.guide)
    if die_at is not None:  # rank 1 dies at this (epoch, step): os._exit, no cleanup, like a killed process
        inner, calls = objective.loss_and_grads, [0]

        def dying(*batch):
            calls[0] += 1
            if distributed.rank() == 1 and calls[0] == die_at:
                os._exit(17)
            return inner(*batch)

        objective.loss_and_grads = dying
    result = fit(objective, (_data(n),), module=module, epochs=epochs, batch_size=batch_size, lr=0.05,
                 seed=3, progress=False, checkpoint_path=checkpoint_path)
    return {k: v.clone() for k, v in module.state_dict().items()}, result.history


def train_cd(persistent, epochs=3, batch_size=8, n=21, checkpoint_path=None):
    rbm = _rbm()
    cd = ContrastiveDivergence(rbm, k=2, persistent=persistent)
    result = fit(cd, (_data(n, 6, binary=True),), module=rbm, epochs=epochs, batch_size=batch_size, optimizer="sgd",
                 lr=0.1, momentum=0.5, seed=3, progress=False, checkpoint_path=checkpoint_path)
    return {k: v.clone() for k, v in rbm.state_dict().items()}, result.history


def run_ais():
    rbm = _rbm()
    torch.manual_seed(11)
    with distributed.sharing():
        return ais_log_partition(rbm, num_runs=9, num_temperatures=60, groups=2)


def run_is_nll():
    torch.manual_seed(0)
    module = TinyLatent(delta=False)
    torch.manual_seed(5)
    with distributed.sharing():
        return log_likelihood_with_stderr(module.model, module.guide, _data(7), num_particles=7, batch_size=4,
                                          particle_chunk=2)


def run_gibbs():
    from inference.block_gibbs import BlockGibbs

    rbm = _rbm()
    torch.manual_seed(13)
    with distributed.sharing():
        result = run_mcmc(BlockGibbs(rbm, num_chains=3, k=1), num_samples=20, warmup_steps=5,
                          disable_progbar=True, warn=False)
    return {"v": result.samples["v"], "r_hat": result.r_hat, "ess": result.ess,
            "chains": int(result.inference_data.posterior.sizes["chain"])}


# -- the spawned ranks ----------------------------------------------------------------------------
def _job_all(out):
    """Everything the default tests need, in one spawn (starting two Python processes costs seconds)."""
    results = {"svi": train_svi()[0], "ais": run_ais(), "is_nll": run_is_nll(), "gibbs": run_gibbs(),
               "svi_checkpointed": _job_svi_checkpointed(out)}
    _deterministic_draws()
    results["pcd_checkpointed"] = train_cd(persistent=True, epochs=2, n=24, checkpoint_path=os.path.join(out, "cd.pt"))
    results["cd"] = train_cd(persistent=False)[0]
    results["pcd"] = train_cd(persistent=True, n=24)[0]
    ContrastiveDivergence.gradient_combination = "sum"  # a wrong rule, to show that the check can fail
    results["cd_summed"] = train_cd(persistent=False)[0]
    return results


def _job_svi_checkpointed(out, epochs=4, die_at=None):
    return train_svi(epochs=epochs, checkpoint_path=os.path.join(out, "ckpt.pt"), delta=False, die_at=die_at)


def _job_killed(out):
    return _job_svi_checkpointed(out, epochs=4, die_at=7)  # 3 steps an epoch: rank 1 dies in epoch 3


JOBS = {"all": _job_all, "svi_checkpointed": _job_svi_checkpointed, "killed": _job_killed}


def _rank_main(rank, world, port, job, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), PPL_MODELS_DIST_TIMEOUT="15")
    torch.set_num_threads(1)
    try:
        distributed.init_from_env("gloo")
        result = {"ok": JOBS[job](out)}
    except Exception as e:  # noqa: BLE001 (reported to the test)
        result = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    if torch.distributed.is_initialized() and "error" not in result:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(job, out, world=WORLD):
    """Run ``job`` on ``world`` spawned ranks; each rank's result (or error) and its exit code."""
    ctx = multiprocessing.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, job, str(out))) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(JOIN_TIMEOUT_S)
    for p in procs:
        if p.is_alive():
            p.kill()
            pytest.fail(f"rank {procs.index(p)} of job {job} still running after {JOIN_TIMEOUT_S}s (hung)")
    results = []
    for r, p in enumerate(procs):
        path = os.path.join(out, f"rank{r}.pt")
        results.append((torch.load(path, weights_only=False) if os.path.exists(path) else None, p.exitcode))
    return results


def _ok(results):
    for r, (res, code) in enumerate(results):
        assert res is not None and "ok" in res, f"rank {r} failed (exit {code}): {res and res.get('trace')}"
    return [res["ok"] for res, _ in results]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """The results of job ``all`` on 2 ranks, and its directory (with its checkpoints)."""
    out = tmp_path_factory.mktemp("ranks")
    return _ok(spawn("all", out)), out


@pytest.fixture(scope="module")
def equivalence(ranks):
    return ranks[0]


def _assert_same_parameters(a, b, atol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=1e-5), (k, (a[k] - b[k]).abs().max())


# -- the checks ---------------------------------------------------------------------------------------
def test_data_parallel_svi_equals_one_process_with_the_global_batch(equivalence):
    one = train_svi()[0]
    for rank_result in equivalence:  # every rank ends with the same parameters, one process's
        _assert_same_parameters(rank_result["svi"], one)
    assert not torch.equal(one["decoder.weight"], _fresh_decoder()), "training did not move the parameters"


def _fresh_decoder():
    torch.manual_seed(0)
    return TinyLatent().decoder.weight.detach()


@pytest.mark.parametrize("persistent", [False, True])
def test_data_parallel_cd_combines_statistics_as_one_process(equivalence, monkeypatch, persistent):
    _deterministic_draws(monkeypatch)
    one = train_cd(persistent=persistent, n=24 if persistent else 21)[0]
    for rank_result in equivalence:
        _assert_same_parameters(rank_result["pcd" if persistent else "cd"], one)


def test_summing_the_ranks_mean_statistics_is_caught(equivalence, monkeypatch):
    """The check above can fail: two ranks that sum their mean CD gradients (instead of weighting them by
    n_r / B) take twice one process's steps, and end elsewhere."""
    _deterministic_draws(monkeypatch)
    one = train_cd(persistent=False)[0]
    assert max(float((equivalence[0]["cd_summed"][k] - one[k]).abs().max()) for k in one) > 1e-3


class _as_rank:
    """Pretend to be rank ``r`` (for :func:`distributed.distinct_stream`) without a process group."""

    def __init__(self, r):
        self.r = r

    def __enter__(self):
        self.saved = distributed.rank, distributed.sharing_work
        distributed.rank, distributed.sharing_work = (lambda: self.r), (lambda: True)

    def __exit__(self, *exc):
        distributed.rank, distributed.sharing_work = self.saved


def _in_rank_stream(r, seed):
    torch.manual_seed(seed)
    with _as_rank(r), distributed.distinct_stream():
        pass


def test_distributed_ais_is_the_single_process_estimator_over_the_gathered_runs(equivalence):
    sizes, rbm = distributed.shard_sizes(9, WORLD), _rbm()
    log_w = []
    for r in range(WORLD):
        _in_rank_stream(r, 11)
        log_w.append(ais_log_partition(rbm, num_runs=sizes[r], num_temperatures=60).log_weights)
    log_w = torch.cat(log_w)
    expected_log_z = float(torch.logsumexp(log_w, 0) - math.log(9))
    for rank_result in equivalence:
        ais = rank_result["ais"]
        assert torch.allclose(ais.log_weights, log_w, atol=1e-9)
        assert ais.log_z - ais.log_z_base == pytest.approx(expected_log_z, abs=1e-9)
        halves = [float(torch.logsumexp(h, 0) - math.log(h.numel())) + ais.log_z_base for h in log_w.split([5, 4])]
        assert ais.group_log_z == pytest.approx(halves, abs=1e-9)
    assert equivalence[0]["ais"].log_z == equivalence[1]["ais"].log_z


def test_distributed_ais_draws_differ_between_ranks(equivalence):
    log_w = equivalence[0]["ais"].log_weights
    assert not torch.allclose(log_w[:4], log_w[5:9]), "the ranks drew the same runs"


def test_distributed_is_nll_is_the_single_process_estimator_over_the_gathered_particles(equivalence):
    torch.manual_seed(0)
    module = TinyLatent(delta=False)
    x, sizes = _data(7), distributed.shard_sizes(7, WORLD)
    per_rank = []
    for r in range(WORLD):
        _in_rank_stream(r, 5)
        per_rank.append(log_likelihood(module.model, module.guide, x, num_particles=sizes[r], batch_size=4,
                                       particle_chunk=2) + math.log(sizes[r]))
    expected = torch.logsumexp(torch.stack(per_rank), 0) - math.log(7)
    for rank_result in equivalence:
        estimate, stderr = rank_result["is_nll"]
        assert torch.allclose(estimate, expected, atol=1e-5)
        assert bool(torch.isfinite(stderr).all())


def test_distributed_gibbs_gathers_every_ranks_chains_into_one_diagnosis(equivalence):
    from inference.block_gibbs import BlockGibbs

    draws, rbm = [], _rbm()
    for r in range(WORLD):
        torch.manual_seed(13)
        with _as_rank(r):  # run_mcmc itself enters the rank's stream: replay with the rank pretended
            result = run_mcmc(BlockGibbs(rbm, num_chains=3, k=1), num_samples=20, warmup_steps=5,
                              disable_progbar=True, warn=False)
        draws.append(result.samples["v"])
    v = torch.cat(draws)
    for rank_result in equivalence:
        gibbs = rank_result["gibbs"]
        assert gibbs["chains"] == 6 and gibbs["v"].shape[0] == 6
        assert torch.equal(gibbs["v"], v)
        r_hat, _ = chain_diagnostics(v)
        assert gibbs["r_hat"]["visible_units"] == pytest.approx(r_hat)


# -- faults and resumes ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def uninterrupted(ranks):
    """A 4-epoch SVI run (Normal guide: the ranks' draws differ) on 2 ranks, and its checkpoint's directory."""
    return [r["svi_checkpointed"] for r in ranks[0]], ranks[1]


@pytest.mark.slow
def test_a_killed_rank_stops_the_others_and_the_resumed_run_ends_where_an_uninterrupted_one_ends(tmp_path,
                                                                                                     uninterrupted):
    (killed0, _), (killed1, code1) = spawn("killed", tmp_path)
    assert code1 == 17 and killed1 is None  # rank 1 died without a word
    error = killed0["error"]  # rank 0 did not hang: one line, naming what happened and what to do
    assert error.startswith("DistributedError: rank 0 of 2: gradient all-reduce failed") and "\n" not in error
    assert "run the same command again to resume" in error
    assert torch.load(tmp_path / "ckpt.pt", weights_only=False)["epoch"] == 2
    resumed = _ok(spawn("svi_checkpointed", tmp_path))
    reference = uninterrupted[0]
    for rank_result, ref in zip(resumed, reference):
        for k in ref[0]:
            assert torch.equal(rank_result[0][k], ref[0][k]), k  # bit for bit: every rank's streams resumed
        assert [h["train_loss"] for h in rank_result[1]] == [h["train_loss"] for h in ref[1]]


def test_a_checkpoint_of_two_processes_resumes_in_one(uninterrupted, tmp_path):
    import shutil

    shutil.copy(uninterrupted[1] / "ckpt.pt", tmp_path / "ckpt.pt")
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert ckpt["world_size"] == 2 and len(ckpt["ranks"]) == 2 and ckpt["epoch"] == 4
    lines = []
    params, history = train_svi_logged(6, tmp_path / "ckpt.pt", lines.append)
    assert len(history) == 6 and history[:4] == uninterrupted[0][0][1]
    assert any("written by 2 processes and this run has 1" in line for line in lines)
    assert all(bool(torch.isfinite(p).all()) for p in params.values())
    assert "world_size" not in torch.load(tmp_path / "ckpt.pt", weights_only=False)  # a one-process checkpoint now


def train_svi_logged(epochs, path, log):
    torch.manual_seed(0)
    module = TinyLatent(delta=False)
    result = fit(PyroObjective(pyro.infer.Trace_ELBO(), module.model, module.guide), (_data(21),), module=module,
                 epochs=epochs, batch_size=8, lr=0.05, seed=3, progress=False, checkpoint_path=str(path), log=log)
    return {k: v.clone() for k, v in module.state_dict().items()}, result.history


def test_persistent_chains_of_two_processes_are_pooled_when_resumed_in_one(tmp_path, monkeypatch, ranks):
    import shutil

    two = [r["pcd_checkpointed"] for r in ranks[0]]
    shutil.copy(ranks[1] / "cd.pt", tmp_path / "cd.pt")
    ckpt = torch.load(tmp_path / "cd.pt", weights_only=False)
    chains = [r["objective"]["chains"]["v"] for r in ckpt["ranks"]]
    assert [c.shape[0] for c in chains] == [4, 4]  # each rank: its piece of the batch of 8
    _deterministic_draws(monkeypatch)
    _, history = train_cd(persistent=True, epochs=3, n=24, checkpoint_path=str(tmp_path / "cd.pt"))
    assert history[:2] == two[0][1]
    resumed = torch.load(tmp_path / "cd.pt", weights_only=False)
    assert resumed["objective"]["chains"]["v"].shape[0] == 8  # the global number of chains is kept


def test_objective_state_that_cannot_be_split_is_refused_with_the_reason():
    from inference import data_parallel
    from ppl_models.errors import CheckpointError

    ckpt = {"world_size": 2, "epoch": 1, "ranks": [{"rng": None, "objective": {"s": 1}}] * 2}

    class Stateful:
        def state_dict(self):
            return {}

    with pytest.raises(CheckpointError, match="written by 2 processes and holds each one's Stateful state, which "
                                              "cannot be split among 1; resume it with 2 processes"):
        data_parallel.rank_state(ckpt, Stateful(), 0, "cpu", "ckpt.pt")


def test_world_size_that_does_not_divide_the_batch_is_one_line(monkeypatch):
    from inference import data_parallel
    from ppl_models.errors import SpecError

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(SpecError, match=r"^batch size 7 is not divisible by the world size 2 \(processes\)"):
        data_parallel.check(object(), 7)
    cd = ContrastiveDivergence(_rbm(), num_chains=5)
    with pytest.raises(SpecError, match="num_chains 5 is not divisible by the world size 2"):
        cd._kernel(8)

    class EM:
        def end_epoch(self):
            pass

    with pytest.raises(SpecError, match="updates the parameters in end_epoch"):
        data_parallel.check(EM(), 8)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without GPUs")
def test_nccl_without_gpus_is_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(distributed.DistributedError, match="^backend nccl needs CUDA GPUs and this machine has none"):
        distributed.init_from_env("nccl")
    assert not torch.distributed.is_initialized()


def test_one_process_is_untouched_by_the_machinery():
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    assert distributed.rank_seed(123, 0) == 123 and distributed.rank_seed(123, 1) != distributed.rank_seed(123, 2)
    x = torch.arange(5.0)
    assert torch.equal(distributed.all_gather_rows(x), x) and distributed.broadcast_object("a") == "a"
    assert [len(distributed.shard(torch.arange(5), 2, r)) for r in range(2)] == [3, 2]


# -- the command line -------------------------------------------------------------------------------------
def _cli(*argv, env=None):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "ppl_models", *argv], capture_output=True, text=True, timeout=600, check=False,
                          env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))


@pytest.mark.slow
def test_cli_nproc_trains_resumes_and_refuses_bad_world_sizes_in_one_line(tmp_path):
    base = ["train", "rbm", "--dataset", "digits", "--set", "train.ais_temperatures=100", "--set",
            "train.sample_sweeps=5", "--eval-particles", "10", "--no-progress", "--nproc", "2"]
    out = str(tmp_path / "run")
    first = _cli(*base, "--epochs", "1", "--out", out)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("training rbm") == 1 and "test log-likelihood" in first.stdout  # rank 0 speaks alone
    ckpt = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=False)
    with open(os.path.join(out, "spec.json")) as f:
        chains = json.load(f)["objective"]["num_chains"] or 20  # the global number (null: the batch size)
    assert ckpt["world_size"] == 2 and [r["objective"]["chains"]["v"].shape[0] for r in ckpt["ranks"]] == [chains // 2] * 2
    again = _cli(*base, "--epochs", "2", "--out", out)
    assert again.returncode == 0 and "resuming from the checkpoint of epoch 1" in again.stdout, again.stderr
    odd = _cli(*base, "--epochs", "1", "--batch-size", "7", "--out", str(tmp_path / "odd"))
    assert odd.returncode == 2 and odd.stderr.strip().splitlines() == [(
        "ppl-models: error: batch size 7 is not divisible by the world size 2 (processes); use a batch size that is "
        "a multiple of 2, or a number of processes that divides 7")]
    assert not os.path.exists(tmp_path / "odd")  # nothing written
    if not torch.cuda.is_available():
        nccl = _cli(*base, "--epochs", "1", "--backend", "nccl", "--out", str(tmp_path / "nccl"))
        assert nccl.returncode == 2 and len(nccl.stderr.strip().splitlines()) == 1
        assert "backend nccl needs CUDA GPUs and this machine has none" in nccl.stderr


def test_the_launcher_starts_ranks_without_its_own_flag():
    from ppl_models.launch import without_nproc

    assert without_nproc(["train", "vae", "--nproc", "2", "--epochs", "1"]) == ["train", "vae", "--epochs", "1"]
    assert without_nproc(["train", "vae", "--nproc=4"]) == ["train", "vae"]
