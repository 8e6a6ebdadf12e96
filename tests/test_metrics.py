"""Tests for coursekit.metrics.

Every sample-quality metric is compared with an independent implementation on *identical* features:
torchmetrics (FID, KID, IS, fed through a custom feature module that returns its input), the ``prdc``
package (precision/recall/density/coverage) and the pytorch-fid formula written out with
``scipy.linalg.sqrtm``; plus closed forms and the error cases.
"""

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

import coursekit as ck
from coursekit import metrics as M

RTOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """Keep the classifier's disk cache out of the user's home directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COURSEKIT_CACHE_DIR", str(tmp_path_factory.mktemp("ckcache")))
        yield


@pytest.fixture(scope="module")
def clf():
    return M.get_digits_classifier(seed=0)


def _features(n=300, d=8, seed=0, shift=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d)) / math.sqrt(d)
    return rng.normal(size=(n, d)) @ a * scale + shift


def _random_cov(d, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


class _Identity(torch.nn.Module):
    """A torchmetrics 'feature extractor' that returns its input, so both sides see identical features."""

    def __init__(self, d):
        super().__init__()
        self.num_features = d

    def forward(self, x):
        return x


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ------------------------------------------------------------------------------------------------
# Likelihood units
# ------------------------------------------------------------------------------------------------


def test_nats_to_bits_per_dim():
    assert M.nats_to_bits_per_dim(64 * math.log(2) * 3.0, 64) == pytest.approx(3.0)
    t = torch.tensor([math.log(2) * 10.0, 0.0])
    assert torch.allclose(M.nats_to_bits_per_dim(t, 10), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError):
        M.nats_to_bits_per_dim(1.0, 0)
    with pytest.raises(TypeError):
        M.nats_to_bits_per_dim(1.0, 2.5)


def test_dequantize_correction_values():
    assert M.dequantize_nll_correction(3, 256) == pytest.approx(3 * math.log(256))
    assert M.dequantize_nll_correction(3, 256, data_range=2.0) == pytest.approx(3 * math.log(128))
    # 8-bit images in [0, 1]: +8 bits/dim
    assert M.discrete_nll_to_bits_per_dim(0.0, 784, 256) == pytest.approx(8.0)
    with pytest.raises(ValueError):
        M.dequantize_nll_correction(3, 1)
    with pytest.raises(ValueError):
        M.dequantize_nll_correction(3, 4, data_range=0.0)


def test_dequantization_identity_is_exact_for_piecewise_constant_density():
    """A continuous density constant on each bin, p(y) = B^D P(x), gives -log p(y) + D log B = -log P(x)."""
    levels, dim = 5, 2
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(levels**dim)).reshape(levels, levels)  # discrete distribution on the grid
    x = torch.tensor([[0, 4], [2, 3], [1, 1]])
    y = M.uniform_dequantize(x, levels, generator=torch.Generator().manual_seed(0))
    bins = torch.floor(y * levels).long()
    assert torch.equal(bins, x)  # dequantised points stay in their bin
    log_p_cont = np.log(levels**dim * P[bins[:, 0], bins[:, 1]])
    nll_cont = -log_p_cont
    nll_discrete = -np.log(P[x[:, 0], x[:, 1]])
    np.testing.assert_allclose(nll_cont + M.dequantize_nll_correction(dim, levels), nll_discrete, rtol=1e-12)
    bpd = M.discrete_nll_to_bits_per_dim(nll_cont, dim, levels)
    np.testing.assert_allclose(bpd, nll_discrete / (dim * math.log(2)), rtol=1e-12)


def test_dequantization_gives_an_upper_bound_for_any_density():
    """Jensen: E_u[-log p((x+u)/B)] + log B >= -log P(x) for a non-constant density (1-D, quadrature)."""
    levels = 4
    y = (np.arange(200_000) + 0.5) / 200_000  # midpoint rule on [0, 1]
    p = 0.5 + y**2 * 1.5  # integrates to 1 on [0, 1]
    for x in range(levels):
        inside = (y >= x / levels) & (y < (x + 1) / levels)
        P_x = p[inside].mean() / levels  # integral of p over the bin
        expected_nll_cont = -np.log(p[inside]).mean()
        bound = expected_nll_cont + M.dequantize_nll_correction(1, levels)
        assert bound >= -np.log(P_x) - 1e-9


def test_uniform_dequantize_errors():
    with pytest.raises(ValueError, match="integers"):
        M.uniform_dequantize(torch.tensor([0.5]), 4)
    with pytest.raises(ValueError):
        M.uniform_dequantize(torch.tensor([4]), 4)
    with pytest.raises(TypeError):
        M.uniform_dequantize(np.array([1]), 4)


# ------------------------------------------------------------------------------------------------
# Frechet distance
# ------------------------------------------------------------------------------------------------


def _pytorch_fid_formula(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's calculate_frechet_distance, written out (pytorch-fid itself imports torchvision)."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


@pytest.mark.parametrize("d", [1, 5, 32])
def test_frechet_distance_matches_sqrtm_formula(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_cov(d, 1), _random_cov(d, 2)
    ours = M.frechet_distance(mu1, s1, mu2, s2)
    ref = _pytorch_fid_formula(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, rel=RTOL)
    # symmetric in its arguments, accepts tensors
    assert M.frechet_distance(torch.tensor(mu2), torch.tensor(s2), torch.tensor(mu1), torch.tensor(s1)) \
        == pytest.approx(ours, rel=RTOL)


def test_fid_from_features_matches_torchmetrics():
    from torchmetrics.image.fid import FrechetInceptionDistance

    d = 16
    f_real = _features(400, d, seed=1)
    f_fake = _features(300, d, seed=2, shift=0.3, scale=1.2)
    fid = _quiet(FrechetInceptionDistance, feature=_Identity(d), normalize=True)
    fid.update(torch.tensor(f_real), real=True)
    fid.update(torch.tensor(f_fake), real=False)
    ref = float(fid.compute())
    ours = M.frechet_distance_from_features(f_real, f_fake)
    assert ours == pytest.approx(ref, rel=RTOL)
    mu1, mu2 = f_real.mean(0), f_fake.mean(0)
    s1, s2 = np.cov(f_real, rowvar=False), np.cov(f_fake, rowvar=False)
    assert ours == pytest.approx(_pytorch_fid_formula(mu1, s1, mu2, s2), rel=RTOL)


def test_frechet_closed_forms():
    d = 6
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s = _random_cov(d, 3)
    assert M.frechet_distance(mu1, s, mu1, s) == pytest.approx(0.0, abs=1e-9)  # equal Gaussians
    assert M.frechet_distance(mu1, s, mu2, s) == pytest.approx(float(((mu1 - mu2) ** 2).sum()), rel=1e-9)
    a, b = rng.uniform(0.1, 2, size=d), rng.uniform(0.1, 2, size=d)  # diagonal: sum (sqrt a - sqrt b)^2
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert M.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_frechet_singular_covariance_is_handled():
    """Rank-deficient covariances (dead features) give the continuous extension, not NaN/complex."""
    a = np.array([1.0, 2.0, 0.0, 0.0])
    b = np.array([0.5, 0.0, 3.0, 0.0])
    mu = np.zeros(4)
    expected = ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert M.frechet_distance(mu, np.diag(a), mu, np.diag(b)) == pytest.approx(expected, rel=1e-9)
    # a random rank-2 covariance in 5-D against itself: 0
    v = np.random.default_rng(0).normal(size=(5, 2))
    s = v @ v.T
    assert M.frechet_distance(np.zeros(5), s, np.zeros(5), s) == pytest.approx(0.0, abs=1e-7)


def test_frechet_errors():
    s = np.eye(3)
    with pytest.raises(ValueError, match="same size"):
        M.frechet_distance(np.zeros(3), s, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        M.frechet_distance(np.zeros(3), np.eye(4), np.zeros(3), s)
    with pytest.raises(ValueError, match="NaN"):
        M.frechet_distance(np.array([0.0, np.nan, 0.0]), s, np.zeros(3), s)
    with pytest.raises(ValueError, match="symmetric"):
        M.frechet_distance(np.zeros(3), np.triu(np.ones((3, 3))), np.zeros(3), s)
    with pytest.raises(ValueError, match="semi-definite"):
        M.frechet_distance(np.zeros(3), -np.eye(3), np.zeros(3), s)
    with pytest.raises(ValueError, match="N > D"):
        M.frechet_distance_from_features(_features(8, 8), _features(100, 8))
    with pytest.raises(ValueError, match="same feature size"):
        M.frechet_distance_from_features(_features(50, 4), _features(50, 5))
    f = _features(50, 4)
    f[3, 1] = np.inf
    with pytest.raises(ValueError, match="Inf"):
        M.frechet_distance_from_features(f, _features(50, 4))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        M.frechet_distance_from_features(np.zeros(10), np.zeros(10))


# ------------------------------------------------------------------------------------------------
# KID
# ------------------------------------------------------------------------------------------------


def test_kid_mmd2_matches_torchmetrics_kid_on_the_full_sets():
    from torchmetrics.image.kid import KernelInceptionDistance, poly_mmd

    d, n = 12, 120
    f1, f2 = _features(n, d, seed=4), _features(n, d, seed=5, shift=0.2)
    # subset_size = n: every "random subset" is the whole set, so torchmetrics is deterministic.
    kid = _quiet(KernelInceptionDistance, feature=_Identity(d), subsets=3, subset_size=n)
    kid.update(torch.tensor(f1), real=True)
    kid.update(torch.tensor(f2), real=False)
    ref_mean, ref_std = (float(v) for v in kid.compute())
    ours = M._kid_mmd2_unbiased(f1, f2)
    assert ours == pytest.approx(ref_mean, rel=RTOL)
    mean, std = M.kernel_distance(f1, f2, subsets=3, subset_size=n)
    assert mean == pytest.approx(ref_mean, rel=RTOL)
    assert std == pytest.approx(0.0, abs=1e-12) and ref_std == pytest.approx(0.0, abs=1e-12)
    # other kernel parameters
    ref = float(poly_mmd(torch.tensor(f1), torch.tensor(f2), degree=2, gamma=0.3, coef=0.5))
    assert M._kid_mmd2_unbiased(f1, f2, degree=2, gamma=0.3, coef0=0.5) == pytest.approx(ref, rel=RTOL)


def test_kid_mmd2_unequal_sizes_matches_naive_double_sum():
    f1, f2 = _features(7, 3, seed=6), _features(5, 3, seed=7, shift=1.0)

    def k(a, b):
        return (a @ b / 3 + 1.0) ** 3

    xx = sum(k(f1[i], f1[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(f2[i], f2[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    xy = sum(k(f1[i], f2[j]) for i in range(7) for j in range(5)) / (7 * 5)
    assert M._kid_mmd2_unbiased(f1, f2) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_kernel_distance_subsets():
    f1, f2 = _features(200, 6, seed=8), _features(150, 6, seed=9, shift=0.5)
    a = M.kernel_distance(f1, f2, subsets=50, subset_size=50, seed=1)
    assert a == M.kernel_distance(f1, f2, subsets=50, subset_size=50, seed=1)  # deterministic
    assert a != M.kernel_distance(f1, f2, subsets=50, subset_size=50, seed=2)
    full = M._kid_mmd2_unbiased(f1, f2)
    mean, std = a
    assert std > 0 and abs(mean - full) < 4 * std / math.sqrt(50)  # unbiased: subset mean near full value
    # the per-subset values are exactly torchmetrics' poly_mmd on the same subsets
    from torchmetrics.image.kid import poly_mmd

    rng = np.random.default_rng(1)
    vals = []
    for _ in range(50):
        i = rng.choice(200, 50, replace=False)
        j = rng.choice(150, 50, replace=False)
        vals.append(float(poly_mmd(torch.tensor(f1[i]), torch.tensor(f2[j]))))
    assert mean == pytest.approx(np.mean(vals), rel=RTOL)
    assert std == pytest.approx(np.std(vals), rel=RTOL)


def test_metrics_mmd2_unbiased_is_the_course_gaussian_mmd():
    """The public name is the one Gaussian-kernel MMD^2 of chapter 07; KID's polynomial estimator is private."""
    from coursekit import wasserstein
    from coursekit.metrics import mmd2_unbiased

    assert M.mmd2_unbiased is mmd2_unbiased is wasserstein.mmd2_unbiased
    assert "mmd2_unbiased" not in M.__all__
    with pytest.raises(AttributeError, match="coursekit.metrics"):
        _ = M.no_such_metric


def test_kernel_distance_errors():
    with pytest.raises(ValueError, match="subset_size"):
        M.kernel_distance(_features(50, 4), _features(80, 4), subset_size=60)
    with pytest.raises(ValueError, match="same feature size"):
        M._kid_mmd2_unbiased(_features(50, 4), _features(50, 3))
    with pytest.raises(ValueError, match="at least 2"):
        M._kid_mmd2_unbiased(_features(1, 4), _features(50, 4))
    with pytest.raises(ValueError, match="gamma"):
        M._kid_mmd2_unbiased(_features(5, 4), _features(5, 4), gamma=-1.0)


# ------------------------------------------------------------------------------------------------
# Inception Score
# ------------------------------------------------------------------------------------------------


def test_inception_score_matches_torchmetrics():
    from torchmetrics.image.inception import InceptionScore

    rng = np.random.default_rng(10)
    n, c, splits = 200, 10, 10
    logits = rng.normal(size=(n, c)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    metric = _quiet(InceptionScore, feature=_Identity(c), splits=splits)
    metric.update(torch.tensor(np.log(probs)))  # its softmax(log p) = p
    torch.manual_seed(123)
    ref_mean, ref_std = (float(v) for v in metric.compute())
    torch.manual_seed(123)
    perm = torch.randperm(n).numpy()  # the shuffle torchmetrics applied
    mean, std = M.inception_score(probs[perm], splits=splits)
    assert mean == pytest.approx(ref_mean, rel=RTOL)
    # torchmetrics reports the unbiased std (ddof=1); the original IS code (and coursekit) uses ddof=0
    assert std * math.sqrt(splits / (splits - 1)) == pytest.approx(ref_std, rel=RTOL)


def test_inception_score_closed_forms():
    c = 10
    one_hot = np.eye(c)[np.arange(100) % c]  # confident and balanced: IS = C
    assert M.inception_score(one_hot, splits=5)[0] == pytest.approx(c)
    same = np.tile(np.random.default_rng(0).dirichlet(np.ones(c)), (100, 1))  # no diversity: IS = 1
    assert M.inception_score(same, splits=5) == pytest.approx((1.0, 0.0))
    with pytest.raises(ValueError, match="probabilities"):
        M.inception_score(np.random.default_rng(0).normal(size=(40, c)), splits=2)
    with pytest.raises(ValueError, match="2 samples per split"):
        M.inception_score(one_hot[:15], splits=10)


# ------------------------------------------------------------------------------------------------
# Precision, recall, density, coverage
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 5])
def test_prdc_matches_prdc_package(k, capsys):
    from prdc import compute_prdc

    real = _features(200, 10, seed=11)
    fake = _features(150, 10, seed=12, shift=0.4, scale=0.8)
    ref = compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
    ours = M.prdc(real, fake, k=k)
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(float(ref[key]), rel=RTOL, abs=1e-12), key
    assert M.precision_recall(real, fake, k=k) == (ours["precision"], ours["recall"])
    assert M.density_coverage(real, fake, k=k) == (ours["density"], ours["coverage"])


def test_prdc_properties_and_errors():
    real = _features(100, 4, seed=13)
    same = M.prdc(real, real, k=3)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    far = M.prdc(real, real + 100.0, k=3)
    assert far == {"precision": 0.0, "density": 0.0, "coverage": 0.0, "recall": 0.0}
    with pytest.raises(ValueError, match="more than k=3"):
        M.prdc(real, real[:3], k=3)
    with pytest.raises(ValueError, match="same feature size"):
        M.prdc(real, _features(100, 5), k=3)
    with pytest.raises(ValueError, match="NaN"):
        M.precision_recall(real, np.full((10, 4), np.nan))


# ------------------------------------------------------------------------------------------------
# The domain classifier
# ------------------------------------------------------------------------------------------------


def test_classifier_accuracy(clf):
    print("classifier accuracy:", clf.accuracy)
    assert clf.accuracy["test"] >= 0.97
    assert clf.accuracy["val"] >= 0.95
    assert clf.accuracy["test_binarized"] >= 0.92
    assert clf.accuracy["val_binarized"] >= 0.92


def test_classifier_outputs(clf):
    x, _ = ck.data.load_digits("test")
    f = M.features(x)
    p = M.probabilities(x)
    assert f.shape == (250, M.FEATURE_DIM) and f.dtype == torch.float32
    assert p.shape == (250, 10)
    assert torch.allclose(p.sum(1), torch.ones(250), atol=1e-5)
    assert torch.equal(clf.features(x.reshape(-1, 1, 8, 8)), f)
    assert torch.equal(clf.features(x.reshape(-1, 8, 8)), f)
    assert torch.equal(clf.features(x.numpy()), f)
    # standardised on the grey-scale + binarised training split the classifier was trained on
    xtr = torch.cat([ck.data.load_digits("train", binarize=b)[0] for b in (False, True)])
    ftr = clf.features(xtr).double()
    assert torch.allclose(ftr.mean(0), torch.zeros(M.FEATURE_DIM, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(ftr.std(0), torch.ones(M.FEATURE_DIM, dtype=torch.float64), atol=1e-4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        clf.features(x * 3)
    with pytest.raises(ValueError, match="NaN"):
        clf.features(torch.full((2, 64), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        clf.features(torch.zeros(2, 28 * 28))


def test_classifier_deterministic_and_rng_neutral(monkeypatch):
    """Same seed -> bit-identical weights; the caller's global torch RNG is untouched.
    (A shortened run of the same recipe keeps the test fast.)"""
    monkeypatch.setattr(M, "_CLASSIFIER_STEPS", 25)
    state = torch.get_rng_state()
    a = M.get_digits_classifier(seed=3, cache=False)
    assert torch.equal(torch.get_rng_state(), state)  # training does not consume the caller's RNG
    b = M.get_digits_classifier(seed=3, cache=False)
    c = M.get_digits_classifier(seed=4, cache=False)
    for key, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[key]), key
    assert not torch.equal(a.head.weight, c.head.weight)
    assert 3 not in M._CLASSIFIERS  # cache=False keeps nothing


def test_classifier_disk_cache(clf, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSEKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(M, "_CLASSIFIERS", {})
    monkeypatch.setattr(M, "_train_digits_classifier", lambda seed: clf)  # no retraining here
    first = M.get_digits_classifier(seed=0)
    files = list(tmp_path.glob("digits_classifier_*.pt"))
    assert len(files) == 1
    monkeypatch.setattr(M, "_CLASSIFIERS", {})

    def fail(seed):
        raise AssertionError("should have loaded the cached weights")

    monkeypatch.setattr(M, "_train_digits_classifier", fail)
    loaded = M.get_digits_classifier(seed=0)
    assert loaded is not first
    for v1, v2 in zip(first.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(v1, v2)
    torch.load(files[0], weights_only=True)  # a plain state_dict


# ------------------------------------------------------------------------------------------------
# Real-data floor and sample-size dependence
# ------------------------------------------------------------------------------------------------


def test_real_data_floor(clf):
    floor = M.real_data_floor(n=250, seed=0)
    print("floor:", floor)
    for key in ("fid", "kid_mean", "kid_std", "precision", "recall", "density", "coverage", "is_mean"):
        assert math.isfinite(floor[key]), key
    assert 0 < floor["fid"] < 3
    assert abs(floor["kid_mean"]) < 0.2
    assert floor["precision"] > 0.8 and floor["recall"] > 0.8 and floor["coverage"] > 0.8
    assert 7 < floor["is_mean"] <= 10
    assert floor == M.real_data_floor(n=250, seed=0)  # deterministic
    b = M.real_data_floor(n=250, seed=0, binarize=True)
    assert b["binarize"] is True and b["fid"] != floor["fid"]
    # a bad "generator" (blank images) is far above the floor
    bad = M.sample_quality(ck.data.load_digits("test")[0], torch.zeros(250, 64))
    assert bad["fid"] > 20 * floor["fid"] and bad["precision"] < 0.2
    with pytest.raises(ValueError, match="exceeds"):
        M.real_data_floor(n=300)


def test_fid_shrinks_with_sample_size(clf):
    rows = M.fid_vs_sample_size(ns=(50, 250, 500), repeats=3)
    fids = [r["fid_mean"] for r in rows]
    assert fids[0] > fids[1] > fids[2] > 0
    assert all(abs(r["kid_mean"]) < 0.1 for r in rows)  # KID is unbiased: no trend with n
    with pytest.raises(ValueError, match="< n <="):
        M.fid_vs_sample_size(ns=(20,))


# ------------------------------------------------------------------------------------------------
# Frechet distance: POT, the optimal coupling, and the Gelbrich lower bound on W2^2
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 3, 12])
def test_frechet_distance_matches_pot_bures_wasserstein(d):
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(20 + d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_cov(d, 21), _random_cov(d, 22)
    w = float(ot.gaussian.bures_wasserstein_distance(mu1, mu2, s1, s2))
    assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(w**2, rel=1e-6)


def test_frechet_distance_is_attained_by_the_linear_optimal_map():
    """Y = mu2 + T (X - mu1) with T = S1^-1/2 (S1^1/2 S2 S1^1/2)^1/2 S1^-1/2 pushes N(mu1, S1) to N(mu2, S2), and
    E ||X - Y||^2 (Monte Carlo, 200k draws) equals the closed form."""
    d = 4
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_cov(d, 4), _random_cov(d, 5)
    r = np.real(scipy.linalg.sqrtm(s1))
    r_inv = np.linalg.inv(r)
    t = r_inv @ np.real(scipy.linalg.sqrtm(r @ s2 @ r)) @ r_inv
    np.testing.assert_allclose(t @ s1 @ t.T, s2, atol=1e-10)  # the push-forward has covariance S2
    x = rng.multivariate_normal(mu1, s1, size=200_000)
    y = mu2 + (x - mu1) @ t.T
    mc = ((x - y) ** 2).sum(1)
    exact = M.frechet_distance(mu1, s1, mu2, s2)
    assert abs(mc.mean() - exact) < 4 * mc.std() / math.sqrt(len(mc))


def test_frechet_distance_of_moments_bounds_the_exact_w2_of_point_clouds():
    """Gelbrich's bound: for any two distributions, the Frechet distance of their means and covariances is at most
    W2^2; here between empirical distributions (covariances with ddof=0), W2^2 exact by POT's network simplex."""
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(6)
    for trial in range(5):
        x = rng.exponential(size=(40, 3))
        y = rng.normal(size=(30, 3)) ** 3 + trial
        w2 = ot.emd2(np.full(40, 1 / 40), np.full(30, 1 / 30), ot.dist(x, y))  # squared Euclidean cost
        fd = M.frechet_distance(x.mean(0), np.cov(x, rowvar=False, ddof=0), y.mean(0), np.cov(y, rowvar=False, ddof=0))
        assert fd <= w2 + 1e-9


# ------------------------------------------------------------------------------------------------
# FID extrapolated to infinite n (Chong & Forsyth 2020)
# ------------------------------------------------------------------------------------------------


def test_fid_infinity_removes_the_small_sample_bias_on_gaussians():
    """Averaged over independent fake sets (the extrapolation removes the bias, not the fake set's own sampling
    noise), FID_infinity is much closer to the exact value than FID at the full size."""
    d = 8
    rng = np.random.default_rng(7)
    scale = np.linspace(0.8, 1.3, d)
    real = rng.normal(size=(20_000, d))  # nearly the population statistics
    exact = M.frechet_distance(np.zeros(d), np.eye(d), np.full(d, 0.1), np.diag(scale**2))
    ns = (100, 200, 400, 600, 800, 1000)
    runs = [M.fid_infinity(real, rng.normal(size=(1000, d)) * scale + 0.1, ns=ns, repeats=4, seed=s) for s in range(12)]
    fid_inf = np.mean([r["fid_infinity"] for r in runs])
    fid_n = np.mean([r["fid"][-1] for r in runs])  # all 1000 fake samples
    assert fid_n > exact and all(r["slope"] > 0 for r in runs)  # biased upwards, shrinking with n
    assert abs(fid_inf - exact) < 0.3 * (fid_n - exact)
    out = runs[0]
    assert out["ns"] == list(ns) and len(out["fid"]) == 6
    # the fitted line passes through the points it was fitted to: FID_n = a + b / n
    pred = out["fid_infinity"] + out["slope"] / np.asarray(out["ns"])
    np.testing.assert_allclose(pred, out["fid"], atol=0.03)
    fake = rng.normal(size=(300, d))
    assert M.fid_infinity(real, fake, repeats=2) == M.fid_infinity(real, fake, repeats=2)  # deterministic


def test_fid_infinity_errors():
    f = _features(100, 4)
    with pytest.raises(ValueError, match="ns"):
        M.fid_infinity(f, f, ns=(50,))
    with pytest.raises(ValueError, match="ns"):
        M.fid_infinity(f, f, ns=(3, 50))
    with pytest.raises(ValueError, match="ns"):
        M.fid_infinity(f, f, ns=(50, 101))
    with pytest.raises(ValueError, match="N > D"):
        M.fid_infinity(f[:4], f)
    with pytest.raises(ValueError, match="same feature size"):
        M.fid_infinity(f, _features(100, 5))


# ------------------------------------------------------------------------------------------------
# Expected coverage and density of identical distributions
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_real, n_fake, k", [(40, 40, 3), (30, 60, 1), (50, 20, 5)])
def test_expected_coverage_matches_simulation(n_real, n_fake, k):
    """Monte Carlo over 2000 pairs of sets from one Gaussian (the metric itself is tested against the prdc package
    above)."""
    rng = np.random.default_rng(n_real + n_fake + k)
    cov, dens = [], []
    for _ in range(2000):
        d, c = M.density_coverage(rng.normal(size=(n_real, 4)), rng.normal(size=(n_fake, 4)), k=k)
        cov.append(c)
        dens.append(d)
    se = np.std(cov) / math.sqrt(len(cov))
    assert abs(np.mean(cov) - M.expected_coverage(n_real, n_fake, k)) < 4 * se
    assert abs(np.mean(dens) - 1.0) < 4 * np.std(dens) / math.sqrt(len(dens))  # E[density] = 1 exactly


def test_expected_coverage_closed_forms_and_errors():
    from math import comb

    for n, m, k in [(10, 10, 3), (7, 100, 2), (250, 250, 3)]:
        assert M.expected_coverage(n, m, k) == pytest.approx(1 - comb(n - 1, k) / comb(m + n - 1, k), rel=1e-12)
    assert M.expected_coverage(10**6, 10**6, 3) == pytest.approx(1 - 0.5**3, abs=1e-5)  # the large-n limit
    with pytest.raises(ValueError, match="exceed k"):
        M.expected_coverage(3, 10, 3)
    with pytest.raises(TypeError):
        M.expected_coverage(10.0, 10, 3)


# ------------------------------------------------------------------------------------------------
# Nearest neighbours and memorisation
# ------------------------------------------------------------------------------------------------


def test_nearest_neighbour_distances_match_scikit_learn():
    from sklearn.neighbors import NearestNeighbors

    x, ref = _features(30, 5, seed=31), _features(50, 5, seed=32)
    want = NearestNeighbors(n_neighbors=1).fit(ref).kneighbors(x)[0][:, 0]
    np.testing.assert_allclose(M.nearest_neighbour_distances(x, ref), want, rtol=1e-12)
    np.testing.assert_allclose(M.nearest_neighbour_distances(torch.tensor(ref[:7]), ref), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="same feature size"):
        M.nearest_neighbour_distances(x, _features(50, 4))


def test_memorisation_check_catches_a_copier_and_passes_new_data():
    x_train, _ = ck.data.load_digits("train")
    x_test, _ = ck.data.load_digits("test")
    x_val, _ = ck.data.load_digits("val")
    copier = M.memorisation_check(x_train[:250], x_train, x_test, quantile=0.05)
    assert copier["copy_fraction"] == 1.0 and copier["exact_copies"] == 1.0 and copier["median_ratio"] == 0.0
    fresh = M.memorisation_check(x_val, x_train, x_test, quantile=0.05)  # held-out digits play the samples
    assert fresh["exact_copies"] == 0.0 and fresh["copy_fraction"] < 0.15 and 0.8 < fresh["median_ratio"] < 1.25
    assert fresh["held_out_fraction"] == pytest.approx(0.05, abs=0.01)
    with pytest.raises(ValueError, match="quantile"):
        M.memorisation_check(x_val, x_train, x_test, quantile=1.0)
    with pytest.raises(ValueError, match="same feature size"):
        M.memorisation_check(x_val, x_train, x_test[:, :10])


# ------------------------------------------------------------------------------------------------
# Sliced Wasserstein distance: scipy and POT
# ------------------------------------------------------------------------------------------------


def test_sliced_wasserstein_in_one_dimension_is_the_exact_wasserstein_distance():
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(40)
    for n, m in [(37, 53), (20, 20), (1, 9)]:
        x, y = rng.normal(size=n), rng.gamma(2.0, size=m)
        assert M.sliced_wasserstein(x[:, None], y[:, None], p=1, n_projections=3) == pytest.approx(
            wasserstein_distance(x, y), rel=1e-10)
    x = rng.normal(size=(50, 1))
    assert M.sliced_wasserstein(x, x + 0.7, p=2) == pytest.approx(0.7, rel=1e-10)  # a shift moves every quantile


def test_sliced_wasserstein_matches_pot():
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(41)
    x, y = rng.normal(size=(37, 1)).ravel(), rng.normal(1, 2, size=(53, 1)).ravel()
    assert M.sliced_wasserstein(x[:, None], y[:, None], p=2, n_projections=1) == pytest.approx(
        float(ot.wasserstein_1d(x, y, p=2)) ** 0.5, rel=1e-10)
    x, y = rng.normal(size=(40, 6)), rng.standard_t(3, size=(60, 6)) + 0.4
    theta = rng.normal(size=(6, 25))
    for p in (1, 2, 3):
        ours = M.sliced_wasserstein(x, y, projections=theta, p=p)
        ref = float(ot.sliced_wasserstein_distance(x, y, projections=theta / np.linalg.norm(theta, axis=0), p=p))
        assert ours == pytest.approx(ref, rel=1e-9), p
    # random directions: close to POT's own estimate with many projections
    ours = M.sliced_wasserstein(x, y, n_projections=4000, seed=1)
    ref = float(ot.sliced_wasserstein_distance(x, y, n_projections=4000, seed=2))
    assert ours == pytest.approx(ref, rel=0.05)


def test_sliced_wasserstein_properties_and_errors():
    x, y = _features(40, 5, seed=42), _features(30, 5, seed=43, shift=1.0)
    assert M.sliced_wasserstein(x, x) == pytest.approx(0.0, abs=1e-12)
    assert M.sliced_wasserstein(x, y, seed=3) == pytest.approx(M.sliced_wasserstein(y, x, seed=3), rel=1e-12)
    with pytest.raises(ValueError, match="p must be >= 1"):
        M.sliced_wasserstein(x, y, p=0.5)
    with pytest.raises(ValueError, match="projections"):
        M.sliced_wasserstein(x, y, projections=np.zeros((5, 2)))
    with pytest.raises(ValueError, match="projections"):
        M.sliced_wasserstein(x, y, projections=np.ones((4, 2)))
    with pytest.raises(ValueError, match="same feature size"):
        M.sliced_wasserstein(x, _features(30, 4))


# ------------------------------------------------------------------------------------------------
# SSIM and MS-SSIM: torchmetrics and the direct formula
# ------------------------------------------------------------------------------------------------


def _direct_ssim_parts(x, y, window, c1, c2):
    """SSIM and contrast-structure means of one pair of 2-D numpy images: loops over every valid position."""
    k = window.shape[0]
    s_vals, cs_vals = [], []
    for i in range(x.shape[0] - k + 1):
        for j in range(x.shape[1] - k + 1):
            a, b = x[i:i + k, j:j + k], y[i:i + k, j:j + k]
            ma, mb = (window * a).sum(), (window * b).sum()
            va, vb = (window * (a - ma) ** 2).sum(), (window * (b - mb) ** 2).sum()
            cab = (window * (a - ma) * (b - mb)).sum()
            cs = (2 * cab + c2) / (va + vb + c2)
            s_vals.append((2 * ma * mb + c1) / (ma**2 + mb**2 + c1) * cs)
            cs_vals.append(cs)
    return float(np.mean(s_vals)), float(np.mean(cs_vals))


def _gauss_window(k, sigma):
    r = np.arange(k) - (k - 1) / 2
    g = np.exp(-r**2 / (2 * sigma**2))
    w = np.outer(g, g)
    return w / w.sum()


def _pairs(n=5, seed=50):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, 1, 8, 8, generator=g, dtype=torch.float64)
    b = (0.7 * a + 0.3 * torch.rand(n, 1, 8, 8, generator=g, dtype=torch.float64))
    return a, b


@pytest.mark.parametrize("sigma", [1.0, 0.4, None])
def test_ssim_matches_the_direct_formula(sigma):
    a, b = _pairs()
    window = np.full((3, 3), 1 / 9) if sigma is None else _gauss_window(3, sigma)
    ours = M.ssim(a, b, sigma=sigma)
    want = [_direct_ssim_parts(a[i, 0].numpy(), b[i, 0].numpy(), window, 0.01**2, 0.03**2)[0] for i in range(5)]
    np.testing.assert_allclose(ours.numpy(), want, rtol=1e-10)


@pytest.mark.parametrize("gaussian", [True, False])
def test_ssim_matches_torchmetrics_on_the_valid_positions(gaussian):
    from torchmetrics.functional.image import structural_similarity_index_measure

    a, b = _pairs(seed=51)
    # torchmetrics pads by reflection and averages every position; its map at the positions where the 3x3 window
    # fits inside the image is SSIM's (sigma 0.4 makes torchmetrics choose a 3x3 Gaussian window)
    kw = {"gaussian_kernel": True, "sigma": 0.4} if gaussian else {"gaussian_kernel": False, "kernel_size": 3}
    _, full = structural_similarity_index_measure(a, b, data_range=1.0, return_full_image=True, reduction="none", **kw)
    want = full[..., 1:-1, 1:-1].flatten(1).mean(1)
    ours = M.ssim(a, b, sigma=0.4 if gaussian else None)
    torch.testing.assert_close(ours, want, rtol=1e-10, atol=1e-12)


def test_ms_ssim_matches_the_direct_formula():
    a, b = _pairs(seed=52)
    window = _gauss_window(3, 1.0)
    w = np.array(M.MS_SSIM_WEIGHTS[:2]) / sum(M.MS_SSIM_WEIGHTS[:2])
    ours = M.ms_ssim(a, b)
    for i in range(5):
        x, y = a[i, 0].numpy(), b[i, 0].numpy()
        _, cs1 = _direct_ssim_parts(x, y, window, 1e-4, 9e-4)
        pool = lambda z: z.reshape(4, 2, 4, 2).mean(axis=(1, 3))  # 2x2 average pooling
        s2, _ = _direct_ssim_parts(pool(x), pool(y), window, 1e-4, 9e-4)
        assert float(ours[i]) == pytest.approx(max(cs1, 0) ** w[0] * max(s2, 0) ** w[1], rel=1e-10)


def test_ssim_properties_and_errors():
    a, b = _pairs(seed=53)
    torch.testing.assert_close(M.ssim(a, a), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(M.ms_ssim(a, a), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(M.ms_ssim(a, b, scales=1), M.ssim(a, b))
    assert bool((M.ssim(a, b) <= 1).all()) and bool((M.ms_ssim(a, 1 - a) >= 0).all())
    flat = a.reshape(5, 64).float()
    torch.testing.assert_close(M.ssim(flat, flat.flip(0)), M.ssim(a.float(), a.float().flip(0)))  # (N, 64) = 8x8
    assert M.ssim(a, b).dtype == torch.float64 and M.ssim(a.float(), b.float()).dtype == torch.float32
    with pytest.raises(ValueError, match="same shape"):
        M.ssim(a, b[:3])
    with pytest.raises(TypeError, match="floating"):
        M.ssim((a * 16).long(), b)
    with pytest.raises(ValueError, match="odd"):
        M.ssim(a, b, kernel_size=4)
    with pytest.raises(ValueError, match="smaller than the window"):
        M.ssim(a, b, kernel_size=9)
    with pytest.raises(ValueError, match="too small for 3 scales"):
        M.ms_ssim(a, b, scales=3)
    with pytest.raises(ValueError, match="one exponent per scale"):
        M.ms_ssim(a, b, weights=(1.0,))
    with pytest.raises(ValueError, match="NaN"):
        M.ssim(a, torch.full_like(b, float("nan")))


def test_pairwise_ms_ssim_is_one_for_a_collapsed_set_and_lower_for_real_digits():
    x, _ = ck.data.load_digits("test")
    collapsed = x[:1].expand(50, 64).clone()
    assert M.pairwise_ms_ssim(collapsed, n_pairs=200) == pytest.approx((1.0, 0.0))
    mean, std = M.pairwise_ms_ssim(x, n_pairs=500, seed=1)
    assert 0.1 < mean < 0.9 and std > 0
    assert (mean, std) == M.pairwise_ms_ssim(x, n_pairs=500, seed=1)
    with pytest.raises(ValueError, match="at least 2"):
        M.pairwise_ms_ssim(x[:1])


def test_pairwise_ms_ssim_within_classes_sees_a_collapse_onto_one_image_per_class():
    x, y = ck.data.load_digits("test")
    one_per_class = torch.stack([x[y == c][0] for c in range(10)]).repeat(25, 1)
    labels = torch.arange(250) % 10
    assert M.pairwise_ms_ssim(one_per_class, labels) == pytest.approx((1.0, 0.0))
    assert M.pairwise_ms_ssim(one_per_class)[0] < 0.9 * M.pairwise_ms_ssim(one_per_class, labels)[0]
    within, across = M.pairwise_ms_ssim(x, y)[0], M.pairwise_ms_ssim(x)[0]
    assert within > across  # digits of one class resemble each other more
    # pairs are distinct images of one label: with two labels of two images each, every pair is (0, 1) or (2, 3)
    four = x[:4]
    got = M.pairwise_ms_ssim(four, np.array([0, 0, 1, 1]), n_pairs=400)[0]
    want = 0.5 * float(M.ms_ssim(four[:1], four[1:2]) + M.ms_ssim(four[2:3], four[3:4]))
    assert got == pytest.approx(want, abs=0.05)
    with pytest.raises(ValueError, match="shape"):
        M.pairwise_ms_ssim(x, y[:10])
    with pytest.raises(ValueError, match="twice"):
        M.pairwise_ms_ssim(x[:5], np.arange(5))


# ------------------------------------------------------------------------------------------------
# The random-features baseline and the constructed failure cases of chapter 13
# ------------------------------------------------------------------------------------------------


def test_random_digits_network_is_seeded_standardised_and_rng_neutral(clf):
    state = torch.get_rng_state()
    a, b, c = M.random_digits_network(0), M.random_digits_network(0), M.random_digits_network(1)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not torch.equal(a.head.weight, c.head.weight) and not torch.equal(a.head.weight, clf.head.weight)
    xtr = torch.cat([ck.data.load_digits("train", binarize=s)[0] for s in (False, True)])
    f = a.features(xtr).double()
    assert torch.allclose(f.mean(0), torch.zeros(M.FEATURE_DIM, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(f.std(0), torch.ones(M.FEATURE_DIM, dtype=torch.float64), atol=1e-4)


def _blur(x, sigma):
    r = torch.arange(3.0) - 1
    g = torch.exp(-r**2 / (2 * sigma**2))
    w = (g[:, None] * g[None, :] / g.sum() ** 2).reshape(1, 1, 3, 3)
    return torch.nn.functional.conv2d(x.reshape(-1, 1, 8, 8), w, padding=1).reshape(-1, 64)


def test_constructed_failure_cases_behave_as_chapter_13_states(clf):
    """Memorisation sits at the floor and only the nearest-neighbour check sees it; dropping modes lowers recall and
    coverage but not precision; blur raises FID and lowers precision; a lower temperature of a Gaussian mixture
    raises precision and lowers recall."""
    x_train, y_train = ck.data.load_digits("train")
    x_test, _ = ck.data.load_digits("test")
    n = 250
    floor = M.sample_quality(x_test, x_train[250:500], classifier=clf)
    copies = M.sample_quality(x_test, x_train[:n], classifier=clf)
    assert copies["fid"] < 2 * floor["fid"] and copies["recall"] > 0.8
    assert M.memorisation_check(x_train[:n], x_train, x_test)["copy_fraction"] == 1.0

    dropped = x_train[y_train < 5][:n]
    q = M.sample_quality(x_test, dropped, classifier=clf)
    assert q["recall"] < floor["recall"] - 0.3 and q["coverage"] < floor["coverage"] - 0.3
    assert q["precision"] > floor["precision"] - 0.1
    assert q["is_mean"] < 5.5  # at most 5 classes

    blurred = M.sample_quality(x_test, _blur(x_train[:n], 1.0), classifier=clf)
    assert blurred["fid"] > 3 * floor["fid"] and blurred["precision"] < floor["precision"]

    levels = (x_train * 16).round()
    y = M.uniform_dequantize(levels, 17, generator=torch.Generator().manual_seed(0)).double()
    gmm = ck.mixtures.fit_gmm(y, 10, covariance_type="diag", reg_covar=1e-4, max_iter=30, seed=0)
    pr = {}
    for t in (0.3, 1.0):
        tempered = ck.mixtures.GMMFit(gmm.weights, gmm.means, gmm.covariances * t**2, covariance_type="diag")
        s = ck.flows.quantize_digits(tempered.sample(n, generator=torch.Generator().manual_seed(1))).float()
        pr[t] = M.prdc(clf.features(x_test), clf.features(s))
    assert pr[0.3]["precision"] > pr[1.0]["precision"] and pr[0.3]["recall"] < pr[1.0]["recall"]
