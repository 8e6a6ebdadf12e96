"""Tests for the chapter 13 exercise checkers in coursekit.check.metrics: correct solutions pass, stubs say "not
implemented yet", and plausible mistakes (a missing factor 2 or mean term, separate square roots, a reversed KL, a
uniform marginal, a radius off by one, precision or recall instead of coverage) fail with a message that names the
mistake, for every seed."""

import pytest
import torch

from coursekit.check.metrics import coverage, frechet_distance, inception_score

from _helpers import assert_fails, stub

SEEDS = range(0, 40, 7)


def _sqrtm(s):
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp_min(0).sqrt()) @ v.T


# ----------------------------------------------------------------------------- frechet_distance
def fd_ok(mu1, s1, mu2, s2):
    r = _sqrtm(s1)
    cross = torch.linalg.eigvalsh(r @ s2 @ r).clamp_min(0).sqrt().sum()
    return ((mu1 - mu2) ** 2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * cross


def fd_scipy_style(mu1, s1, mu2, s2):  # the trace of the square root of the (non-symmetric) product, by eigenvalues
    ev = torch.linalg.eigvals(s1 @ s2).real.clamp_min(0)
    return ((mu1 - mu2) ** 2).sum() + torch.trace(s1 + s2) - 2 * ev.sqrt().sum()


def fd_no_two(mu1, s1, mu2, s2):
    r = _sqrtm(s1)
    return ((mu1 - mu2) ** 2).sum() + torch.trace(s1) + torch.trace(s2) - torch.linalg.eigvalsh(r @ s2 @ r).sqrt().sum()


def fd_no_mean(mu1, s1, mu2, s2):
    return fd_ok(mu1, s1, mu2, s2) - ((mu1 - mu2) ** 2).sum()


def fd_separate_roots(mu1, s1, mu2, s2):
    return ((mu1 - mu2) ** 2).sum() + torch.trace(s1 + s2) - 2 * torch.trace(_sqrtm(s1) @ _sqrtm(s2))


def fd_sqrt_trace(mu1, s1, mu2, s2):
    return ((mu1 - mu2) ** 2).sum() + torch.trace(s1 + s2) - 2 * torch.trace(s1 @ s2).sqrt()


@pytest.mark.parametrize("fn", [fd_ok, fd_scipy_style])
def test_frechet_distance_correct_passes(fn, capsys):
    for seed in SEEDS:
        frechet_distance(fn, seed=seed)
    frechet_distance(fn)
    out = capsys.readouterr().out.strip().splitlines()
    assert all(line.startswith("✓ frechet_distance passed") for line in out)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (fd_no_two, ["factor 2"]),
        (fd_no_mean, ["mean term", "missing"]),
        (lambda m1, s1, m2, s2: fd_ok(m1, s1, m2, s2) - ((m1 - m2) ** 2).sum() + (m1 - m2).norm(), ["SQUARED"]),
        (fd_separate_roots, ["commute"]),
        (fd_sqrt_trace, ["matrix function"]),
        (lambda m1, s1, m2, s2: fd_ok(m1, s1, m2, s2).reshape(1, 1).expand(2, 2), ["shape"]),
        (lambda m1, s1, m2, s2: fd_ok(m1, s1, m2, s2) + 1.0, ["expected ||mu1 - mu2||^2"]),
    ],
    ids=["stub", "no-two", "no-mean", "unsquared", "separate-roots", "sqrt-trace", "shape", "other"],
)
def test_frechet_distance_mistakes(fn, patterns, seed):
    assert_fails(frechet_distance, fn, *patterns, seed=seed)


# ----------------------------------------------------------------------------- inception_score
def is_ok(p):
    py = p.mean(0, keepdim=True)
    return torch.exp((torch.xlogy(p, p) - torch.xlogy(p, py)).sum(1).mean())


def is_entropies(p):  # exp(H(y) - H(y|x)), the mutual-information form
    py = p.mean(0)
    return torch.exp(-torch.xlogy(py, py).sum() + torch.xlogy(p, p).sum(1).mean())


def is_naive_log(p):  # 0 * log 0 = nan
    py = p.mean(0, keepdim=True)
    return torch.exp((p * (torch.log(p) - torch.log(py))).sum(1).mean())


@pytest.mark.parametrize("fn", [is_ok, is_entropies])
def test_inception_score_correct_passes(fn, capsys):
    for seed in SEEDS:
        inception_score(fn, seed=seed)
    inception_score(fn)
    out = capsys.readouterr().out.strip().splitlines()
    assert all(line.startswith("✓ inception_score passed") for line in out)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (lambda p: torch.log(is_ok(p)), ["exp of it"]),
        (lambda p: torch.exp((torch.xlogy(p.mean(0, keepdim=True).expand_as(p), p.mean(0, keepdim=True))
                              - p.mean(0, keepdim=True) * torch.log(p.clamp_min(1e-300))).sum(1).mean()),
         ["reversed"]),
        (lambda p: torch.exp((torch.xlogy(p, p) - torch.xlogy(p, p.mean(0, keepdim=True))).mean(1).mean()),
         ["sum the KL over the classes"]),
        (lambda p: torch.exp((torch.xlogy(p, p) - p * torch.log(torch.tensor(1.0 / p.shape[1]))).sum(1).mean()),
         ["MARGINAL"]),
        (lambda p: torch.exp(-torch.xlogy(p.mean(0), p.mean(0)).sum()), ["conditional entropy"]),
        (is_naive_log, ["0 log 0"]),
        (lambda p: is_ok(p).expand(3), ["shape"]),
    ],
    ids=["stub", "no-exp", "reversed", "class-mean", "uniform-marginal", "marginal-entropy", "nan", "shape"],
)
def test_inception_score_mistakes(fn, patterns, seed):
    assert_fails(inception_score, fn, *patterns, seed=seed)


# ----------------------------------------------------------------------------- coverage
def cov_ok(real, fake, k):
    radii = torch.cdist(real, real).kthvalue(k + 1, dim=1).values
    return (torch.cdist(real, fake).min(1).values <= radii).double().mean()


def cov_loop(real, fake, k):  # one real sample at a time, sorted distances without the point itself
    hits = []
    for i in range(real.shape[0]):
        others = torch.cat([real[:i], real[i + 1:]])
        r = (others - real[i]).norm(dim=1).sort().values[k - 1]
        hits.append(bool(((fake - real[i]).norm(dim=1) <= r).any()))
    return torch.tensor(hits, dtype=torch.float64).mean()


def cov_with_radius_index(offset):
    def fn(real, fake, k):
        radii = torch.cdist(real, real).sort(dim=1).values[:, k + offset]
        return (torch.cdist(real, fake).min(1).values <= radii).double().mean()
    return fn


def recall_like(real, fake, k):
    radii = torch.cdist(fake, fake).kthvalue(k + 1, dim=1).values
    return (torch.cdist(real, fake) <= radii[None, :]).any(1).double().mean()


def precision_like(real, fake, k):
    radii = torch.cdist(real, real).kthvalue(k + 1, dim=1).values
    return (torch.cdist(real, fake) <= radii[:, None]).any(0).double().mean()


def density_like(real, fake, k):
    radii = torch.cdist(real, real).kthvalue(k + 1, dim=1).values
    return (torch.cdist(real, fake) <= radii[:, None]).sum(0).double().mean() / k


@pytest.mark.parametrize("fn", [cov_ok, cov_loop])
def test_coverage_correct_passes(fn, capsys):
    for seed in SEEDS:
        coverage(fn, seed=seed)
    coverage(fn)
    out = capsys.readouterr().out.strip().splitlines()
    assert all(line.startswith("✓ coverage passed") for line in out)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (cov_with_radius_index(-1), ["(k-1)-th"]),
        (cov_with_radius_index(+1), ["one neighbour too far"]),
        (recall_like, ["recall"]),
        (precision_like, ["precision"]),
        (density_like, ["density"]),
        (lambda r, f, k: (torch.cdist(r, f).min(1).values <= 1.0).double(), ["shape"]),
    ],
    ids=["stub", "radius-minus-one", "radius-plus-one", "recall", "precision", "density", "shape"],
)
def test_coverage_mistakes(fn, patterns, seed):
    assert_fails(coverage, fn, *patterns, seed=seed)


def test_checkers_are_reexported():
    import coursekit as ck

    assert ck.check.frechet_distance is frechet_distance
    assert ck.check.inception_score is inception_score
    assert ck.check.coverage is coverage
