"""Trace replay (inference.trace_replay): the recorded program trains exactly as the Pyro route, and every
program it cannot replay faithfully (a value read into Python, an in-place update of a captured tensor, a change
of structure that shapes do not show) is put back on the Pyro route."""

import pyro
import pytest
import torch

from inference.iwae_elbo import IWAEELBO
from inference.multi_sample_elbo import MultiSampleELBO
from inference.nvil import NVIL, NVILBaseline
from inference.reweighted_wake_sleep import ReweightedWakeSleep, wake_sleep
from inference.trace_replay import TraceReplay
from inference.training import PyroObjective, fit
from inference.vimco import VIMCO
from ppl_models.vae import VAE, VAEArchitecture


@pytest.fixture(autouse=True)
def no_pyro_validation():
    with pyro.validation_enabled(False):  # as inside fit (validate=False); validation keeps the Pyro route
        yield


def binary_data(n=90, d=12, seed=0):
    return torch.bernoulli(torch.full((n, d), 0.3), generator=torch.Generator().manual_seed(seed))


def new_vae():
    torch.manual_seed(0)
    return VAE(VAEArchitecture(x_dim=12, z_dim=3, hidden=[7]))


def train(elbo, replay, epochs=3):
    vae = new_vae()
    objective = PyroObjective(elbo, vae.model, vae.guide, replay=replay)
    history = fit(objective, (binary_data(),), module=vae, epochs=epochs, batch_size=20, seed=3, progress=False).history
    return vae, objective, history, torch.get_rng_state()


@pytest.mark.parametrize("elbo", [lambda: IWAEELBO(1), lambda: IWAEELBO(4), lambda: MultiSampleELBO(3)],
                         ids=["elbo", "iwae-k4", "elbo-k3"])
def test_replay_trains_bit_for_bit_as_the_pyro_route(elbo):
    plain, _, plain_history, plain_rng = train(elbo(), replay=False)
    fast, objective, fast_history, fast_rng = train(elbo(), replay=True)
    # 90 images in batches of 20: two shapes (20 and the last 10), both replayed
    assert set(objective.replay_status.values()) == {"replayed"} and len(objective.replay_status) == 2
    assert [h["train_loss"] for h in fast_history] == [h["train_loss"] for h in plain_history]
    for (name, p), q in zip(plain.named_parameters(), fast.parameters()):
        assert torch.equal(p, q), name
    assert torch.equal(plain_rng, fast_rng)  # the same random stream consumed


def test_dreg_and_overridden_steps_are_not_replayed():
    vae = new_vae()
    assert not IWAEELBO(3, dreg=True).replayable

    class Logged(IWAEELBO):
        def loss_and_grads(self, *args, **kwargs):  # a side effect the recording would skip
            return super().loss_and_grads(*args, **kwargs)

    assert not Logged(3).replayable and IWAEELBO(3).replayable
    objective = PyroObjective(Logged(3), vae.model, vae.guide, replay=True)
    assert "Pyro route" in objective.replay_status["all"]


def params_with_grad(*tensors):
    return [t.requires_grad_() for t in tensors]


def test_a_value_read_into_python_stays_on_the_pyro_route():
    (w,) = params_with_grad(torch.ones(3))
    calls = []

    def loss(x):
        total = (w * x).sum()
        return total * 2 if total.item() > 0 else total  # data-dependent control flow

    def step(x):
        calls.append(1)
        value = loss(x)
        value.backward()
        return value.item()

    replay = TraceReplay(step, loss)
    for _ in range(4):
        replay(torch.ones(3))
    assert len(calls) == 4  # every call ran the Pyro route
    assert "cannot be recorded" in next(iter(replay.status.values()))


def test_an_in_place_update_of_a_captured_tensor_stays_on_the_pyro_route():
    bn = torch.nn.BatchNorm1d(3)  # training mode: forward updates the running mean in place
    loss = lambda x: bn(x).pow(2).sum()

    def step(x):
        value = loss(x)
        value.backward()
        return value.item()

    replay = TraceReplay(step, loss, buffers=lambda: list(bn.buffers()))
    x = torch.randn(5, 3)
    for _ in range(3):
        replay(x)
    assert "updates tensors in place" in next(iter(replay.status.values()))
    assert bn.num_batches_tracked.item() == 3  # the abandoned recording was undone: one update per step


def test_a_change_the_shapes_do_not_show_is_caught_and_falls_back():
    (w,) = params_with_grad(torch.ones(3))
    state = {"beta": 1.0}  # an annealed weight read as a Python float: baked into the recording
    loss = lambda x: state["beta"] * (w * x).pow(2).sum()

    def step(x):
        value = loss(x)
        value.backward()
        return value.item()

    replay = TraceReplay(step, loss, check_every=4)
    x = torch.ones(3)
    assert replay(x) == 3.0 and replay(x) == 3.0  # Pyro's own call, then the recorded one
    assert replay(x) == 3.0  # the first replay, checked against the Pyro route
    assert next(iter(replay.status.values())) == "replayed"
    state["beta"] = 0.5
    with pytest.warns(RuntimeWarning, match="no longer matches"):
        assert replay(x) == 1.5  # the periodic check: the Pyro route's value is the one returned
    assert "no longer matches" in next(iter(replay.status.values()))
    w.grad = None
    assert replay(x) == 1.5 and torch.equal(w.grad, torch.full((3,), 1.0))


def test_a_fresh_tensor_written_in_place_is_not_precomputed():
    # zeros() then add_(x): the zeros are each step's own state; folded into a constant, the replay would
    # keep adding into one buffer and drift from the second replay on
    (w,) = params_with_grad(torch.tensor([1.0, 2.0, 3.0]))
    loss = lambda x: (torch.zeros(3).add_(x) * w).sum()

    def step(x):
        value = loss(x)
        value.backward()
        return value.item()

    replay = TraceReplay(step, loss)
    for i in range(6):
        x = torch.full((3,), float(i))
        assert replay(x) == 6.0 * i
    assert next(iter(replay.status.values())) == "replayed"


def test_replayed_gradients_equal_the_hand_derived_ones():
    # loss = sum_n (w . x_n + b)^2 / 2: dL/dw = sum_n r_n x_n, dL/db = sum_n r_n with r_n = w . x_n + b
    w, b = params_with_grad(torch.tensor([0.5, -1.0]), torch.tensor(0.25))
    loss = lambda x: ((x @ w + b) ** 2 / 2).sum()

    def step(x):
        value = loss(x)
        value.backward()
        return value.item()

    replay = TraceReplay(step, loss)
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.0, 1.0]])
    for _ in range(3):
        w.grad = b.grad = None
        replay(x)
    r = x @ w.detach() + b.detach()
    assert next(iter(replay.status.values())) == "replayed"
    torch.testing.assert_close(w.grad, (r[:, None] * x).sum(0))
    torch.testing.assert_close(b.grad, r.sum())


def test_validation_and_no_grad_run_the_pyro_route():
    vae = new_vae()
    objective = PyroObjective(IWAEELBO(1), vae.model, vae.guide, replay=True)
    x = binary_data(20)
    with torch.no_grad():
        assert objective.loss_and_grads(x) > 0
    with pyro.validation_enabled(True):
        for _ in range(3):
            objective.loss_and_grads(x)
    assert objective.replay_status == {}  # nothing recorded while Pyro validates


SMALL = {"vae": ["--set", "model.hidden=[16]", "--set", "z_dim=2"], "iwae": ["--set", "model.hidden=[16]", "--set", "z_dim=2"],
         "sbn": ["--set", "model.hidden=[6,3]", "--lr", "0.01"]}


@pytest.mark.parametrize("family", sorted(SMALL))
def test_families_that_replay_by_default_train_as_the_pyro_route(family, tmp_path, capsys):
    """The families that offer objective.replay (on by default for vae and iwae): a run with it and one without
    end alike."""
    import json

    from ppl_models.cli import main

    histories = {}
    for replay in ("true", "false"):
        out = str(tmp_path / replay)
        assert main(["train", family, "--dataset", "digits", "--no-progress", "--seed", "3", "--epochs", "2",
                     *SMALL[family], "--eval-particles", "10",
                     "--set", f"objective.replay={replay}", "--out", out]) == 0
        with open(f"{out}/metrics.json") as f:
            metrics = json.load(f)
        histories[replay] = [(h["train_loss"], h.get("valid_loss")) for h in metrics["history"]]
        ran_on = set(metrics["replay"].values())
        assert ran_on == ({"replayed"} if replay == "true" else {metrics["replay"]["all"]}), metrics["replay"]
    capsys.readouterr()
    assert histories["true"] == histories["false"]


def train_sbn_both_ways(make_elbo):
    """A 12-5-3 SBN trained 3 epochs by ``make_elbo(sbn)`` through the Pyro route and replayed, from the same
    start and seed. Returns the replayed run's objective and what differs between the runs: the route that ran,
    the losses, each parameter and buffer (bit for bit), the random stream, last_terms (empty when none)."""
    from inference.training import with_auxiliary
    from ppl_models.sbn import SBNArchitecture, SigmoidBeliefNet

    def train(replay):
        torch.manual_seed(0)
        sbn = SigmoidBeliefNet(SBNArchitecture(x_dim=12, hidden=[5, 3]))
        objective = PyroObjective(make_elbo(sbn), sbn.model, sbn.guide, replay=replay)
        module = with_auxiliary(sbn, objective)
        history = fit(objective, (binary_data(),), module=module, epochs=3, batch_size=20, seed=3,
                      progress=False).history
        return module, objective, history, torch.get_rng_state()

    plain, plain_objective, plain_history, plain_rng = train(False)
    fast, objective, fast_history, fast_rng = train(True)
    differences = [f"replay status {objective.replay_status}"] if set(objective.replay_status.values()) != {"replayed"} else []
    if [h["train_loss"] for h in fast_history] != [h["train_loss"] for h in plain_history]:
        differences.append("losses")
    differences += [name for (name, p), q in zip(plain.state_dict().items(), fast.state_dict().values())
                    if not torch.equal(p, q)]  # parameters and buffers (NVIL's running statistics)
    if not torch.equal(plain_rng, fast_rng):
        differences.append("random stream")
    if getattr(objective.elbo, "last_terms", {}) != getattr(plain_objective.elbo, "last_terms", {}):
        differences.append("last_terms")
    return objective, differences


@pytest.mark.parametrize("local", [True, False], ids=["local-signals", "global-signal"])
def test_nvil_with_its_running_statistics_trains_bit_for_bit_as_the_pyro_route(local):
    """NVIL's step also updates its baseline's running mean and variance in place: the replay records that
    update as part of the step and repeats it once per step, as the Pyro route does."""
    objective, differences = train_sbn_both_ways(lambda sbn: NVIL(NVILBaseline(12, 2 if local else 1, hidden=6),
                                                     chain=sbn.chain if local else None))
    assert differences == []
    assert objective.elbo.last_terms["signal_var"] > 0
    # the guide's samples are drawn under no_grad, and the replay keeps them so: its backward is the Pyro
    # route's, with no path that carries a zero gradient back through the draws (and their matrix products)
    x = binary_data()[:20]
    graph = next(iter(objective._replay._graphs.values()))
    sbn = objective.model.__self__
    pyro_route = objective.elbo.replay_step(sbn.model, sbn.guide, x)[0]
    assert backward_ops(graph(x)[0]) == backward_ops(pyro_route)


def backward_ops(loss) -> dict:
    """How many nodes of each kind, views aside, autograd's graph of ``loss`` holds."""
    import collections

    counts, seen, stack = collections.Counter(), set(), [loss.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        counts[type(fn).__name__] += 1
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    views = ("View", "Expand", "Select", "Reshape", "Alias")  # shape-only nodes: the simplified replay has fewer
    return {k: v for k, v in counts.items() if not k.startswith(views)}


@pytest.mark.parametrize("make_elbo", [
    lambda sbn: VIMCO(num_particles=4, max_plate_nesting=1),
    lambda sbn: ReweightedWakeSleep(num_particles=4, insomnia=1.0, max_plate_nesting=1),
    lambda sbn: ReweightedWakeSleep(num_particles=3, insomnia=0.5, max_plate_nesting=1),
    lambda sbn: wake_sleep(max_plate_nesting=1),
], ids=["vimco-k4", "rws-k4", "rws-k3-insomnia0.5", "wake-sleep"])
def test_sbn_estimators_train_bit_for_bit_as_the_pyro_route(make_elbo):
    """VIMCO (an IWAE surrogate with leave-one-out signals) and (reweighted) wake-sleep, whose sleep phase dreams
    from the model under no_grad and scores the dream under the guide, replay as they run through Pyro."""
    objective, differences = train_sbn_both_ways(make_elbo)
    assert differences == []
