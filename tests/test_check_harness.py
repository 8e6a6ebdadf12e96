"""Tests for coursekit.check._harness (the context and comparisons every checker uses) and for the package
coursekit.check, which re-exports every checker under the name it had when the checkers were one module."""

import importlib
import pkgutil

import pytest
import torch

import coursekit as ck
from coursekit.check import (
    coupling_forward,
    coupling_inverse,
    ddim_step,
    density_ratio_from_logits,
    digits_bits_per_dim,
    dsm_target,
    gradient_penalty,
    iwae_from_log_weights,
    jsd_discrete,
    kl_std_normal,
    langevin_step,
    mmd2_unbiased,
    mode_counts,
    non_saturating_loss,
    optimal_discriminator,
    posterior_mean_variance,
    q_sample,
    reparameterise,
    score_jacobian_trace,
)
from coursekit.check._harness import Ctx, close, diagnose, first_bad, fmt, hint_for, not_implemented

from _helpers import stub

# The names `coursekit.check` exported when it was one file, by chapter module (04, 05, 06, 07, 08, 09).
EXPORTED_BEFORE = {
    "vae": ["kl_std_normal", "reparameterise", "iwae_from_log_weights"],
    "flows": ["coupling_forward", "coupling_inverse", "digits_bits_per_dim"],
    "gan": ["optimal_discriminator", "non_saturating_loss", "jsd_discrete", "mode_counts"],
    "wasserstein": ["density_ratio_from_logits", "mmd2_unbiased", "gradient_penalty"],
    "diffusion": ["q_sample", "posterior_mean_variance", "ddim_step"],
    "score": ["langevin_step", "dsm_target", "score_jacobian_trace"],
}
ALL_BEFORE = [name for names in EXPORTED_BEFORE.values() for name in names]
FROM_IMPORTED = {  # `from coursekit.check import <name>` for each of them (a missing one fails at collection)
    "kl_std_normal": kl_std_normal, "reparameterise": reparameterise, "iwae_from_log_weights": iwae_from_log_weights,
    "coupling_forward": coupling_forward, "coupling_inverse": coupling_inverse,
    "digits_bits_per_dim": digits_bits_per_dim, "optimal_discriminator": optimal_discriminator,
    "non_saturating_loss": non_saturating_loss, "jsd_discrete": jsd_discrete, "mode_counts": mode_counts,
    "density_ratio_from_logits": density_ratio_from_logits, "mmd2_unbiased": mmd2_unbiased,
    "gradient_penalty": gradient_penalty, "q_sample": q_sample, "posterior_mean_variance": posterior_mean_variance,
    "ddim_step": ddim_step, "langevin_step": langevin_step, "dsm_target": dsm_target,
    "score_jacobian_trace": score_jacobian_trace,
}


# ----------------------------------------------------------------------------- the package's names
@pytest.mark.parametrize("module, name", [(m, n) for m, names in EXPORTED_BEFORE.items() for n in names])
def test_every_checker_is_still_exported_from_its_module(module, name):
    checker = getattr(ck.check, name)
    assert checker is getattr(importlib.import_module(f"coursekit.check.{module}"), name)
    assert name in importlib.import_module(f"coursekit.check.{module}").__all__
    assert FROM_IMPORTED[name] is checker


def test_package_all_is_the_union_of_the_modules():
    """``ck.check.__all__`` is exactly the union of the checker modules' ``__all__`` (every module of the package
    but the harness), without repeats, and still holds every name of the one-file package."""
    assert len(ALL_BEFORE) == 19 and sorted(FROM_IMPORTED) == sorted(ALL_BEFORE)
    modules = sorted(m.name for m in pkgutil.iter_modules(ck.check.__path__) if not m.name.startswith("_"))
    assert set(EXPORTED_BEFORE) <= set(modules)
    union = [n for m in modules for n in importlib.import_module(f"coursekit.check.{m}").__all__]
    assert len(set(union)) == len(union), "two checker modules export the same name"
    assert sorted(ck.check.__all__) == sorted(union)
    assert len(set(ck.check.__all__)) == len(ck.check.__all__)
    for name in union:
        assert callable(getattr(ck.check, name)), name
    for module, names in EXPORTED_BEFORE.items():
        assert set(names) <= set(importlib.import_module(f"coursekit.check.{module}").__all__)


# ----------------------------------------------------------------------------- Ctx
def test_ctx_rejects_a_non_callable():
    with pytest.raises(TypeError, match="check.ex expects your function, got int"):
        Ctx("ex", 3, None)


def test_ctx_inputs_come_from_the_seed_not_the_global_generator():
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    a, b = Ctx("ex", stub, 7), Ctx("ex", stub, 7)
    assert torch.equal(a.randn(4, 2), b.randn(4, 2)) and torch.equal(a.uniform(-1, 1, 5), b.uniform(-1, 1, 5))
    assert torch.equal(torch.rand(3), before)  # the notebook's random state is untouched
    c, d = Ctx("ex", stub, None), Ctx("ex", stub, None)
    assert c.seed != d.seed and not torch.equal(c.randn(8), d.randn(8))


def test_ctx_draws_the_documented_dtypes_and_ranges():
    ctx = Ctx("ex", stub, 0)
    assert ctx.randn(3).dtype == torch.float32 and ctx.randn(3, dtype=torch.float64).dtype == torch.float64
    u = ctx.uniform(2.0, 3.0, 1000)
    assert u.dtype == torch.float32 and u.shape == (1000,) and bool(((u >= 2) & (u < 3)).all())


def test_fail_names_the_exercise_and_the_reproducer():
    with pytest.raises(AssertionError) as info:
        Ctx("my_exercise", stub, 42).fail("wrong sign")
    assert str(info.value) == "my_exercise: wrong sign\n(reproduce with check.my_exercise(fn, seed=42))"


def test_call_turns_a_stub_into_not_implemented():
    with pytest.raises(AssertionError, match="ex: not implemented yet") as info:
        Ctx("ex", stub, 0).call(torch.zeros(2))
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert str(not_implemented("ex")) == str(info.value)


def test_call_reports_a_crash_with_shapes_and_reproducer():
    def crash(x, y):
        raise RuntimeError("boom")

    with pytest.raises(AssertionError) as info:
        Ctx("ex", crash, 3).call(torch.zeros(2, 3), torch.zeros(4), what=" and sigma=0.5")
    msg = str(info.value)
    assert "your function raised RuntimeError: boom" in msg
    assert "shapes (2, 3), (4,) and sigma=0.5" in msg and "check.ex(fn, seed=3)" in msg
    assert isinstance(info.value.__cause__, RuntimeError)


def test_call_catches_in_place_changes_and_non_tensors():
    def in_place(x, y):
        y.mul_(2)
        return x

    with pytest.raises(AssertionError, match="modified its input argument #2 in place"):
        Ctx("ex", in_place, 0).call(torch.ones(2), torch.ones(2))
    with pytest.raises(AssertionError, match="should return a torch.Tensor, got float"):
        Ctx("ex", lambda x: 1.0, 0).call(torch.ones(2))


def test_call_counts_and_passed_reports_the_count(capsys):
    ctx = Ctx("ex", lambda x: x + 1, 0)
    out = ctx.call(torch.ones(2))
    ctx.call(torch.ones(2))
    assert torch.equal(out, torch.full((2,), 2.0)) and ctx.n_checks == 2
    ctx.passed("fine")
    assert capsys.readouterr().out == "✓ ex passed: fine (2 calls on fresh random inputs)\n"


# ----------------------------------------------------------------------------- comparisons
def test_close_needs_the_shape_finite_values_and_the_tolerance():
    want = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert close(torch.tensor([1.0, 2.0 + 1e-7]), want, 1e-6, 0.0)
    assert not close(torch.tensor([1.0, 2.1]), want, 1e-6, 0.0)
    assert not close(torch.tensor([[1.0, 2.0]]), want, 1e-6, 0.0)  # broadcastable is not enough
    assert not close(torch.tensor([1.0, float("nan")]), torch.tensor([1.0, float("nan")], dtype=torch.float64), 1, 1)
    assert close(torch.tensor([1.0, 2.0], requires_grad=True), want, 0.0, 0.0)


def test_fmt_rounds_flat_and_nested():
    assert fmt(torch.tensor(1.234567)) == "[1.2346]"
    assert fmt(torch.tensor([1.0, -2.123456]), 2) == "[1.0, -2.12]"
    assert fmt(torch.tensor([[0.5, 1.0], [2.0, 3.33333]])) == "[[0.5, 1.0], [2.0, 3.3333]]"


def test_first_bad_finds_the_first_failing_row():
    want = torch.zeros(5, 3, dtype=torch.float64)
    got = torch.zeros(5, 3)
    got[3, 2] = 1.0
    got[4, 0] = 1.0
    assert first_bad(got, want, 0.0, 1e-6) == 3
    assert first_bad(torch.zeros(5, 3), want, 0.0, 1e-6) == 0
    assert first_bad(torch.ones(2), want, 0.0, 1e-6) == 0  # shapes differ
    assert first_bad(torch.tensor([0.0, 0.0, 5.0]), torch.zeros(3, dtype=torch.float64), 0.0, 1e-6) == 2


def test_diagnose_returns_the_first_matching_hint():
    want = torch.tensor([1.0, 2.0], dtype=torch.float64)
    cands = {"doubled": 2 * want, "negated": -want, "also negated": -want}
    assert diagnose(-want.float(), cands, 1e-6, 1e-6) == "negated"
    assert diagnose(want.float(), cands, 1e-6, 1e-6) is None


def test_hint_for_prefers_a_named_mistake_then_not_finite_then_default():
    cands = {"negated": torch.tensor([-1.0, -2.0], dtype=torch.float64)}
    kw = {"rtol": 1e-6, "atol": 1e-6, "not_finite": "overflow", "default": "expected x"}
    assert hint_for(torch.tensor([-1.0, -2.0]), cands, **kw) == "negated"
    assert hint_for(torch.tensor([float("inf"), 0.0]), cands, **kw) == "overflow"
    assert hint_for(torch.tensor([3.0, 4.0]), cands, **kw) == "expected x"
