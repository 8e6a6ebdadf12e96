"""Tests for coursekit.train: History, fit's sampling/logging/guards/budget, bit-identical resume, and the same loop
with several players (fit_players): order of updates, named random streams in checkpoints, learning-rate schedule."""

import math
import time

import pytest
import torch
from torch import nn

from coursekit.train import History, Player, TrainingDiverged, fit, fit_players, frozen

# ----------------------------------------------------------------------------------------------------
# History
# ----------------------------------------------------------------------------------------------------


def test_history_log_and_read():
    h = History()
    h.log(10, loss=1.5, kl=torch.tensor(0.25))
    h.log(20, loss=1.0)
    h.log(30, loss=0.5, rec=2)
    assert h.steps == [10, 20, 30] and len(h) == 3
    assert h["loss"] == [1.5, 1.0, 0.5]
    assert h["kl"][0] == 0.25 and math.isnan(h["kl"][1]) and math.isnan(h["kl"][2])
    assert math.isnan(h["rec"][0]) and h["rec"][2] == 2.0 and isinstance(h["rec"][2], float)
    assert h.keys() == ["loss", "kl", "rec"] and "kl" in h and "acc" not in h
    assert h.last("kl") == 0.25
    with pytest.raises(KeyError, match="loss"):
        h["acc"]


@pytest.mark.parametrize(
    "step, scalars, exc",
    [
        (30, {"loss": 1.0}, ValueError),             # not after the previous step
        (5, {"loss": 1.0}, ValueError),
        (40, {}, ValueError),                        # nothing to log
        (40, {"loss": torch.ones(3)}, ValueError),   # not a scalar
        (40, {"loss": "low"}, TypeError),
        (40.0, {"loss": 1.0}, TypeError),
    ],
)
def test_history_rejects_bad_logs(step, scalars, exc):
    h = History()
    h.log(30, loss=2.0)
    with pytest.raises(exc):
        h.log(step, **scalars)


def test_history_state_dict_roundtrip_weights_only(tmp_path):
    h = History()
    h.log(1, loss=3.0)
    h.log(2, loss=2.0, kl=0.5)
    path = tmp_path / "h.pt"
    torch.save(h.state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert type(state["steps"]) is list and all(type(v) is float for v in state["values"]["loss"])
    h2 = History()
    h2.load_state_dict(state)
    assert h2.steps == [1, 2] and h2["loss"] == [3.0, 2.0] and h2["kl"][1] == 0.5 and math.isnan(h2["kl"][0])
    with pytest.raises(ValueError):
        h2.load_state_dict({"steps": [1, 2], "values": {"loss": [1.0]}})


# ----------------------------------------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------------------------------------


def _regression(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    return x, y


def _mse(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def _linear(seed=0):
    torch.manual_seed(seed)
    model = nn.Linear(3, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_fit_learns_linear_regression():
    x, y = _regression()
    model, opt = _linear()
    h = fit(model, opt, _mse, (x, y), steps=200, batch_size=16, log_every=20, progress=False)
    assert h.steps == list(range(20, 201, 20))
    assert h["loss"][-1] < 1e-3 * h["loss"][0]
    assert torch.allclose(model.weight, torch.tensor([[1.0, -2.0, 0.5]]), atol=1e-2)
    assert all(g >= 0 for g in h["grad_norm"])
    assert h.stop_reason == "steps"


def test_fit_is_deterministic_given_the_seed():
    x, y = _regression()
    runs = []
    for seed in (0, 0, 1):
        model, opt = _linear()
        h = fit(model, opt, _mse, (x, y), steps=30, batch_size=8, seed=seed, log_every=5, progress=False)
        runs.append((model.weight.detach().clone(), h["loss"]))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert not torch.equal(runs[0][0], runs[2][0])  # another seed: another minibatch order


def test_fit_minibatches_are_per_epoch_permutations():
    n, bs = 10, 3
    data = torch.arange(n, dtype=torch.float32)[:, None]  # each example is its own index
    seen = []
    w = nn.Parameter(torch.zeros(1))

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = w

    def loss_fn(model, batch):
        assert isinstance(batch, torch.Tensor) and batch.shape == (bs, 1)  # a single tensor stays one
        seen.append(batch[:, 0].long().tolist())
        return (model.w * batch).sum()

    model = M()
    fit(model, torch.optim.SGD([w], lr=0.0), loss_fn, data, steps=9, batch_size=bs, progress=False)
    per_epoch = n // bs  # the incomplete last batch of each epoch is dropped
    epochs = [[k for batch in seen[i:i + per_epoch] for k in batch] for i in range(0, len(seen), per_epoch)]
    assert len(epochs) == 3
    for ep in epochs:
        assert len(ep) == len(set(ep)) == 9  # without replacement within an epoch
    assert epochs[0] != epochs[1]  # a fresh permutation each epoch


def test_fit_logs_window_means_and_metrics():
    counter = {"k": 0}
    w = nn.Parameter(torch.zeros(()))

    def loss_fn(model, batch):
        counter["k"] += 1
        loss = w * 0 + float(counter["k"])  # the loss of step k is k
        return loss, {"double": 2 * loss.detach(), "const": 7}

    model = nn.Module()
    model.w = w
    h = fit(model, torch.optim.SGD([w], lr=0.1), loss_fn, torch.zeros(5, 1), steps=10, batch_size=1,
            log_every=3, progress=False)
    assert h.steps == [3, 6, 9, 10]
    assert h["loss"] == [2.0, 5.0, 8.0, 10.0]  # means of (1,2,3), (4,5,6), (7,8,9), (10)
    assert h["double"] == [4.0, 10.0, 16.0, 20.0] and h["const"] == [7.0] * 4


def test_fit_calls_callback_and_restores_mode():
    x, y = _regression()
    model, opt = _linear()
    model.eval()
    modes, steps = [], []

    def loss_fn(m, batch):
        modes.append(m.training)
        return _mse(m, batch)

    fit(model, opt, loss_fn, (x, y), steps=5, batch_size=8, progress=False,
        callback=lambda step, m, h: steps.append(step))
    assert steps == [1, 2, 3, 4, 5] and all(modes) and not model.training


def _nan_on_call(bad_call):
    """A squared-error loss that returns NaN on its ``bad_call``-th call (1-based) and the true loss otherwise;
    ``loss_fn.calls["k"]`` counts its calls."""
    calls = {"k": 0}

    def loss_fn(m, batch):
        calls["k"] += 1
        loss = _mse(m, batch)
        return loss * float("nan") if calls["k"] == bad_call else loss

    loss_fn.calls = calls
    return loss_fn


def test_fit_nan_loss_raises_training_diverged():
    x, y = _regression()
    model, opt = _linear()
    with pytest.raises(TrainingDiverged, match="step 4") as err:
        fit(model, opt, _nan_on_call(4), (x, y), steps=10, batch_size=8, progress=False)
    assert err.value.step == 4 and err.value.quantity == "loss" and math.isnan(err.value.value)
    assert "learning rate" in str(err.value) and "lr=0.1" in str(err.value)
    assert isinstance(err.value, RuntimeError)


def test_fit_exploding_lr_raises_training_diverged():
    x, y = _regression()
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1e4)
    with pytest.raises(TrainingDiverged, match="lr=10000"):
        fit(model, opt, _mse, (x * 1e3, y), steps=200, batch_size=8, progress=False)


def test_fit_infinite_gradient_raises_training_diverged():
    w = nn.Parameter(torch.ones(2))
    model = nn.Module()
    model.w = w

    def loss_fn(m, batch):
        return torch.sqrt(m.w - m.w.detach()).sum()  # value 0, gradient 1 / (2 sqrt(0)) = inf

    with pytest.raises(TrainingDiverged, match="gradient norm") as err:
        fit(model, torch.optim.SGD([w], lr=0.1), loss_fn, torch.zeros(4, 1), steps=3, batch_size=2, progress=False)
    assert err.value.step == 1 and err.value.quantity == "gradient norm"
    assert torch.equal(w.detach(), torch.ones(2))  # the optimizer did not step on the bad gradient


@pytest.mark.parametrize("check_every", [2, 5, 7])
def test_deferred_reads_log_the_same_history(check_every):
    """Reading the values every check_every steps instead of every step changes nothing that is recorded."""
    x, y = _regression()
    runs = []
    for every in (1, check_every):
        model, opt = _linear()
        h = fit(model, opt, lambda m, b: (_mse(m, b), {"w0": m.weight[0, 0], "k": 3}), (x, y), steps=23,
                batch_size=8, log_every=4, progress=False, check_every=every)
        runs.append((h.state_dict(), model.weight.detach().clone()))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("bad_step, check_every", [(4, 5), (5, 5), (6, 5), (3, 10), (1, 3)])
def test_deferred_nan_stops_within_check_every_steps(bad_step, check_every):
    """With check_every = k the first NaN loss, at step s, stops training by step ceil(s / k) k (or at the end) with
    a message naming step s; at most k - 1 further steps run."""
    x, y = _regression()
    model, opt = _linear()
    steps, loss_fn = 12, _nan_on_call(bad_step)
    with pytest.raises(TrainingDiverged, match=f"at step {bad_step} of {steps}") as err:
        fit(model, opt, loss_fn, (x, y), steps=steps, batch_size=8, log_every=100, progress=False,
            check_every=check_every)
    noticed = min(math.ceil(bad_step / check_every) * check_every, steps)
    assert loss_fn.calls["k"] == noticed and loss_fn.calls["k"] - bad_step <= check_every - 1
    assert err.value.step == bad_step and err.value.quantity == "loss" and math.isnan(err.value.value)
    assert f"noticed after step {noticed}" in str(err.value) and "lr=0.1" in str(err.value)


def test_deferred_reads_check_every_update_of_a_player():
    """A NaN in an update that is not logged (the first of a player's two updates per step) is still caught."""
    players, gens, _ = _two_players()
    reg = players[0]
    count = {"k": 0}

    def reg_loss(batch):
        count["k"] += 1
        loss = _mse(reg.module, batch)
        return loss * math.inf if count["k"] == 3 else loss  # step 2, first of its two updates

    bad = Player("reg", reg.module, reg.optimizer, reg_loss, updates=2, loss_key="loss_reg")
    with pytest.raises(TrainingDiverged, match="the reg loss is inf at step 2 of 6") as err:
        fit_players([bad, players[1]], _regression(), steps=6, batch_size=8, generators=gens, progress=False,
                    check_every=3)
    assert err.value.step == 2 and "noticed after step 3" in str(err.value)


def test_check_every_is_validated_and_defaults_to_every_step_on_the_cpu():
    x, y = _regression()
    model, opt = _linear()
    for bad in (0, -1, 1.5):
        with pytest.raises((ValueError, TypeError), match="check_every"):
            fit(model, opt, _mse, (x, y), steps=1, batch_size=8, progress=False, check_every=bad)
    w = nn.Parameter(torch.ones(2))
    module = nn.Module()
    module.w = w
    with pytest.raises(TrainingDiverged, match="gradient norm") as err:  # CPU data: checked before the step
        fit(module, torch.optim.SGD([w], lr=0.1), lambda m, b: torch.sqrt(m.w - m.w.detach()).sum(),
            torch.zeros(4, 1), steps=3, batch_size=2, log_every=2, progress=False)
    assert "noticed" not in str(err.value) and torch.equal(w.detach(), torch.ones(2))


@pytest.mark.parametrize("make, during", [
    (lambda ps: torch.optim.Adam(ps, lr=0.05), {"fused": True, "foreach": None}),
    (lambda ps: torch.optim.AdamW(ps, lr=0.05), {"fused": True, "foreach": None}),
    (lambda ps: torch.optim.Adam(ps, lr=0.05, foreach=False), {"fused": None, "foreach": False}),
    (lambda ps: torch.optim.Adam(ps, lr=0.05, foreach=True), {"fused": None, "foreach": True}),
    (lambda ps: torch.optim.RMSprop(ps, lr=0.01), {"foreach": True}),
    (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, foreach=False), {"foreach": False}),
], ids=["adam", "adamw", "adam-foreach-false", "adam-foreach-true", "rmsprop", "sgd-foreach-false"])
def test_fit_runs_a_faster_implementation_of_the_same_update_unless_told_otherwise(make, during):
    """An optimiser at torch's defaults runs the fused (Adam, AdamW) or multi-tensor (others) implementation during
    fit and gets its settings back after; an explicit setting is kept; the update is the per-tensor one to rounding."""
    x, y = _regression()
    model, _ = _linear()
    opt = make(model.parameters())
    before = {k: opt.param_groups[0].get(k) for k in during}
    seen = []
    fit(model, opt, _mse, (x, y), steps=20, batch_size=8, progress=False,
        callback=lambda step, m, h: seen.append({k: opt.param_groups[0].get(k) for k in during}))
    assert seen == [during] * 20 and {k: opt.param_groups[0].get(k) for k in during} == before
    ref, _ = _linear()
    ref_opt = make(ref.parameters())
    for group in ref_opt.param_groups:
        group.update({k: False if k == "foreach" else None for k in during if k in group})
    fit(ref, ref_opt, _mse, (x, y), steps=20, batch_size=8, progress=False)
    assert torch.allclose(model.weight, ref.weight, rtol=1e-5, atol=1e-6)


def test_fit_wall_clock_budget():
    x, y = _regression()
    model, opt = _linear()

    def slow_loss(m, batch):
        time.sleep(0.01)
        return _mse(m, batch)

    start = time.perf_counter()
    h = fit(model, opt, slow_loss, (x, y), steps=10_000, batch_size=8, max_seconds=0.15, log_every=1000,
            progress=False)
    assert time.perf_counter() - start < 2.0
    assert h.stop_reason == "max_seconds"
    assert 1 <= h.steps[-1] < 100 and len(h) == 1  # the partial window is logged at the last step


def test_fit_grad_clip_limits_the_update():
    w = nn.Parameter(torch.zeros(1))
    model = nn.Module()
    model.w = w
    loss_fn = lambda m, batch: (1000.0 * m.w).sum()
    fit(model, torch.optim.SGD([w], lr=1.0), loss_fn, torch.zeros(2, 1), steps=1, batch_size=1,
        grad_clip=1.0, progress=False)
    assert torch.allclose(w.detach(), torch.tensor([-1.0]))


def test_fit_shows_progress_bar(capsys):
    x, y = _regression()
    model, opt = _linear()
    fit(model, opt, _mse, (x, y), steps=3, batch_size=8, log_every=1, desc="demo-bar")
    err = capsys.readouterr().err
    assert "demo-bar" in err and "3/3" in err and "loss=" in err
    fit(model, opt, _mse, (x, y), steps=3, batch_size=8, desc="quiet-bar", progress=False)
    assert "quiet-bar" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"steps": 0, "batch_size": 8}, ValueError, "steps"),
        ({"steps": -3, "batch_size": 8}, ValueError, "steps"),
        ({"steps": 5, "batch_size": 100}, ValueError, "batch_size"),
        ({"steps": 5, "batch_size": 8, "log_every": 0}, ValueError, "log_every"),
        ({"steps": 5, "batch_size": 8, "checkpoint_every": 2}, ValueError, "checkpoint_path"),
        ({"steps": 5, "batch_size": 8, "max_seconds": -1.0}, ValueError, "max_seconds"),
        ({"steps": 2.5, "batch_size": 8}, TypeError, "steps"),
    ],
)
def test_fit_bad_arguments(kwargs, exc, match):
    x, y = _regression()
    model, opt = _linear()
    with pytest.raises(exc, match=match):
        fit(model, opt, _mse, (x, y), progress=False, **kwargs)


def test_fit_bad_data_and_loss():
    x, y = _regression()
    model, opt = _linear()
    with pytest.raises(ValueError, match="same number of examples"):
        fit(model, opt, _mse, (x, y[:10]), steps=2, batch_size=4, progress=False)
    with pytest.raises(TypeError):
        fit(model, opt, _mse, [[1.0, 2.0]], steps=2, batch_size=1, progress=False)
    with pytest.raises(ValueError, match="mean"):
        fit(model, opt, lambda m, b: (m(b[0]) - b[1]) ** 2, (x, y), steps=2, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="reserved"):
        fit(model, opt, lambda m, b: (_mse(m, b), {"loss": 1.0}), (x, y), steps=2, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="metric 'v' must be a scalar"):
        fit(model, opt, lambda m, b: (_mse(m, b), {"v": b[0]}), (x, y), steps=2, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="require grad"):
        fit(model, opt, lambda m, b: torch.tensor(1.0), (x, y), steps=2, batch_size=4, progress=False)


# ----------------------------------------------------------------------------------------------------
# checkpoint / resume
# ----------------------------------------------------------------------------------------------------


class _Noisy(nn.Module):
    """Uses dropout and torch's global RNG so that resuming must restore every random state."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Dropout(0.3), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x + 0.1 * torch.randn_like(x))


def _noisy_loss(model, batch):
    x, y = batch
    loss = ((model(x) - y) ** 2).mean()
    return loss, {"u": torch.rand(())}


def _fresh(seed):
    torch.manual_seed(seed)
    model = _Noisy()
    return model, torch.optim.Adam(model.parameters(), lr=1e-2)


class _Interrupt(Exception):
    pass


FIT_KW = {"steps": 40, "batch_size": 8, "seed": 3, "log_every": 3, "progress": False}


def _uninterrupted():
    x, y = _regression(n=50)
    model, opt = _fresh(0)
    torch.manual_seed(11)
    h = fit(model, opt, _noisy_loss, (x, y), **FIT_KW)
    return model, h


def _assert_identical(model_a, hist_a, model_b, hist_b):
    sa, sb = model_a.state_dict(), model_b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"parameter {k} differs after resuming"
    assert hist_a.steps == hist_b.steps
    for key in hist_a.keys():  # noqa: SIM118 (a History, not a dict: it has no __iter__)
        assert hist_a[key] == hist_b[key], key


@pytest.mark.parametrize("how", ["stop_at_20", "crash_at_25"])
def test_resume_is_bit_identical(tmp_path, how):
    model_a, hist_a = _uninterrupted()

    x, y = _regression(n=50)
    path = tmp_path / "ckpt.pt"
    model_b, opt_b = _fresh(0)
    torch.manual_seed(11)
    if how == "stop_at_20":
        fit(model_b, opt_b, _noisy_loss, (x, y), **{**FIT_KW, "steps": 20}, checkpoint_path=path)
    else:
        def crash(step, m, h):
            if step == 25:
                raise _Interrupt

        with pytest.raises(_Interrupt):
            fit(model_b, opt_b, _noisy_loss, (x, y), **FIT_KW, checkpoint_path=path, checkpoint_every=10,
                callback=crash)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == 20

    # "New process": new objects with a different initialisation and a scrambled global RNG.
    model_c, opt_c = _fresh(999)
    torch.manual_seed(12345)
    assert not torch.equal(model_c.net[0].weight, model_a.net[0].weight)
    hist_c = fit(model_c, opt_c, _noisy_loss, (x, y), **FIT_KW, checkpoint_path=path)
    _assert_identical(model_a, hist_a, model_c, hist_c)
    assert opt_c.state_dict()["state"][0]["step"] == 40


def test_resume_with_deferred_reads_is_bit_identical(tmp_path):
    """A checkpoint in the middle of a read interval (check_every = 3, saved at step 20) holds every value read so
    far, so the resumed run logs what the uninterrupted one logs."""
    model_a, hist_a = _uninterrupted()
    x, y = _regression(n=50)
    path = tmp_path / "ckpt.pt"
    model_b, opt_b = _fresh(0)
    torch.manual_seed(11)
    fit(model_b, opt_b, _noisy_loss, (x, y), **{**FIT_KW, "steps": 20}, checkpoint_path=path, check_every=3)
    model_c, opt_c = _fresh(999)
    torch.manual_seed(12345)
    hist_c = fit(model_c, opt_c, _noisy_loss, (x, y), **FIT_KW, checkpoint_path=path, check_every=3)
    _assert_identical(model_a, hist_a, model_c, hist_c)


def test_resume_without_checkpoint_would_differ(tmp_path):
    """The check above can fail: continuing from step 20 without the saved RNG state gives other numbers."""
    model_a, _ = _uninterrupted()
    x, y = _regression(n=50)
    path = tmp_path / "ckpt.pt"
    model_b, opt_b = _fresh(0)
    torch.manual_seed(11)
    fit(model_b, opt_b, _noisy_loss, (x, y), **{**FIT_KW, "steps": 20}, checkpoint_path=path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["torch_rng"] = torch.manual_seed(12345).get_state()  # lose the global RNG state
    torch.save(ckpt, path)
    model_c, opt_c = _fresh(999)
    fit(model_c, opt_c, _noisy_loss, (x, y), **FIT_KW, checkpoint_path=path)
    assert not torch.equal(model_a.net[0].weight, model_c.net[0].weight)


def test_checkpoint_contents_are_weights_only_safe(tmp_path):
    x, y = _regression(n=50)
    model, opt = _fresh(0)
    path = tmp_path / "sub" / "ckpt.pt"
    h = fit(model, opt, _noisy_loss, (x, y), **{**FIT_KW, "steps": 7}, checkpoint_path=path)
    assert h.steps == [3, 6, 7]
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == 7
    assert set(ckpt) >= {"players", "history", "sampler", "generators", "torch_rng", "step"}
    assert set(ckpt["players"]) == {"model"} and set(ckpt["players"]["model"]) == {"module", "optimizer"}
    # The partial window (step 7) is kept as running sums, so that a resumed run logs what an
    # uninterrupted one would; the returned history shows it.
    assert ckpt["history"]["steps"] == [3, 6] and ckpt["window"]["loss"][1] == 1
    assert not (tmp_path / "sub" / "ckpt.pt.tmp").exists()
    fresh = _Noisy()
    fresh.load_state_dict(ckpt["players"]["model"]["module"])
    assert torch.equal(fresh.net[0].weight, model.net[0].weight)


def test_resume_false_starts_afresh_and_finished_run_is_skipped(tmp_path):
    x, y = _regression(n=50)
    path = tmp_path / "ckpt.pt"
    model, opt = _fresh(0)
    fit(model, opt, _noisy_loss, (x, y), **{**FIT_KW, "steps": 9}, checkpoint_path=path)
    trained = model.net[0].weight.detach().clone()

    model2, opt2 = _fresh(0)
    h = fit(model2, opt2, _noisy_loss, (x, y), **{**FIT_KW, "steps": 9}, checkpoint_path=path)  # already done
    assert torch.equal(model2.net[0].weight, trained) and h.steps == [3, 6, 9]

    model3, opt3 = _fresh(0)
    h3 = fit(model3, opt3, _noisy_loss, (x, y), **{**FIT_KW, "steps": 2}, checkpoint_path=path, resume=False)
    assert h3.steps == [2] and torch.load(path, weights_only=True)["step"] == 2


def test_resume_with_other_batch_size_is_refused(tmp_path):
    x, y = _regression(n=50)
    path = tmp_path / "ckpt.pt"
    model, opt = _fresh(0)
    fit(model, opt, _noisy_loss, (x, y), **{**FIT_KW, "steps": 4}, checkpoint_path=path)
    with pytest.raises(ValueError, match="batch_size"):
        fit(model, opt, _noisy_loss, (x, y), **{**FIT_KW, "batch_size": 5}, checkpoint_path=path)


def test_metrics_are_read_before_the_optimizer_step():
    w = nn.Parameter(torch.zeros(()))
    model = nn.Module()
    model.w = w
    h = fit(model, torch.optim.SGD([w], lr=1.0), lambda m, b: (m.w * 1.0, {"w": m.w}), torch.zeros(3, 1),
            steps=2, batch_size=1, log_every=1, progress=False)
    assert h["w"] == [0.0, -1.0] and float(w.detach()) == -2.0


# ----------------------------------------------------------------------------------------------------
# fit_players: several players, named random streams, learning-rate schedule
# ----------------------------------------------------------------------------------------------------
def _two_players(seed=0):
    """A player that fits y from x and one that, without a batch, pulls its weight towards a random target drawn
    from a named stream (so the stream's state matters)."""
    torch.manual_seed(seed)
    reg, pull = nn.Linear(3, 1), nn.Linear(1, 1, bias=False)
    stream = torch.Generator().manual_seed(42)
    calls = []

    def reg_loss(batch):
        calls.append("reg")
        return _mse(reg, batch), {"w0": reg.weight[0, 0]}

    def pull_loss(batch):
        assert batch is None
        calls.append("pull")
        return ((pull.weight - torch.randn(1, generator=stream)) ** 2).sum()

    players = [Player("reg", reg, torch.optim.SGD(reg.parameters(), lr=0.05), reg_loss, updates=2,
                      loss_key="loss_reg", grad_norm_key="gn_reg"),
               Player("pull", pull, torch.optim.SGD(pull.parameters(), lr=0.1), pull_loss, uses_batch=False,
                      loss_key="loss_pull", after_update=lambda: calls.append("after"))]
    return players, {"stream": stream}, calls


def test_fit_players_runs_each_player_in_turn_and_logs_each_loss():
    players, gens, calls = _two_players()
    h = fit_players(players, _regression(), steps=3, batch_size=8, generators=gens, log_every=1, progress=False)
    assert calls == ["reg", "reg", "pull", "after"] * 3
    assert h.keys() == ["loss_reg", "gn_reg", "loss_pull", "w0"] and h.steps == [1, 2, 3]
    with pytest.raises(ValueError, match="unique"):
        fit_players([players[0], players[0]], _regression(), steps=1, batch_size=8, progress=False)
    with pytest.raises(TypeError, match="Player"):
        fit_players([lambda b: 0.0], _regression(), steps=1, batch_size=8, progress=False)
    with pytest.raises(TypeError, match="torch.Generator"):
        fit_players(players, _regression(), steps=1, batch_size=8, generators={"s": 3}, progress=False)


def test_fit_players_diverged_names_the_player():
    players, _, _ = _two_players()
    bad = Player("pull", players[1].module, players[1].optimizer, lambda b: players[1].module.weight.sum() * math.inf,
                 uses_batch=False, loss_key="loss_pull")
    with pytest.raises(TrainingDiverged, match="the pull loss is") as err:
        fit_players([players[0], bad], _regression(), steps=2, batch_size=8, progress=False, title="Toy training")
    assert err.value.quantity == "pull loss" and err.value.step == 1 and str(err.value).startswith("Toy training")


def test_fit_players_resume_restores_the_named_streams(tmp_path):
    def run(path, steps, **kw):
        players, gens, _ = _two_players()
        h = fit_players(players, _regression(), steps=steps, batch_size=8, generators=gens, log_every=2,
                        progress=False, checkpoint_path=path, **kw)
        return [p.module for p in players], h

    mods_a, hist_a = run(None, 9)
    path = tmp_path / "two.pt"
    run(path, 4)
    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt["players"]) == {"reg", "pull"} and set(ckpt["generators"]) == {"stream"}
    mods_c, hist_c = run(path, 9)
    for a, c in zip(mods_a, mods_c):
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    assert hist_a.steps == hist_c.steps and hist_a["loss_pull"] == hist_c["loss_pull"]
    with pytest.raises(ValueError, match="players"):
        fit_players([_two_players()[0][0]], _regression(), steps=9, batch_size=8, checkpoint_path=path,
                    progress=False)


def test_fit_linear_lr_schedule_and_its_resume(tmp_path):
    x, y = _regression()
    model, opt = _linear()
    seen = []
    fit(model, opt, _mse, (x, y), steps=4, batch_size=8, lr_schedule="linear", progress=False,
        callback=lambda step, m, h: seen.append(opt.param_groups[0]["lr"]))
    assert seen == pytest.approx([0.1 * (1 - t / 4) for t in range(1, 5)])
    with pytest.raises(ValueError, match="lr_schedule"):
        fit(model, opt, _mse, (x, y), steps=4, batch_size=8, lr_schedule="cosine", progress=False)
    # a resumed linear schedule continues from the initial learning rate, not from the decayed one it saved
    model_a, opt_a = _linear()
    fit(model_a, opt_a, _mse, (x, y), steps=10, batch_size=8, lr_schedule="linear", progress=False)

    def crash(step, m, h):
        if step == 6:
            raise _Interrupt

    path = tmp_path / "lin.pt"
    model_b, opt_b = _linear()
    with pytest.raises(_Interrupt):
        fit(model_b, opt_b, _mse, (x, y), steps=10, batch_size=8, lr_schedule="linear", progress=False,
            checkpoint_path=path, checkpoint_every=4, callback=crash)
    model_c, opt_c = _linear(seed=5)
    fit(model_c, opt_c, _mse, (x, y), steps=10, batch_size=8, lr_schedule="linear", progress=False,
        checkpoint_path=path)
    assert torch.equal(model_a.weight, model_c.weight) and opt_c.param_groups[0]["lr"] == 0.0


def test_frozen_freezes_the_trainable_parameters_and_restores_them():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    net[1].bias.requires_grad_(False)  # frozen before: stays frozen
    x = torch.randn(3, 2, requires_grad=True)
    with frozen(net):
        assert not any(p.requires_grad for p in net.parameters())
        net(x).sum().backward()
    assert x.grad is not None and all(p.grad is None for p in net.parameters())
    assert [p.requires_grad for p in net.parameters()] == [True, True, True, False]
    with pytest.raises(RuntimeError, match="boom"), frozen(net):
        raise RuntimeError("boom")
    assert [p.requires_grad for p in net.parameters()] == [True, True, True, False]
    with pytest.raises(TypeError, match="nn.Module"), frozen(torch.zeros(2)):
        pass
