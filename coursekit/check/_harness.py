"""The machinery every checker module uses: a checking context and tensor comparisons with readable output.

A checker builds a :class:`Ctx` for its exercise, draws its inputs from ``ctx`` (never from torch's global
random state), calls the student's function through :meth:`Ctx.call`, compares the result with a reference
(:func:`close`), looks up the first failing row (:func:`first_bad`) or a named common mistake
(:func:`diagnose`), and either calls :meth:`Ctx.fail` or ends with :meth:`Ctx.passed`.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch

__all__ = ["Ctx", "close", "fmt", "first_bad", "diagnose", "hint_for", "not_implemented"]


def not_implemented(exercise: str) -> AssertionError:
    """The error a checker raises when the student's function is still the stub.

    Args:
        exercise: the exercise's (and checker's) name, which starts the message.

    Returns:
        an ``AssertionError`` (to ``raise ... from None``) telling the student to replace
        ``raise NotImplementedError`` and run the cell again.
    """
    return AssertionError(
        f"{exercise}: not implemented yet. Replace `raise NotImplementedError` in your "
        f"function with your code, run that cell, then run this check again."
    )


class Ctx:
    """One run of one checker: the student's function, the seed and a private random generator.

    Args:
        exercise: the checker's name; it starts every message and appears in the reproducer
            ``check.<exercise>(fn, seed=...)``.
        fn: the student's function.
        seed: the seed of :attr:`gen`; ``None`` draws a fresh one from the operating system, so every call
            checks new inputs while the notebook's global random state stays untouched.

    Attributes:
        exercise, fn, seed: as given (``seed`` resolved to an int). ``fn`` may be replaced by a checker with a
            wrapper that fixes the non-tensor arguments.
        gen: a CPU ``torch.Generator`` seeded with ``seed``; all inputs come from it.
        n_checks: the number of successful calls so far (reported by :meth:`passed`).

    Raises:
        TypeError: if ``fn`` is not callable.
    """

    def __init__(self, exercise: str, fn: Callable, seed: int | None):
        if not callable(fn):
            raise TypeError(f"check.{exercise} expects your function, got {type(fn).__name__}")
        self.exercise = exercise
        self.fn = fn
        self.seed = random.SystemRandom().randrange(2**63) if seed is None else int(seed)
        self.gen = torch.Generator().manual_seed(self.seed)
        self.n_checks = 0

    def fail(self, msg: str) -> None:
        """Raise ``AssertionError("<exercise>: <msg>")`` followed by the line that reproduces this run."""
        raise AssertionError(f"{self.exercise}: {msg}\n(reproduce with check.{self.exercise}(fn, seed={self.seed}))")

    def randn(self, *shape, dtype=torch.float32) -> torch.Tensor:
        """Standard normal tensor of ``shape`` from :attr:`gen`, drawn in float64 and cast to ``dtype``."""
        return torch.randn(shape, generator=self.gen, dtype=torch.float64).to(dtype)

    def uniform(self, lo: float, hi: float, *shape) -> torch.Tensor:
        """Float32 tensor of ``shape``, uniform on ``[lo, hi)``, drawn in float64 from :attr:`gen`."""
        return (lo + (hi - lo) * torch.rand(shape, generator=self.gen, dtype=torch.float64)).float()

    def call(self, *args: torch.Tensor, what: str = "") -> torch.Tensor:
        """Call the student's function; translate stubs and crashes into AssertionErrors.

        Args:
            *args: tensors passed to :attr:`fn` (other arguments are fixed by wrapping :attr:`fn`).
            what: text appended to the input shapes in the crash message (e.g. ``" and sigma=0.3"``).

        Returns:
            the function's output, a tensor.

        Raises:
            AssertionError: if ``fn`` is a stub (raises ``NotImplementedError``), raises anything else, modifies
                an input in place, or returns something other than a ``torch.Tensor``.
        """
        kept = [a.detach().clone() for a in args]
        try:
            out = self.fn(*args)
        except NotImplementedError:
            raise not_implemented(self.exercise) from None
        except Exception as err:  # the student's code crashed: show the error and the input
            shapes = ", ".join(str(tuple(a.shape)) for a in args)
            raise AssertionError(
                f"{self.exercise}: your function raised {type(err).__name__}: {err}\n"
                f"when called with tensors of shapes {shapes}{what} (see the traceback above this one)."
                f"\n(reproduce with check.{self.exercise}(fn, seed={self.seed}))"
            ) from err
        for i, (a, k) in enumerate(zip(args, kept)):
            if not torch.equal(a.detach(), k):
                self.fail(
                    f"your function modified its input argument #{i + 1} in place "
                    "(e.g. with exp_(), mul_() or +=). Use out-of-place operations."
                )
        if not isinstance(out, torch.Tensor):
            self.fail(
                f"your function should return a torch.Tensor, got {type(out).__name__}. "
                "Use torch operations (torch.exp, torch.logsumexp, ...) rather than numpy or math."
            )
        self.n_checks += 1
        return out

    def passed(self, detail: str) -> None:
        """Print the one success line ``✓ <exercise> passed: <detail> (<n> calls on fresh random inputs)``."""
        print(f"✓ {self.exercise} passed: {detail} ({self.n_checks} calls on fresh random inputs)")


def close(got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float) -> bool:
    """Whether ``got`` has ``want``'s shape, is finite everywhere and matches it within ``rtol``/``atol``.

    ``got`` is detached and compared in float64 (``want`` should be float64 already); the test is
    ``torch.allclose(got, want, rtol, atol)``.
    """
    got = got.detach().to(torch.float64)
    return bool(
        got.shape == want.shape and torch.isfinite(got).all() and torch.allclose(got, want, rtol=rtol, atol=atol)
    )


def fmt(t: torch.Tensor, digits: int = 4) -> str:
    """A tensor of at most two dimensions as a (nested) python list rounded to ``digits`` decimals.

    0-dim and 1-dim tensors give a flat list, 2-dim tensors a list of rows.
    """
    t = t.detach().to(torch.float64)
    return str([round(v, digits) for v in t.reshape(-1).tolist()]) if t.ndim <= 1 else str(
        [[round(v, digits) for v in row] for row in t.tolist()]
    )


def first_bad(got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float) -> int:
    """Index (along dim 0 of ``want``) of the first entry that does not match; 0 if shapes differ."""
    got = got.detach().to(torch.float64)
    if got.shape != want.shape:
        return 0
    bad = ~torch.isclose(got, want, rtol=rtol, atol=atol)
    bad = bad.reshape(bad.shape[0], -1).any(-1) if bad.ndim > 1 else bad
    return int(bad.nonzero()[0, 0]) if bool(bad.any()) else 0


def diagnose(got: torch.Tensor, candidates: dict[str, torch.Tensor], rtol: float, atol: float) -> str | None:
    """The first hint whose candidate ``got`` matches (by :func:`close`), or ``None``.

    Args:
        got: the student's result.
        candidates: ``{hint: what a common mistake computes}``, tried in order; the values are float64
            tensors of the expected shape.
        rtol, atol: tolerances for :func:`close`.
    """
    for hint, cand in candidates.items():
        if close(got, cand, rtol, atol):
            return hint
    return None


def hint_for(got: torch.Tensor, candidates: dict[str, torch.Tensor], rtol: float, atol: float, *, not_finite: str,
             default: str) -> str:
    """The hint for a wrong result: a named mistake (:func:`diagnose`), else ``not_finite`` if ``got`` has an
    inf or NaN entry, else ``default`` (what was expected).

    Args:
        got: the student's result.
        candidates: ``{hint: what a common mistake computes}`` as for :func:`diagnose`.
        rtol, atol: tolerances for :func:`diagnose`.
        not_finite: the hint when no candidate matches and ``got`` is not finite everywhere.
        default: the hint otherwise.
    """
    hint = diagnose(got, candidates, rtol, atol)
    if hint is None and not bool(torch.isfinite(got.detach()).all()):
        hint = not_finite
    return hint or default
