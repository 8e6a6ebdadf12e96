"""One small, readable training loop shared by every chapter.

:func:`fit_players` is the loop; :func:`fit` is its use with one model and one loss, and a GAN
(:func:`coursekit.gan.fit_gan`) is its use with two :class:`Player` s, the discriminator and the generator,
each with its network, optimiser, loss and number of updates per step. The loop does what every chapter's
training needs and nothing more:

* draws minibatches *without replacement* from a fresh random permutation every epoch (the incomplete
  last batch of an epoch is dropped, so every step sees exactly ``batch_size`` examples);
* shows a ``tqdm`` progress bar with the current loss (works in a terminal, Jupyter and Colab);
* records a :class:`History` of losses and metrics;
* stops at ``steps`` or when a wall-clock budget ``max_seconds`` is used up;
* raises :class:`TrainingDiverged` as soon as a loss or a gradient norm is NaN or Inf, with the
  step number and hints, instead of silently training on garbage. The values are read from the device
  once per ``check_every`` steps, all at once: every step on the CPU (before the optimiser steps on a bad
  gradient), every logging window on a GPU, where a read per step would stall the device;
* decays the learning rates linearly to 0 if asked (``lr_schedule="linear"``);
* saves checkpoints and resumes from them such that an interrupted and resumed run ends
  *bit-identical* to an uninterrupted one (everything random is in the checkpoint, including the
  run's named random streams, e.g. a GAN's latents).

Example::

    def loss_fn(model, batch):
        x, = batch
        loss = ((model(x) - x) ** 2).mean()
        return loss, {"mse": loss}

    history = fit(model, torch.optim.Adam(model.parameters(), 1e-3), loss_fn, (x_train,),
                  steps=2_000, batch_size=128)
    plot_history(history)
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ._validate import check_choice, check_nonnegative_int, check_positive_float, check_positive_int

__all__ = ["TrainingDiverged", "History", "Player", "frozen", "fit_players", "fit"]

_CHECKPOINT_FORMAT = 2


@contextlib.contextmanager
def frozen(*modules: torch.nn.Module):
    """Inside the block, the parameters of ``modules`` that required gradients do not (and get none): a player's
    opponent during the player's update (a GAN's discriminator while the generator steps). They require gradients
    again on leaving the block, also after an exception; parameters that were frozen before stay frozen.

    Raises:
        TypeError: if an argument is not an ``nn.Module``.
    """
    for m in modules:
        if not isinstance(m, torch.nn.Module):
            raise TypeError(f"frozen() takes nn.Module arguments, got {type(m).__name__}")
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class TrainingDiverged(RuntimeError):
    """Raised by :func:`fit` / :func:`fit_players` when a loss or a gradient norm becomes NaN or Inf.

    Attributes:
        step: the 1-based number of the step that diverged.
        quantity: ``"loss"`` or ``"gradient norm"``, prefixed with the player's name when there are several
            (``"discriminator loss"``).
        value: the offending value (a python float: nan, inf or -inf).
    """

    def __init__(self, message: str, *, step: int, quantity: str, value: float):
        super().__init__(message)
        self.step = step
        self.quantity = quantity
        self.value = value


class History:
    """Scalars recorded during training, aligned on a common list of steps.

    ``history.log(step, loss=..., kl=...)`` appends one row. ``history.steps`` is the list of logged
    steps and ``history["loss"]`` the list of values, one per logged step: ``history["loss"][i]`` was
    logged at ``history.steps[i]``. A key missing from a row holds ``nan`` there (matplotlib leaves
    such points out), so all lists always have the same length.

    The state is plain python lists of ints and floats, so it is saved inside checkpoints and loaded
    with ``torch.load(..., weights_only=True)``.
    """

    def __init__(self):
        self._steps: list[int] = []
        self._values: dict[str, list[float]] = {}
        #: why the last training call stopped: ``"steps"`` or ``"max_seconds"`` (not saved).
        self.stop_reason: str | None = None

    # -- recording --------------------------------------------------------------------------------
    def log(self, step: int, **scalars) -> None:
        """Record the scalars ``scalars`` (floats, ints or one-element tensors) at ``step``.

        Raises:
            ValueError: if ``step`` is not larger than the previous logged step, if no scalar is
                given, or if a value has more than one element.
            TypeError: if ``step`` is not an integer or a value is not a number.
        """
        step = check_nonnegative_int("step", step)
        if self._steps and step <= self._steps[-1]:
            raise ValueError(f"steps must increase: got step {step} after step {self._steps[-1]}")
        if not scalars:
            raise ValueError("History.log needs at least one scalar, e.g. history.log(step, loss=0.5)")
        row = {k: _to_float(k, v) for k, v in scalars.items()}
        n_before = len(self._steps)
        for key in row:
            if key not in self._values:  # a new key: back-fill earlier rows with nan
                self._values[key] = [math.nan] * n_before
        for key, values in self._values.items():
            values.append(row.get(key, math.nan))
        self._steps.append(step)

    # -- reading ----------------------------------------------------------------------------------
    @property
    def steps(self) -> list[int]:
        """The logged step numbers (a copy), increasing."""
        return list(self._steps)

    def __getitem__(self, key: str) -> list[float]:
        if key not in self._values:
            raise KeyError(f"no scalar {key!r} in this history; logged keys: {sorted(self._values)}")
        return list(self._values[key])

    def __contains__(self, key) -> bool:
        return key in self._values

    def __len__(self) -> int:
        return len(self._steps)

    def keys(self) -> list[str]:
        """Names of the logged scalars, in first-logged order."""
        return list(self._values)

    def last(self, key: str) -> float:
        """The most recent non-nan value of ``key`` (nan if there is none)."""
        for v in reversed(self[key]):
            if not math.isnan(v):
                return v
        return math.nan

    def __repr__(self) -> str:
        last = ", ".join(f"{k}={self.last(k):.4g}" for k in self._values)
        return f"History({len(self)} rows, last step {self._steps[-1] if self._steps else None}: {last})"

    # -- saving -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """``{"steps": [int, ...], "values": {key: [float, ...]}}`` (plain python, weights_only-safe)."""
        return {"steps": list(self._steps), "values": {k: list(v) for k, v in self._values.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Replace the contents with ``state`` (from :meth:`state_dict`).

        Raises:
            ValueError: if ``state`` is malformed (missing keys, lists of different lengths).
        """
        if not isinstance(state, dict) or set(state) != {"steps", "values"}:
            raise ValueError("History state must be a dict with keys 'steps' and 'values'")
        steps = [int(s) for s in state["steps"]]
        values = {str(k): [float(v) for v in vs] for k, vs in state["values"].items()}
        for key, vs in values.items():
            if len(vs) != len(steps):
                raise ValueError(f"History state: {key!r} has {len(vs)} values for {len(steps)} steps")
        self._steps, self._values = steps, values


def _to_float(name: str, v) -> float:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise ValueError(f"metric {name!r} must be a scalar, got a tensor of shape {tuple(v.shape)}")
        return float(v.detach().item())
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return float(v)
    raise TypeError(f"metric {name!r} must be a number or a one-element tensor, got {type(v).__name__}")


class _EpochSampler:
    """Minibatch indices without replacement from per-epoch permutations.

    A new permutation of 0..n-1 is drawn from a private ``torch.Generator`` (seeded once) whenever fewer
    than ``batch_size`` unused indices remain; those few are skipped (drop-last). Its complete state
    (generator state, current permutation, position) goes into checkpoints.
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator(device="cpu").manual_seed(seed)  # CPU: same batches on any device
        self.perm = torch.empty(0, dtype=torch.long)
        self.pos = n  # "epoch finished": the first call draws a permutation
        self._perm_on = {}  # cache of the permutation on each data device (avoids a copy per step)

    def next_indices(self, device: torch.device) -> torch.Tensor:
        if self.pos + self.batch_size > self.n:
            self.perm = torch.randperm(self.n, generator=self.generator)
            self.pos = 0
            self._perm_on = {}
        if device not in self._perm_on:
            self._perm_on[device] = self.perm.to(device)
        idx = self._perm_on[device][self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "perm": self.perm.clone(), "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.perm = state["perm"].to(torch.long)
        self.pos = int(state["pos"])
        self._perm_on = {}


def _as_tensors(data) -> tuple[tuple[torch.Tensor, ...], bool]:
    """Return (tuple of tensors, was_a_single_tensor) after checking they share the first dimension."""
    single = isinstance(data, torch.Tensor)
    tensors = (data,) if single else data
    if not isinstance(tensors, (tuple, list)) or not tensors:
        raise TypeError(f"data must be a Tensor or a non-empty tuple of Tensors, got {type(data).__name__}")
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"data[{i}] must be a Tensor, got {type(t).__name__}")
        if t.ndim == 0:
            raise ValueError(f"data[{i}] must have a first (example) dimension, got a 0-d tensor")
    sizes = [t.shape[0] for t in tensors]
    if len(set(sizes)) != 1:
        raise ValueError(f"all data tensors must have the same number of examples (first dim), got {sizes}")
    if sizes[0] == 0:
        raise ValueError("data is empty (0 examples)")
    return tuple(tensors), single


def _lr_of(optimizer) -> str:
    lrs = sorted({g.get("lr") for g in optimizer.param_groups if "lr" in g}, key=str)
    return ", ".join(f"{lr:g}" if isinstance(lr, float) else str(lr) for lr in lrs) or "?"


def _save_checkpoint(path: Path, state: dict) -> None:
    # Write to a temporary file, then rename: an interruption during saving never leaves a broken file.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


@dataclass(eq=False)
class Player:
    """One network of a training run and how :func:`fit_players` updates it.

    Single-objective training (:func:`fit`) has one player; a GAN has two, the discriminator (or critic) and
    the generator (:func:`coursekit.gan.fit_gan`).

    Attributes:
        name: the player's name in error messages and checkpoints (``"model"``, ``"discriminator"``, ...),
            unique within a run.
        module: its ``nn.Module``: in train mode during the run, its previous mode restored after.
        optimizer: a torch optimizer over (some of) the module's parameters.
        loss_fn: ``loss_fn(batch)`` returning a scalar loss tensor, or ``(loss, metrics)`` with ``metrics`` a
            dict of scalar tensors/floats to record. ``batch`` is a fresh minibatch (a Tensor if the data is a
            Tensor, else a tuple of Tensors) when ``uses_batch``, else ``None``.
        updates: optimiser updates per step, >= 1 (``n_critic`` for a WGAN critic).
        uses_batch: draw a fresh minibatch for each of the player's updates.
        after_update: optional ``after_update()`` called after each of its optimiser steps (e.g. clipping the
            critic's weights).
        loss_key: the :class:`History` key of its loss (the loss of its last update in each step).
        grad_norm_key: the History key of its gradient norm (before clipping), or ``None`` not to log it.
        grad_scale: backpropagate ``grad_scale * loss`` while logging ``loss``: an ensemble of E independent
            members whose loss is the mean over members uses E, so each member gets the gradient of its own loss.
        grad_clip: if given, clip the player's global gradient norm to this value (``clip_grad_norm_``).
    """

    name: str
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: Callable
    updates: int = 1
    uses_batch: bool = True
    after_update: Callable[[], None] | None = None
    loss_key: str = "loss"
    grad_norm_key: str | None = None
    grad_scale: float = 1.0
    grad_clip: float | None = None


def _check_players(players) -> tuple[Player, ...]:
    if isinstance(players, Player):
        players = (players,)
    players = tuple(players)
    if not players or not all(isinstance(p, Player) for p in players):
        raise TypeError("players must be a non-empty sequence of coursekit.train.Player")
    for p in players:
        if not isinstance(p.module, torch.nn.Module):
            raise TypeError(f"player {p.name!r}: module must be a torch.nn.Module, got {type(p.module).__name__}")
        if not callable(p.loss_fn):
            raise TypeError(f"player {p.name!r}: loss_fn must be callable")
        check_positive_int(f"{p.name} updates", p.updates)
        check_positive_float(f"{p.name} grad_scale", p.grad_scale)
        if p.grad_clip is not None:
            check_positive_float("grad_clip", p.grad_clip)
    for what, names in (("names", [p.name for p in players]), ("History keys", _history_keys(players))):
        if len(set(names)) != len(names):
            raise ValueError(f"the players' {what} must be unique, got {names}")
    return players


def _history_keys(players) -> list[str]:
    """The History keys the players' losses and gradient norms are logged under (reserved for them)."""
    return [p.loss_key for p in players] + [p.grad_norm_key for p in players if p.grad_norm_key]


def _default_advice(player: Player) -> str:
    return (f"a lower learning rate (currently lr={_lr_of(player.optimizer)}); gradient clipping "
            f"(fit(..., grad_clip=1.0)); checking loss_fn for log(0), division by zero or exp overflow "
            f"(use torch.logsumexp, F.softplus, F.logsigmoid, or clamp variances); and checking the data "
            f"for NaN/Inf.")


class _Window:
    """Running sums ``{key: [sum, count]}`` of the current logging window, flushed into a History as means."""

    def __init__(self, history: History):
        self.history = history
        self.sums: dict[str, list] = {}

    def add(self, key: str, value: float) -> None:
        s_c = self.sums.setdefault(key, [0.0, 0])
        s_c[0] += value
        s_c[1] += 1

    def flush(self, step: int) -> bool:
        if not self.sums:
            return False
        self.history.log(step, **{k: s / c for k, (s, c) in self.sums.items()})
        self.sums.clear()
        return True


@dataclass(eq=False)
class _Update:
    """One optimiser update whose loss, gradient norm and tensor metrics may still be on the device.

    ``values`` is ``(loss, gradient norm, tensor metric 1, ...)``, copied (by ``torch.stack``) before the
    optimiser stepped; ``slots`` gives, for each metric in the order ``loss_fn`` returned them, its key and
    either its index in ``values`` or its python value. ``floats`` is filled in when the values are read.
    """

    step: int
    player: Player
    values: torch.Tensor
    slots: list
    last: bool  # the player's last update of its step: the one that is logged
    floats: list | None = None


def _read_dtype(device: torch.device) -> torch.dtype:
    # float64 holds a float32 or float64 loss exactly; Apple's MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _global_grad_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The global 2-norm of all the gradients' entries, a 0-d tensor on their device (nothing is read back).

    One norm of the concatenated gradients: for the course's small networks this costs less than a norm per
    tensor (the form ``clip_grad_norm_`` uses, kept for gradients on several devices); the two agree to rounding.
    """
    if len({g.device for g in grads}) == 1:
        return torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads]))
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g).to(grads[0].device) for g in grads]))


class _Run:
    """The state of one :func:`fit_players` call: players, sampler, named RNG streams, history, step, and the
    updates whose values have not been read from the device yet."""

    def __init__(self, players, tensors, single, steps, batch_size, seed, generators, title, advice, check_every):
        self.players, self.tensors, self.single = players, tensors, single
        self.n, self.steps, self.batch_size = tensors[0].shape[0], steps, batch_size
        self.sampler = _EpochSampler(self.n, batch_size, seed)
        self.generators = generators
        self.title, self.advice = title, advice
        self.check_every = check_every
        self.history = History()
        self.window = _Window(self.history)
        self.step = 0  # number of completed steps
        self.reserved = set(_history_keys(players))
        self.pending: list[_Update] = []  # updates since the last read, in order

    # -- one optimiser update of one player ---------------------------------------------------------
    def batch(self):
        idx = self.sampler.next_indices(self.tensors[0].device)
        batch = tuple(t[idx] if t.device == idx.device else t[idx.to(t.device)] for t in self.tensors)
        return batch[0] if self.single else batch

    def diverged(self, update: _Update, quantity: str, value: float, loss_value=None) -> TrainingDiverged:
        quantity = quantity if len(self.players) == 1 else f"{update.player.name} {quantity}"
        extra = f" (the loss was {loss_value:.6g})" if loss_value is not None else ""
        late = (f" It was noticed after step {self.step}: the values are read from the device every "
                f"{self.check_every} steps." if self.step >= update.step else "")
        msg = (f"{self.title} diverged: the {quantity} is {value} at step {update.step} of {self.steps}{extra}."
               f"{late} Try: {self.advice(update.player)}")
        return TrainingDiverged(msg, step=update.step, quantity=quantity, value=value)

    def _loss_and_metrics(self, player: Player):
        out = player.loss_fn(self.batch() if player.uses_batch else None)
        if isinstance(out, tuple) and len(out) != 2:
            raise ValueError(f"loss_fn must return loss or (loss, metrics), got a tuple of {len(out)} items")
        loss, metrics = out if isinstance(out, tuple) else (out, {})
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"loss_fn must return a scalar loss tensor, got {got}; did you forget .mean()?")
        if not loss.requires_grad:
            raise ValueError("the loss does not require grad: was it computed under torch.no_grad() "
                             "or from detached tensors?")
        if not isinstance(metrics, dict):
            raise TypeError(f"loss_fn's second output must be a dict of metrics, got {type(metrics).__name__}")
        if self.reserved & set(metrics):
            names = " and ".join(repr(k) for k in sorted(self.reserved))
            raise ValueError(f"the metric names {names} are reserved; rename them")
        return loss, metrics

    def update(self, player: Player, last: bool) -> None:
        """Loss, backward, gradient norm, divergence guard (here, or later when ``check_every`` > 1), (clip,) step."""
        loss, metrics = self._loss_and_metrics(player)
        optimizer = player.optimizer
        optimizer.zero_grad(set_to_none=True)
        (loss if player.grad_scale == 1.0 else player.grad_scale * loss).backward()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grads = [p.grad.detach() for p in params if p.grad is not None]
        if not grads:
            of = "" if len(self.players) == 1 else f" of the {player.name}"
            raise ValueError(f"no optimised parameter{of} received a gradient: does the loss depend on the "
                             f"parameters given to the optimizer?")
        # The loss, the gradient norm and the tensor metrics in one tensor, copied now (before optimizer.step()
        # can change a metric that views a parameter) and read from the device with the others later.
        dtype = _read_dtype(loss.device)
        scalars, slots = [loss.detach(), _global_grad_norm(grads)], []
        for key, v in metrics.items():
            if isinstance(v, torch.Tensor):
                if v.numel() != 1:
                    raise ValueError(f"metric {key!r} must be a scalar, got a tensor of shape {tuple(v.shape)}")
                slots.append((key, len(scalars), None))
                scalars.append(v.detach())
            else:
                slots.append((key, None, _to_float(key, v)))
        values = torch.stack([t.reshape(()).to(device=loss.device, dtype=dtype) for t in scalars])
        self.pending.append(_Update(self.step + 1, player, values, slots, last))
        if self.check_every == 1:
            self.read()  # the guard runs before the optimiser steps on a bad gradient
        if player.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, player.grad_clip)
        optimizer.step()
        if player.after_update is not None:
            player.after_update()

    def read(self) -> None:
        """Read the pending updates' values from the device at once (one synchronisation) and check them in order:
        the first NaN/Inf loss or gradient norm raises :class:`TrainingDiverged` naming its step."""
        todo = [u for u in self.pending if u.floats is None]
        if not todo:
            return
        flat = torch.cat([u.values for u in todo]).tolist()
        pos = 0
        for u in todo:
            u.floats, pos = flat[pos:pos + u.values.numel()], pos + u.values.numel()
            loss_value, grad_norm = u.floats[0], u.floats[1]
            if not math.isfinite(loss_value):
                raise self.diverged(u, "loss", loss_value)
            if not math.isfinite(grad_norm):
                raise self.diverged(u, "gradient norm", grad_norm, loss_value)

    def settle(self) -> None:
        """Read the pending updates and add each completed step's logged values (every player's loss and gradient
        norm, then every player's metrics, from its last update of the step) to the logging window."""
        self.read()
        done = [u for u in self.pending if u.step <= self.step and u.last]
        self.pending = [u for u in self.pending if u.step > self.step]
        for step in sorted({u.step for u in done}):
            logged = [u for u in done if u.step == step]
            for u in logged:
                self.window.add(u.player.loss_key, u.floats[0])
                if u.player.grad_norm_key:
                    self.window.add(u.player.grad_norm_key, u.floats[1])
            for u in logged:
                for key, index, value in u.slots:
                    self.window.add(key, u.floats[index] if index is not None else value)

    def run_step(self) -> None:
        """Every player's updates in order; the values are read every ``check_every`` steps."""
        for player in self.players:
            for k in range(player.updates):
                self.update(player, last=k == player.updates - 1)
        self.step += 1
        if self.step % self.check_every == 0:
            self.settle()

    # -- checkpoints --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": _CHECKPOINT_FORMAT,
            "step": self.step,
            "n": self.n,
            "batch_size": self.batch_size,
            "players": {p.name: {"module": p.module.state_dict(), "optimizer": p.optimizer.state_dict()}
                        for p in self.players},
            "history": self.history.state_dict(),
            "window": {k: [s, c] for k, (s, c) in self.window.sums.items()},
            "sampler": self.sampler.state_dict(),
            "generators": {name: g.get_state() for name, g in self.generators.items()},
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, ckpt: dict, path: Path) -> None:
        if ckpt.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a coursekit.train checkpoint of format {_CHECKPOINT_FORMAT} (format "
                             f"{ckpt.get('format')!r}); delete the file or pass resume=False")
        if ckpt["n"] != self.n or ckpt["batch_size"] != self.batch_size:
            raise ValueError(
                f"checkpoint {path} was made with {ckpt['n']} examples and batch_size {ckpt['batch_size']}, "
                f"but this call has {self.n} and {self.batch_size}; delete the file or pass resume=False"
            )
        names = sorted(p.name for p in self.players)
        if sorted(ckpt["players"]) != names or sorted(ckpt["generators"]) != sorted(self.generators):
            raise ValueError(f"checkpoint {path} holds the players {sorted(ckpt['players'])} and random streams "
                             f"{sorted(ckpt['generators'])}, but this call has {names} and "
                             f"{sorted(self.generators)}; delete the file or pass resume=False")
        for p in self.players:
            p.module.load_state_dict(ckpt["players"][p.name]["module"])
            p.optimizer.load_state_dict(ckpt["players"][p.name]["optimizer"])
        self.history.load_state_dict(ckpt["history"])
        self.sampler.load_state_dict(ckpt["sampler"])
        for name, g in self.generators.items():
            g.set_state(ckpt["generators"][name])
        self.window.sums = {k: [float(s), int(c)] for k, (s, c) in ckpt["window"].items()}
        torch.set_rng_state(ckpt["torch_rng"])
        if torch.cuda.is_available() and ckpt["cuda_rng"]:
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        self.step = int(ckpt["step"])


def _check_generators(generators) -> dict:
    generators = dict(generators or {})
    for name, g in generators.items():
        if not isinstance(g, torch.Generator):
            raise TypeError(f"generators[{name!r}] must be a torch.Generator, got {type(g).__name__}")
    return generators


def _train(run: _Run, *, base_lrs, lr_schedule, log_every, max_seconds, path, checkpoint_every, progress, desc,
           callback) -> History:
    """The loop of :func:`fit_players` on a prepared (possibly resumed) run: steps, learning-rate schedule, logging
    window, progress bar, callback, checkpoints, wall-clock budget, summary line."""
    history, steps = run.history, run.steps
    keys = [p.loss_key for p in run.players]

    def show() -> None:
        bar.set_postfix(**{k: f"{history.last(k):.4g}" for k in keys}, refresh=False)

    was_training = [p.module.training for p in run.players]
    for p in run.players:
        p.module.train()
    start_step, saved_step, t0 = run.step, None, time.perf_counter()
    history.stop_reason = "steps"
    bar = tqdm(total=steps, initial=min(run.step, steps), desc=desc, disable=not progress, dynamic_ncols=True)
    try:
        while run.step < steps:
            run.run_step()
            step = run.step
            if lr_schedule == "linear":
                for p, lrs in zip(run.players, base_lrs):
                    for group, lr0 in zip(p.optimizer.param_groups, lrs):
                        group["lr"] = lr0 * (1.0 - step / steps)
            if step % log_every == 0:
                run.settle()
                run.window.flush(step)
                show()
            bar.update(1)
            if callback is not None:
                callback(step, history)
            if checkpoint_every is not None and step % checkpoint_every == 0:
                run.settle()
                _save_checkpoint(path, run.state_dict())
                saved_step = step
            if max_seconds is not None and time.perf_counter() - t0 >= max_seconds and step < steps:
                history.stop_reason = "max_seconds"
                if progress:
                    tqdm.write(f"{desc}: stopped at step {step} of {steps}, "
                               f"the wall-clock budget of {max_seconds:g} s is used up")
                break
        run.settle()
        if path is not None and run.step > start_step and saved_step != run.step:
            _save_checkpoint(path, run.state_dict())
        # Log the last, partial window only now, after the checkpoint: the checkpoint keeps the running
        # sums instead, so a run continued from it logs exactly the rows an uninterrupted run logs.
        if run.window.flush(run.step):
            show()
    finally:
        bar.close()
        for p, mode in zip(run.players, was_training):
            p.module.train(mode)
    done = run.step - start_step
    if progress and done > 0:
        # A plain line as well as the bar: the rendered book shows printed text but not the widget bar.
        elapsed = time.perf_counter() - t0
        final = ", ".join(f"{k} {history.last(k):.4g}" for k in keys)
        print(f"{desc}: {done} steps in {elapsed:.1f} s ({done / elapsed:.0f} steps/s), final {final}")
    return history


def fit_players(
    players,
    data,
    *,
    steps: int,
    batch_size: int,
    seed: int = 0,
    generators=None,
    lr_schedule: str = "constant",
    max_seconds: float | None = None,
    log_every: int = 10,
    progress: bool = True,
    desc: str = "training",
    callback=None,
    checkpoint_path=None,
    checkpoint_every: int | None = None,
    resume: bool = True,
    title: str = "Training",
    advice=None,
    check_every: int | None = None,
) -> History:
    """The training loop of the course: train one or more :class:`Player` s in turn and return the History.

    One *step* runs every player in the given order, each ``player.updates`` times; one update draws a
    minibatch (if the player ``uses_batch``), calls its ``loss_fn``, checks the loss is finite, backpropagates,
    checks the gradient norm is finite, (clips,) steps its optimizer and calls ``after_update``. :func:`fit` is
    the one-player case; a GAN is two players (Goodfellow et al. 2014, Algorithm 1: k discriminator updates,
    then one generator update).

    Args:
        players: a :class:`Player` or a sequence of them (unique names and History keys).
        data: a Tensor (N, ...) or a tuple of Tensors sharing N, on the training device; minibatches of
            ``batch_size`` rows without replacement from a fresh permutation every epoch (drawn from a CPU
            ``torch.Generator`` seeded with ``seed``; the N mod batch_size left-over rows of an epoch are skipped).
        steps: total number of steps (counting steps done before a resume). batch_size: 1 <= batch_size <= N.
        seed: seed of the minibatch order.
        generators: ``{name: torch.Generator}``, the run's other named random streams (e.g. a GAN's latents),
            saved in and restored from checkpoints with the minibatch sampler and torch's global RNG.
        lr_schedule: ``"constant"`` or ``"linear"``: every optimiser's learning rates decay linearly from their
            initial values to 0 at step ``steps`` (``lr_t = lr_0 (1 - t / steps)`` after step t).
        max_seconds: wall-clock budget of this call in seconds; training stops after the first step that ends
            past it (``history.stop_reason == "max_seconds"``). ``None``: no limit.
        log_every: record the mean over the last ``log_every`` steps of every player's loss (and gradient norm,
            if it has a ``grad_norm_key``) and metrics, at every multiple of ``log_every``; the steps since the
            last multiple are logged at the end of the call.
        progress: a ``tqdm.auto`` progress bar, notices about resuming/stopping and a summary line at the end.
        desc: label of the progress bar. callback: optional ``callback(step, history)`` after every step.
        checkpoint_path: file for checkpoints (``None``: none); one is also written at the end of the call.
        checkpoint_every: also save every this many steps (requires ``checkpoint_path``).
        resume: if ``checkpoint_path`` exists, load it (``torch.load(..., weights_only=True)``) and continue from
            its step; ``False`` starts afresh and overwrites it.
        title: first words of the :class:`TrainingDiverged` message (``"Training"``, ``"GAN training"``).
        advice: optional ``advice(player) -> str``, the hints after "Try:" in that message.
        check_every: read the losses, gradient norms and metrics from the device every this many steps (one
            synchronisation for all of them) and check them then. ``1`` checks every update before its optimiser
            step, so a NaN/Inf gradient is never applied; ``k > 1`` lets an accelerator run ahead of the host and
            stops training at most ``k - 1`` steps after the first bad step (the message names that step and the
            parameters may by then be NaN). ``None``: 1 when the data is on the CPU, where a read costs nothing,
            else ``log_every``.

    Returns:
        The :class:`History` (restored and extended when resuming), ``stop_reason`` ``"steps"`` or
        ``"max_seconds"``.

    Raises:
        TrainingDiverged: a loss or gradient norm is NaN/Inf (message: which player, step, value and hints).
        ValueError / TypeError: bad arguments, a non-scalar loss or one that does not require grad, no gradient
            for a player's parameters, a checkpoint made with other data, batch size, players or streams.

    Optimisers left at torch's defaults (``foreach=None``, ``fused=None``) run a faster implementation of the same
    update during the call: Adam and AdamW the fused kernel, others the multi-tensor ("foreach") form, on every
    device (torch chooses foreach by itself only on CUDA); their settings are restored after.

    Checkpoints hold every player's module and optimizer ``state_dict``, the step, the history and the running
    sums of its logging window, the minibatch sampler, the named ``generators`` and torch's global RNG state
    (CPU and CUDA), so an interrupted and resumed run is bit-identical to an uninterrupted one on the same machine.
    """
    players = _check_players(players)
    tensors, single = _as_tensors(data)
    n = tensors[0].shape[0]
    steps = check_positive_int("steps", steps)
    batch_size = check_positive_int("batch_size", batch_size)
    if batch_size > n:
        raise ValueError(f"batch_size ({batch_size}) must be <= the number of examples ({n})")
    seed = check_nonnegative_int("seed", seed)
    check_choice("lr_schedule", lr_schedule, ("constant", "linear"))
    log_every = check_positive_int("log_every", log_every)
    if max_seconds is not None:
        max_seconds = check_positive_float("max_seconds", max_seconds)
    if checkpoint_every is not None:
        checkpoint_every = check_positive_int("checkpoint_every", checkpoint_every)
        if checkpoint_path is None:
            raise ValueError("checkpoint_every needs a checkpoint_path to save to")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable as callback(step, history)")
    if check_every is None:
        check_every = 1 if tensors[0].device.type == "cpu" else log_every
    check_every = check_positive_int("check_every", check_every)
    run = _Run(players, tensors, single, steps, batch_size, seed, _check_generators(generators), title,
               advice or _default_advice, check_every)
    # Initial learning rates and implementation settings, read before a checkpoint overwrites them.
    base_lrs = [[group["lr"] for group in p.optimizer.param_groups] for p in players]
    settings = [[{k: group[k] for k in ("foreach", "fused") if k in group} for group in p.optimizer.param_groups]
                for p in players]
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    if path is not None and resume and path.exists():
        run.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), path)
        if progress:
            tqdm.write(f"{desc}: resumed from {path} at step {run.step}")
        if run.step > steps:
            warnings.warn(f"checkpoint {path} is at step {run.step}, beyond steps={steps}; nothing to do")
    fast = [[_fast_implementation(p.optimizer, group, setting) for group, setting in zip(p.optimizer.param_groups, ss)]
            for p, ss in zip(players, settings)]
    _set_implementations(players, fast)
    try:
        return _train(run, base_lrs=base_lrs, lr_schedule=lr_schedule, log_every=log_every, max_seconds=max_seconds,
                      path=path, checkpoint_every=checkpoint_every, progress=progress, desc=desc, callback=callback)
    finally:
        _set_implementations(players, settings)


def _fast_implementation(optimizer, group: dict, setting: dict) -> dict:
    """The implementation a parameter group left at torch's defaults (``foreach=None``, ``fused=None``) runs during
    training: Adam and AdamW on float CPU or CUDA parameters use the fused kernel (one kernel for all tensors, several
    times faster than the per-tensor loop on the CPU), other optimisers their multi-tensor ("foreach") form, which
    torch picks by itself only on CUDA. All compute the same update, to rounding. Explicit settings are kept."""
    if any(v is not None for v in setting.values()) or "foreach" not in setting or group.get("differentiable"):
        return setting
    fusable = isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)) and "fused" in setting
    if fusable and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in group["params"]):
        return {**setting, "fused": True}
    return {**setting, "foreach": True}


def _set_implementations(players, settings) -> None:
    for p, groups in zip(players, settings):
        for group, setting in zip(p.optimizer.param_groups, groups):
            group.update(setting)


def fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn,
    data,
    *,
    steps: int,
    batch_size: int,
    seed: int = 0,
    max_seconds: float | None = None,
    log_every: int = 10,
    checkpoint_path=None,
    checkpoint_every: int | None = None,
    resume: bool = True,
    progress: bool = True,
    desc: str = "training",
    callback=None,
    grad_clip: float | None = None,
    lr_schedule: str = "constant",
    check_every: int | None = None,
) -> History:
    """Train ``model`` by minibatch gradient descent and return the loss :class:`History`.

    One step: draw a minibatch, ``loss_fn(model, batch)``, check the loss is finite, backpropagate,
    check the gradient norm is finite, (optionally clip,) ``optimizer.step()``. This is :func:`fit_players`
    with one :class:`Player`.

    Args:
        model: the ``nn.Module`` (put in train mode during the call, its previous mode restored after).
        optimizer: a torch optimizer over (some of) the model's parameters.
        loss_fn: ``loss_fn(model, batch)`` returning a scalar loss tensor, or ``(loss, metrics)`` where
            ``metrics`` is a dict of scalar tensors/floats to record (e.g. ``{"kl": kl.mean()}``).
            ``batch`` is a Tensor if ``data`` is a Tensor, else a tuple of Tensors.
        data: a Tensor (N, ...) or a tuple of Tensors sharing N, already on the training device;
            minibatches are indexed on that device (no copies to or from the host).
        steps: total number of optimiser steps (counting steps done before a resume).
        batch_size: examples per step, 1 <= batch_size <= N. Each epoch is a fresh permutation drawn
            from a ``torch.Generator`` seeded with ``seed``; the N mod batch_size left-over examples of
            an epoch are skipped (a different few each epoch).
        seed: seed of the minibatch order. (Other randomness, e.g. dropout or the noise of a VAE, uses
            torch's global RNG; seed it with :func:`coursekit.runtime.setup`.)
        max_seconds: wall-clock budget of this call, in seconds; training stops after the first step
            that ends past it (``history.stop_reason == "max_seconds"``). ``None``: no limit.
        log_every: record the mean of the loss, the gradient norm (``"grad_norm"``, before clipping)
            and each metric over the last ``log_every`` steps, at every multiple of ``log_every``;
            the steps since the last multiple are logged at the end of the call.
        checkpoint_path: file for checkpoints (``None``: no checkpoints). A checkpoint is also written
            at the end of the call.
        checkpoint_every: also save every this many steps (requires ``checkpoint_path``).
        resume: if ``checkpoint_path`` exists, load it (``torch.load(..., weights_only=True)``) and
            continue from its step; ``False`` starts afresh and overwrites it.
        progress: show a ``tqdm.auto`` progress bar (and one-line notices about resuming/stopping).
        desc: label of the progress bar.
        callback: optional ``callback(step, model, history)`` called after every step (``step`` counts
            completed steps, starting at 1).
        grad_clip: if given, clip the global gradient norm to this value (``clip_grad_norm_``).
        lr_schedule: ``"constant"`` (default) or ``"linear"`` (decay to 0 at ``steps``, see :func:`fit_players`).
        check_every: how often the loss and gradient norm are read from the device and checked (see
            :func:`fit_players`): by default every step on the CPU, every ``log_every`` steps on an accelerator.

    Returns:
        The :class:`History` (restored and extended when resuming).

    Raises:
        TrainingDiverged: the loss or the gradient norm is NaN/Inf (message: step, value and hints).
        ValueError / TypeError: bad arguments (e.g. batch_size > N, a non-scalar loss, a loss that does
            not require grad, a checkpoint made with another batch size or dataset size).

    Checkpoints hold the model and optimizer ``state_dict``s, the step, the history and its running
    sums, the minibatch sampler (generator state, permutation, position) and torch's global RNG state
    (CPU and CUDA), so an interrupted and resumed run is bit-identical to an uninterrupted one on the
    same machine.
    """
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable as callback(step, model, history)")
    player = Player("model", model, optimizer, lambda batch: loss_fn(model, batch), loss_key="loss",
                    grad_norm_key="grad_norm", grad_clip=grad_clip)
    return fit_players(
        [player], data, steps=steps, batch_size=batch_size, seed=seed, lr_schedule=lr_schedule,
        max_seconds=max_seconds, log_every=log_every, checkpoint_path=checkpoint_path,
        checkpoint_every=checkpoint_every, resume=resume, progress=progress, desc=desc, check_every=check_every,
        callback=None if callback is None else (lambda step, history: callback(step, model, history)),
    )
