"""The shared training driver: exact resume, atomic checkpoints, early stopping, schedules, bad input."""

import os

import pytest
import torch

import inference.fileio as fileio
from inference.iwae_elbo import IWAEELBO
from inference.training import CHECKPOINT_FORMAT, PyroObjective, fit
from ppl_models.data import DynamicBinarization
from ppl_models.errors import CheckpointError, SpecError, TrainingDiverged
from ppl_models.vae import VAE, VAEArchitecture


def grey_data(n=120, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g)


def new_vae(seed):
    torch.manual_seed(seed)
    return VAE(VAEArchitecture(x_dim=16, z_dim=2, hidden=[8]))


def run(vae, epochs, ckpt, **kw):
    x = grey_data()
    valid = (torch.bernoulli(grey_data(30, seed=1), generator=torch.Generator().manual_seed(2)),)
    return fit(PyroObjective(IWAEELBO(3), vae.model, vae.guide), (x,), module=vae, epochs=epochs, batch_size=32, seed=7,
               valid=valid, transform=DynamicBinarization(), checkpoint_path=ckpt, progress=False,
               lr_schedule="exponential", lr_decay=0.9, **kw)


def assert_same_parameters(a, b):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


def test_resume_equals_uninterrupted_run(tmp_path):
    full = new_vae(0)
    history = run(full, 4, str(tmp_path / "full.pt")).history
    part = new_vae(0)
    run(part, 2, str(tmp_path / "part.pt"))
    resumed = new_vae(123)  # a different init: everything must come from the checkpoint
    result = run(resumed, 4, str(tmp_path / "part.pt"))
    assert result.resumed_from == 2
    assert_same_parameters(full, resumed)
    assert [h["train_loss"] for h in result.history] == [h["train_loss"] for h in history]


def test_run_killed_mid_epoch_resumes_exactly(tmp_path):
    full = new_vae(0)
    run(full, 3, str(tmp_path / "full.pt"))

    class Killer(IWAEELBO):
        calls = 0

        def loss_and_grads(self, *args, **kwargs):
            Killer.calls += 1
            if Killer.calls == 10:  # during epoch 3 (4 steps per epoch)
                raise KeyboardInterrupt
            return super().loss_and_grads(*args, **kwargs)

    killed = new_vae(0)
    ckpt = str(tmp_path / "k.pt")
    with pytest.raises(KeyboardInterrupt):
        fit(PyroObjective(Killer(3), killed.model, killed.guide), (grey_data(),), module=killed, epochs=3, batch_size=32, seed=7,
            valid=(torch.bernoulli(grey_data(30, seed=1), generator=torch.Generator().manual_seed(2)),),
            transform=DynamicBinarization(), checkpoint_path=ckpt, progress=False,
            lr_schedule="exponential", lr_decay=0.9)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2
    resumed = new_vae(5)
    run(resumed, 3, ckpt)
    assert_same_parameters(full, resumed)


def test_kill_during_checkpoint_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    ckpt = str(tmp_path / "c.pt")
    real_replace = os.replace
    writes = {"n": 0}

    def dying_replace(src, dst):
        writes["n"] += 1
        if writes["n"] == 3:  # the third epoch's checkpoint: die between write and rename
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        run(new_vae(0), 4, ckpt)
    monkeypatch.setattr(fileio.os, "replace", real_replace)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp")] == []  # no half-written leftovers
    resumed = new_vae(9)
    run(resumed, 4, ckpt)
    full = new_vae(0)
    run(full, 4, str(tmp_path / "full.pt"))
    assert_same_parameters(full, resumed)


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        run(new_vae(0), 2, str(ckpt))


class ScriptedObjective:
    """Gradient pushes one parameter up by lr each step; validation losses follow a script."""

    def __init__(self, toy, valid_losses):
        self.toy = toy
        self.valid_losses = list(valid_losses)

    def loss_and_grads(self, x):
        self.toy.w.grad = -torch.ones_like(self.toy.w)
        return float(x.shape[0])

    def loss(self, x):
        return self.valid_losses.pop(0) * x.shape[0]


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))


def test_early_stopping_restores_best_weights():
    toy = Toy()
    x = torch.zeros(10, 1)
    objective = ScriptedObjective(toy, [5.0, 3.0, 4.0, 4.5, 6.0, 1.0])
    result = fit(objective, (x,), module=toy, epochs=6, batch_size=10, valid=(x,),
                 patience=2, lr=0.1, progress=False)
    assert result.stopped_early and len(result.history) == 4
    assert result.best_epoch == 2
    assert [h["valid_loss"] for h in result.history] == [5.0, 3.0, 4.0, 4.5]
    w_after_2 = toy.w.item()
    toy2 = Toy()
    fit(ScriptedObjective(toy2, [1.0] * 2), (x,), module=toy2, epochs=2, batch_size=10,
        valid=(x,), lr=0.1, progress=False)
    assert w_after_2 == pytest.approx(toy2.w.item())  # the weights of epoch 2, not of epoch 4


def test_exponential_schedule_and_clipping_are_applied():
    toy = Toy()
    x = torch.zeros(10, 1)
    result = fit(ScriptedObjective(toy, []), (x,), module=toy, epochs=3, batch_size=10, lr=0.1,
                 lr_schedule="exponential", lr_decay=0.5, clip_norm=1e-3, progress=False)
    assert [h["lr"] for h in result.history] == pytest.approx([0.1, 0.05, 0.025])


def test_divergence_is_reported_and_keeps_last_checkpoint(tmp_path):
    class NaNAfter(ScriptedObjective):
        steps = 0

        def loss_and_grads(self, x):
            NaNAfter.steps += 1
            return float("nan") if NaNAfter.steps > 2 else super().loss_and_grads(x)

    toy = Toy()
    ckpt = str(tmp_path / "c.pt")
    with pytest.raises(TrainingDiverged, match="epoch 3"):
        fit(NaNAfter(toy, []), (torch.zeros(10, 1),), module=toy, epochs=5, batch_size=10,
            checkpoint_path=ckpt, progress=False)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2


@pytest.mark.parametrize("kwargs, match", [
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"lr": -1.0}, "lr must be a positive number"),
    ({"lr_schedule": "wavy"}, "unknown lr_schedule"),
    ({"device": "tpu"}, "unknown device"),
    ({"patience": 0}, "patience must be a positive integer"),
])
def test_bad_arguments(kwargs, match):
    toy = Toy()
    args = {"epochs": 1, "batch_size": 10, **kwargs}
    with pytest.raises(SpecError, match=match):
        fit(ScriptedObjective(toy, []), (torch.zeros(10, 1),), module=toy, progress=False, **args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_requested_without_cuda():
    toy = Toy()
    with pytest.raises(SpecError, match="CUDA is not available"):
        fit(ScriptedObjective(toy, []), (torch.zeros(10, 1),), module=toy, epochs=1,
            device="cuda", progress=False)


def test_checkpoint_of_another_format_or_other_settings_is_refused(tmp_path):
    ckpt = tmp_path / "c.pt"
    torch.save({"epoch": 1, "module": {}}, ckpt)  # a checkpoint of the driver before format 2
    with pytest.raises(CheckpointError, match="format .*delete it"):
        run(new_vae(0), 2, str(ckpt))
    ckpt.unlink()
    run(new_vae(0), 1, str(ckpt))
    assert torch.load(ckpt, weights_only=False)["format"] == CHECKPOINT_FORMAT
    with pytest.raises(CheckpointError, match="batch_size=32.*batch_size=16"):
        x = grey_data()
        vae = new_vae(0)
        fit(PyroObjective(IWAEELBO(3), vae.model, vae.guide), (x,), module=vae, epochs=2, batch_size=16, seed=7,
            transform=DynamicBinarization(), checkpoint_path=str(ckpt), progress=False,
            lr_schedule="exponential", lr_decay=0.9)


@pytest.mark.parametrize("schedule, expected", [
    # 10 rows, batch 5: 2 updates an epoch, 3 epochs; "lr" is that of each epoch's last update
    ("constant", [1.0, 1.0, 1.0]),
    ("linear", [1 - 0.9 * 1 / 5, 1 - 0.9 * 3 / 5, 0.1]),  # lr_final 0.1 at update 5 of 0..5
    ("exponential", [1.0, 0.5, 0.25]),
    ("cosine", [1.0, 0.75, 0.25]),  # (1 + cos(pi e / 3)) / 2 for e = 0, 1, 2
])
def test_schedules_per_update(schedule, expected):
    toy = Toy()
    result = fit(ScriptedObjective(toy, []), (torch.zeros(10, 1),), module=toy, epochs=3, batch_size=5, lr=1.0,
                 optimizer="sgd", lr_schedule=schedule, lr_final=0.1, lr_decay=0.5, progress=False)
    assert [h["lr"] for h in result.history] == pytest.approx(expected)


def test_sgd_momentum_and_weight_decay_only_on_named_parameters():
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.coupling = torch.nn.Parameter(torch.ones(1))
            self.bias = torch.nn.Parameter(torch.ones(1))

    class ZeroGradient:
        def __init__(self, module):
            self.module = module

        def loss_and_grads(self, x):
            for p in self.module.parameters():
                p.grad = torch.zeros_like(p)
            return 0.0

        def loss(self, x):
            return 0.0

    two = Two()
    fit(ZeroGradient(two), (torch.zeros(4, 1),), module=two, epochs=2, batch_size=2, optimizer="sgd", lr=0.1,
        momentum=0.5, weight_decay=0.1, decay=["coupling"], progress=False)
    # gradient 0.1 * w only on the coupling: b1 = 0.1, w = 0.99; b2 = 0.05 + 0.099, w -= 0.0149; ...
    w, b = 1.0, 0.0
    for _ in range(4):
        b = 0.5 * b + 0.1 * w
        w -= 0.1 * b
    assert two.coupling.item() == pytest.approx(w) and two.bias.item() == 1.0
    with pytest.raises(SpecError, match="decay names parameters"):
        fit(ZeroGradient(two), (torch.zeros(4, 1),), module=two, epochs=1, optimizer="sgd", weight_decay=0.1,
            decay=["weights"], progress=False)


def test_objective_state_and_end_of_epoch_hook_survive_a_resume(tmp_path):
    class Counting(ScriptedObjective):
        def __init__(self, toy):
            super().__init__(toy, [])
            self.updates, self.epochs_ended = 0, 0

        def loss_and_grads(self, x):
            self.updates += 1
            return super().loss_and_grads(x)

        def end_epoch(self):
            self.epochs_ended += 1

        def state_dict(self):
            return {"updates": self.updates, "epochs_ended": self.epochs_ended}

        def load_state_dict(self, state):
            self.updates, self.epochs_ended = state["updates"], state["epochs_ended"]

    ckpt = str(tmp_path / "c.pt")
    toy = Toy()
    fit(Counting(toy), (torch.zeros(10, 1),), module=toy, epochs=2, batch_size=5, checkpoint_path=ckpt, progress=False)
    resumed = Counting(Toy())
    fit(resumed, (torch.zeros(10, 1),), module=Toy(), epochs=3, batch_size=5, checkpoint_path=ckpt, progress=False)
    assert (resumed.updates, resumed.epochs_ended) == (6, 3)


def test_a_bare_pyro_elbo_is_refused_with_the_fix():
    vae = new_vae(0)
    with pytest.raises(SpecError, match="PyroObjective"):
        fit(IWAEELBO(3), (grey_data(),), module=vae, epochs=1, progress=False)


def test_foldable_sgd_momentum_is_sgd_without_decay_at_one_rate_and_momentum():
    from inference.optimizers import foldable_sgd_momentum, make_optimizer

    module = torch.nn.Linear(3, 2)
    assert foldable_sgd_momentum(make_optimizer(module, "sgd", lr=0.1)) == 0.0
    assert foldable_sgd_momentum(make_optimizer(module, "sgd", lr=0.1, weight_decay=0.0, decay=["weight"])) == 0.0
    assert foldable_sgd_momentum(make_optimizer(module, "sgd", lr=0.1, momentum=0.5)) == 0.5
    assert foldable_sgd_momentum(make_optimizer(module, "sgd", lr=0.1, weight_decay=0.01, decay=["weight"])) is None
    assert foldable_sgd_momentum(make_optimizer(module, "adam", lr=0.1)) is None
    assert foldable_sgd_momentum(torch.optim.SGD([{"params": [module.weight]}, {"params": [module.bias], "lr": 0.2}],
                                                 lr=0.1)) is None
    assert foldable_sgd_momentum(torch.optim.SGD([{"params": [module.weight]}, {"params": [module.bias], "momentum": 0.2}],
                                                 lr=0.1, momentum=0.5)) is None
    assert foldable_sgd_momentum(torch.optim.SGD(module.parameters(), lr=0.1, maximize=True)) is None
    assert foldable_sgd_momentum(torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.5, nesterov=True)) is None
    assert foldable_sgd_momentum(torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.5, dampening=0.1)) is None


@pytest.mark.parametrize("values, diverged", [
    ([1.0, float("nan")], True),
    ([float("inf"), 1.0], True),
    ([3e38, 3e38], False),  # finite values whose float32 sum overflows: the cheap check must look again
])
def test_end_of_epoch_check_of_the_parameters(values, diverged):
    class SetsParameters(ScriptedObjective):  # reports a finite loss whatever the parameters hold
        def loss_and_grads(self, x):
            self.toy.w.grad = None
            return 0.0

    toy = Toy()
    toy.w = torch.nn.Parameter(torch.tensor(values))
    run = lambda: fit(SetsParameters(toy, []), (torch.zeros(4, 1),), module=toy, epochs=1, batch_size=4,  # noqa: E731
                      optimizer="sgd", lr=0.1, progress=False)
    if diverged:
        with pytest.raises(TrainingDiverged, match="parameter w is not finite after epoch 1"):
            run()
    else:
        assert len(run().history) == 1
