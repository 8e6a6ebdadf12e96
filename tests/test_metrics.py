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
