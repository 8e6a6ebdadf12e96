"""One small, readable training loop shared by every chapter.

:func:`fit` does what every chapter's training needs and nothing more:

* draws minibatches *without replacement* from a fresh random permutation every epoch (the incomplete
  last batch of an epoch is dropped, so every step sees exactly ``batch_size`` examples);
* shows a ``tqdm`` progress bar with the current loss (works in a terminal, Jupyter and Colab);
* records a :class:`History` of losses and metrics;
* stops at ``steps`` or when a wall-clock budget ``max_seconds`` is used up;
* raises :class:`TrainingDiverged` as soon as the loss or the gradient norm is NaN or Inf, with the
  step number and hints, instead of silently training on garbage;
* saves checkpoints and resumes from them such that an interrupted and resumed run ends
  *bit-identical* to an uninterrupted one (everything random is in the checkpoint).

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

import math
import numbers
import os
import time
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ._validate import check_nonnegative_int, check_positive_float, check_positive_int

__all__ = ["TrainingDiverged", "History", "fit"]

_CHECKPOINT_FORMAT = 1


class TrainingDiverged(RuntimeError):
    """Raised by :func:`fit` when the loss or the gradient norm becomes NaN or Inf.

    Attributes:
        step: the 1-based number of the step that diverged.
        quantity: ``"loss"`` or ``"gradient norm"``.
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
        #: why the last :func:`fit` call stopped: ``"steps"`` or ``"max_seconds"`` (not saved).
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


def _diverged(quantity: str, value: float, step: int, steps: int, optimizer, loss_value=None):
    extra = f" (the loss was {loss_value:.6g})" if loss_value is not None else ""
    msg = (
        f"Training diverged: the {quantity} is {value} at step {step} of {steps}{extra}. Try: "
        f"a lower learning rate (currently lr={_lr_of(optimizer)}); gradient clipping "
        f"(fit(..., grad_clip=1.0)); checking loss_fn for log(0), division by zero or exp overflow "
        f"(use torch.logsumexp, F.softplus, F.logsigmoid, or clamp variances); and checking the data "
        f"for NaN/Inf."
    )
    return TrainingDiverged(msg, step=step, quantity=quantity, value=value)


def _save_checkpoint(path: Path, state: dict) -> None:
    # Write to a temporary file, then rename: an interruption during saving never leaves a broken file.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


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
) -> History:
    """Train ``model`` by minibatch gradient descent and return the loss :class:`History`.

    One step: draw a minibatch, ``loss_fn(model, batch)``, check the loss is finite, backpropagate,
    check the gradient norm is finite, (optionally clip,) ``optimizer.step()``.

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

    Returns:
        The :class:`History` (restored and extended when resuming).

    Raises:
        TrainingDiverged: the loss or the gradient norm is NaN/Inf (message: step, value and hints).
        ValueError / TypeError: bad arguments (e.g. batch_size > N, a non-scalar loss, a loss that does
            not require grad, a checkpoint made with another batch size or dataset size).

    Checkpoints hold the model and optimizer ``state_dict``s, the step, the history and its running
    sums, the minibatch sampler (generator state, permutation, position) and torch's global RNG state
    (CPU and CUDA), so an interrupted and resumed run is bit-identical to an uninterrupted one on the
    same machine. Learning-rate schedulers are not checkpointed.
    """
    tensors, single = _as_tensors(data)
    n = tensors[0].shape[0]
    steps = check_positive_int("steps", steps)
    batch_size = check_positive_int("batch_size", batch_size)
    if batch_size > n:
        raise ValueError(f"batch_size ({batch_size}) must be <= the number of examples ({n})")
    seed = check_nonnegative_int("seed", seed)
    log_every = check_positive_int("log_every", log_every)
    if max_seconds is not None:
        max_seconds = check_positive_float("max_seconds", max_seconds)
    if grad_clip is not None:
        grad_clip = check_positive_float("grad_clip", grad_clip)
    if checkpoint_every is not None:
        checkpoint_every = check_positive_int("checkpoint_every", checkpoint_every)
        if checkpoint_path is None:
            raise ValueError("checkpoint_every needs a checkpoint_path to save to")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable as callback(step, model, history)")
    params = [p for group in optimizer.param_groups for p in group["params"]]

    history = History()
    sampler = _EpochSampler(n, batch_size, seed)
    # Running sums over the current logging window: {key: [sum, count]}.
    window: dict[str, list] = {}
    step = 0  # number of completed steps

    path = Path(checkpoint_path) if checkpoint_path is not None else None
    if path is not None and resume and path.exists():
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a coursekit.train checkpoint (format {ckpt.get('format')!r})")
        if ckpt["n"] != n or ckpt["batch_size"] != batch_size:
            raise ValueError(
                f"checkpoint {path} was made with {ckpt['n']} examples and batch_size {ckpt['batch_size']}, "
                f"but this call has {n} and {batch_size}; delete the file or pass resume=False"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        history.load_state_dict(ckpt["history"])
        sampler.load_state_dict(ckpt["sampler"])
        window = {k: [float(s), int(c)] for k, (s, c) in ckpt["window"].items()}
        torch.set_rng_state(ckpt["torch_rng"])
        if torch.cuda.is_available() and ckpt["cuda_rng"]:
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        step = int(ckpt["step"])
        if progress:
            tqdm.write(f"{desc}: resumed from {path} at step {step}")
        if step > steps:
            warnings.warn(f"checkpoint {path} is at step {step}, beyond steps={steps}; nothing to do")

    def checkpoint_state() -> dict:
        return {
            "format": _CHECKPOINT_FORMAT,
            "step": step,
            "n": n,
            "batch_size": batch_size,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history.state_dict(),
            "window": {k: [s, c] for k, (s, c) in window.items()},
            "sampler": sampler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def flush_window() -> None:
        if window:
            history.log(step, **{k: s / c for k, (s, c) in window.items()})
            window.clear()

    def accumulate(key: str, value: float) -> None:
        s_c = window.setdefault(key, [0.0, 0])
        s_c[0] += value
        s_c[1] += 1

    was_training = model.training
    model.train()
    start_step, saved_step, t0 = step, None, time.perf_counter()
    history.stop_reason = "steps"
    bar = tqdm(total=steps, initial=min(step, steps), desc=desc, disable=not progress, dynamic_ncols=True)
    try:
        while step < steps:
            idx = sampler.next_indices(tensors[0].device)
            batch_tensors = tuple(t[idx] if t.device == idx.device else t[idx.to(t.device)] for t in tensors)
            batch = batch_tensors[0] if single else batch_tensors

            out = loss_fn(model, batch)
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
            if "loss" in metrics or "grad_norm" in metrics:
                raise ValueError("the metric names 'loss' and 'grad_norm' are reserved; rename them")
            # Read the metrics now, before optimizer.step() can change a metric that views a parameter.
            metric_values = {key: _to_float(key, v) for key, v in metrics.items()}
            loss_value = float(loss.detach())  # one device sync per step, needed for the NaN/Inf guard
            if not math.isfinite(loss_value):
                raise _diverged("loss", loss_value, step + 1, steps, optimizer)

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grads = [p.grad.detach() for p in params if p.grad is not None]
            if not grads:
                raise ValueError("no optimised parameter received a gradient: does the loss depend on the "
                                 "parameters given to the optimizer?")
            grad_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
            if not math.isfinite(grad_norm):
                raise _diverged("gradient norm", grad_norm, step + 1, steps, optimizer, loss_value)
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            step += 1

            accumulate("loss", loss_value)
            accumulate("grad_norm", grad_norm)
            for key, value in metric_values.items():
                accumulate(key, value)

            if step % log_every == 0:
                flush_window()
                bar.set_postfix(loss=f"{history.last('loss'):.4g}", refresh=False)
            bar.update(1)
            if callback is not None:
                callback(step, model, history)
            if checkpoint_every is not None and step % checkpoint_every == 0:
                _save_checkpoint(path, checkpoint_state())
                saved_step = step
            out_of_time = max_seconds is not None and time.perf_counter() - t0 >= max_seconds
            if out_of_time and step < steps:
                history.stop_reason = "max_seconds"
                if progress:
                    tqdm.write(f"{desc}: stopped at step {step} of {steps}, "
                               f"the wall-clock budget of {max_seconds:g} s is used up")
                break
        if path is not None and step > start_step and saved_step != step:
            _save_checkpoint(path, checkpoint_state())
        # Log the last, partial window only now, after the checkpoint: the checkpoint keeps the running
        # sums instead, so a run continued from it logs exactly the rows an uninterrupted run logs.
        if window:
            flush_window()
            bar.set_postfix(loss=f"{history.last('loss'):.4g}", refresh=False)
    finally:
        bar.close()
        model.train(was_training)
    if progress and step > start_step:
        # A plain line as well as the bar: the rendered book shows printed text but not the widget bar.
        elapsed = time.perf_counter() - t0
        print(f"{desc}: {step - start_step} steps in {elapsed:.1f} s ({(step - start_step) / elapsed:.0f} steps/s), "
              f"final loss {history.last('loss'):.4g}")
    return history
