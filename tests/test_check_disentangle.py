"""Tests for the chapter 14 exercise checkers in coursekit.check.disentangle: correct solutions pass, stubs say
"not implemented yet", and plausible mistakes (entropies in nats or bits, unweighted averages, no gap, batch
statistics in AdaIN ...) fail with a message that names the mistake."""

import math

import pytest
import torch

from coursekit import disentangle as dis
from coursekit.check.disentangle import adain, dci_scores, mutual_information_gap

from _helpers import assert_fails, stub


# ----------------------------------------------------------------------------- dci_scores
def dci_ok(r):
    out = dis.dci_from_importance(r)
    return torch.tensor([out["disentanglement"], out["completeness"]])


def dci_by_hand(r):
    def score(m):
        p = m / m.sum(1, keepdim=True)
        h = -(p * torch.log(p.clamp_min(1e-300))).sum(1) / math.log(m.shape[1])
        w = m.sum(1) / m.sum()
        return (w * (1 - h)).sum()

    return torch.stack([score(r), score(r.T)])


def _variant(**kw):
    def fn(r):
        def score(m):
            p = m / m.sum(1, keepdim=True)
            h = -(p * torch.log(p.clamp_min(1e-300))).sum(1)
            if kw.get("base") == "k":
                h = h / math.log(m.shape[1])
            elif kw.get("base") == "bits":
                h = h / math.log(2)
            w = m.sum(1) / m.sum() if kw.get("weighted", True) else torch.full((m.shape[0],), 1 / m.shape[0],
                                                                               dtype=m.dtype)
            return (w * ((1 - h) if kw.get("one_minus", True) else h)).sum()

        d, c = score(r), score(r.T)
        return torch.stack([c, d] if kw.get("swap") else [d, c])

    return fn


@pytest.mark.parametrize("fn", [dci_ok, dci_by_hand])
def test_dci_scores_correct_passes(fn, capsys):
    dci_scores(fn)
    dci_scores(fn, seed=3)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(line.startswith("✓ dci_scores passed") for line in out)


@pytest.mark.parametrize("fn, patterns", [
    (stub, ["not implemented yet"]),
    (_variant(base="nats"), ["natural logarithm", "base K"]),
    (_variant(base="bits"), ["bits"]),
    (_variant(base="k", weighted=False), ["unweighted"]),
    (_variant(base="k", swap=True), ["swapped"]),
    (_variant(base="k", one_minus=False), ["1 minus"]),
    (lambda r: dci_ok(r)[:1], ["shape (2,)"]),
], ids=["stub", "nats", "bits", "unweighted", "swapped", "no-one-minus", "shape"])
def test_dci_scores_mistakes(fn, patterns):
    assert_fails(dci_scores, fn, *patterns, seed=1)


@pytest.mark.parametrize("seed", range(200))
def test_dci_scores_mistakes_fail_for_every_seed(seed):
    for fn, pattern in ((_variant(base="nats"), "natural logarithm"), (_variant(base="k", weighted=False),
                                                                       "unweighted"),
                        (_variant(base="k", swap=True), "swapped"), (_variant(base="bits"), "bits")):
        assert_fails(dci_scores, fn, pattern, seed=seed)


# ----------------------------------------------------------------------------- mutual_information_gap
def mig_ok(codes, factors):
    n_lat, n_fac = codes.shape[1], factors.shape[1]
    mi = torch.tensor([[dis.discrete_mutual_information(codes[:, j], factors[:, k]) for k in range(n_fac)]
                       for j in range(n_lat)], dtype=torch.float64)
    h = torch.stack([torch.distributions.Categorical(probs=torch.bincount(factors[:, k]).double()).entropy()
                     for k in range(n_fac)])
    top = mi.topk(2, dim=0).values
    return ((top[0] - top[1]) / h).mean()


def _mig_wrong(kind):
    def fn(codes, factors):
        n_lat, n_fac = codes.shape[1], factors.shape[1]
        mi = torch.tensor([[dis.discrete_mutual_information(codes[:, j], factors[:, k]) for k in range(n_fac)]
                           for j in range(n_lat)], dtype=torch.float64)
        h = torch.stack([torch.distributions.Categorical(probs=torch.bincount(factors[:, k]).double()).entropy()
                         for k in range(n_fac)])
        if kind == "bits":
            mi = mi / math.log(2)
        top = mi.topk(2, dim=0).values
        if kind == "no_norm":
            return (top[0] - top[1]).mean()
        if kind == "no_gap":
            return (top[0] / h).mean()
        if kind == "per_latent":
            t = mi.topk(2, dim=1)
            return ((t.values[:, 0] - t.values[:, 1]) / h[t.indices[:, 0]]).mean()
        return ((top[0] - top[1]) / h).mean()

    return fn


def test_mutual_information_gap_correct_passes(capsys):
    mutual_information_gap(mig_ok)
    mutual_information_gap(lambda c, f: torch.tensor(dis.mig(c.double(), f, n_bins=5)["mig"]), seed=2)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(line.startswith("✓ mutual_information_gap passed") for line in out)


@pytest.mark.parametrize("fn, patterns", [
    (stub, ["not implemented yet"]),
    (_mig_wrong("no_norm"), ["not normalised", "H(v_k)"]),
    (_mig_wrong("no_gap"), ["SECOND-best"]),
    (_mig_wrong("per_latent"), ["for each FACTOR"]),
    (_mig_wrong("bits"), ["bits"]),
    (lambda c, f: torch.zeros(3), ["one number"]),
], ids=["stub", "no-norm", "no-gap", "per-latent", "bits", "shape"])
def test_mutual_information_gap_mistakes(fn, patterns):
    assert_fails(mutual_information_gap, fn, *patterns, seed=1)


@pytest.mark.parametrize("seed", range(100))
def test_mutual_information_gap_mistakes_fail_for_every_seed(seed):
    for kind, pattern in (("no_norm", "not normalised"), ("no_gap", "SECOND-best"), ("per_latent", "for each FACTOR"),
                          ("bits", "bits")):
        assert_fails(mutual_information_gap, _mig_wrong(kind), pattern, seed=seed)


# ----------------------------------------------------------------------------- adain
def adain_ok(x, scale, bias):
    return dis.adain(x, scale, bias)


def adain_instance_norm(x, scale, bias):
    return torch.nn.functional.instance_norm(x, eps=1e-5) * scale[:, :, None, None] + bias[:, :, None, None]


def _adain_wrong(kind):
    def fn(x, scale, bias):
        dims = {"batch": (0, 2, 3), "layer": (1, 2, 3)}.get(kind, (2, 3))
        mu = x.mean(dims, keepdim=True)
        var = x.var(dims, keepdim=True, unbiased=kind == "unbiased")
        xn = (x - mu) / torch.sqrt(var + 1e-5)
        s, b = scale[:, :, None, None], bias[:, :, None, None]
        if kind == "swap":
            return b * xn + s
        if kind == "none":
            return s * x + b
        return s * xn + b

    return fn


@pytest.mark.parametrize("fn", [adain_ok, adain_instance_norm])
def test_adain_correct_passes(fn, capsys):
    adain(fn)
    adain(fn, seed=5)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(line.startswith("✓ adain passed") for line in out)


@pytest.mark.parametrize("fn, patterns", [
    (stub, ["not implemented yet"]),
    (_adain_wrong("batch"), ["batch normalisation"]),
    (_adain_wrong("layer"), ["layer normalisation"]),
    (_adain_wrong("unbiased"), ["unbiased"]),
    (_adain_wrong("swap"), ["swapped"]),
    (_adain_wrong("none"), ["not normalised"]),
    (lambda x, s, b: adain_ok(x, s, b)[0], ["shape"]),
], ids=["stub", "batch", "layer", "unbiased", "swap", "none", "shape"])
def test_adain_mistakes(fn, patterns):
    assert_fails(adain, fn, *patterns, seed=1)


@pytest.mark.parametrize("seed", range(200))
def test_adain_mistakes_fail_for_every_seed(seed):
    for kind, pattern in (("batch", "batch normalisation"), ("layer", "layer normalisation"), ("unbiased", "unbiased"),
                          ("swap", "swapped"), ("none", "not normalised")):
        assert_fails(adain, _adain_wrong(kind), pattern, seed=seed)
