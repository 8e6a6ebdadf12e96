"""Tests for coursekit.disentangle: the DCI and MIG metrics against direct computations and scikit-learn, on
constructed codes; the beta-VAE objective's two conventions; InfoGAN's bound; AdaIN, fade-in and the style
generator; path length, separability, probes and traversals; errors on bad input."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy as scipy_entropy
from sklearn.linear_model import Lasso
from sklearn.metrics import mutual_info_score

import coursekit as ck
from coursekit import disentangle as dis


@pytest.fixture(scope="module")
def sprite_factors():
    return ck.data.all_sprite_factors()


def _std(x):
    x = x.double()
    return (x - x.mean(0)) / x.std(0)


# ------------------------------------------------------------------------------------------- DCI from importance
def test_dci_from_importance_direct_computation():
    r = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.6, 0.2], [0.0, 0.0, 0.5], [0.1, 0.1, 0.1]], dtype=torch.float64)
    out = dis.dci_from_importance(r)
    rn = r.numpy()
    p = rn / rn.sum(1, keepdims=True)
    d_i = 1 - scipy_entropy(p.T, base=3)  # scipy: entropy of each column of its argument
    rho = rn.sum(1) / rn.sum()
    pt = rn / rn.sum(0, keepdims=True)
    c_j = 1 - scipy_entropy(pt, base=4)
    rho_f = rn.sum(0) / rn.sum()
    assert out["disentanglement"] == pytest.approx(float((rho * d_i).sum()), abs=1e-12)
    assert out["completeness"] == pytest.approx(float((rho_f * c_j).sum()), abs=1e-12)
    np.testing.assert_allclose(out["per_latent"].numpy(), d_i, atol=1e-12)
    np.testing.assert_allclose(out["per_factor"].numpy(), c_j, atol=1e-12)


def test_dci_from_importance_extremes():
    eye = torch.eye(4, dtype=torch.float64)
    out = dis.dci_from_importance(eye)
    assert out["disentanglement"] == pytest.approx(1.0) and out["completeness"] == pytest.approx(1.0)
    flat = dis.dci_from_importance(torch.ones(4, 4, dtype=torch.float64))
    assert flat["disentanglement"] == pytest.approx(0.0, abs=1e-12)
    assert flat["completeness"] == pytest.approx(0.0, abs=1e-12)
    # a duplicated latent: each factor is spread over two latents -> completeness 1 - log_4(2) = 0.5
    dup = dis.dci_from_importance(torch.cat([torch.eye(2), torch.eye(2)]).double())
    assert dup["disentanglement"] == pytest.approx(1.0) and dup["completeness"] == pytest.approx(0.5)
    # an unused latent (zero row) has weight 0 and does not change the scores
    pad = dis.dci_from_importance(torch.cat([eye, torch.zeros(1, 4, dtype=torch.float64)]))
    assert pad["disentanglement"] == pytest.approx(1.0) and pad["latent_weights"][-1] == 0


def test_dci_from_importance_accepts_numpy_and_is_scale_invariant():
    r = np.random.RandomState(0).rand(5, 3)
    a, b = dis.dci_from_importance(r), dis.dci_from_importance(torch.tensor(7.0 * r))
    assert a["disentanglement"] == pytest.approx(b["disentanglement"])
    assert a["completeness"] == pytest.approx(b["completeness"])


@pytest.mark.parametrize("bad, exc, msg", [
    (torch.ones(3), ValueError, "shape"),
    (torch.ones(1, 3), ValueError, "at least 2"),
    (-torch.ones(3, 3), ValueError, "non-negative"),
    (torch.zeros(3, 3), ValueError, "all zero"),
    (torch.tensor([[1.0, float("nan")], [1.0, 1.0]]), ValueError, "NaN"),
    (torch.ones(3, 3, dtype=torch.int64), TypeError, "floating"),
])
def test_dci_from_importance_bad_input(bad, exc, msg):
    with pytest.raises(exc, match=msg):
        dis.dci_from_importance(bad)


# ------------------------------------------------------------------------------------------- importance, DCI
def test_lasso_importance_matches_sklearn_directly(sprite_factors):
    f = sprite_factors[:2000]
    codes = _std(f) + 0.3 * torch.randn(f.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = dis.importance_matrix(codes, f, regressor="lasso", alpha=0.01, seed=3)
    perm = np.random.RandomState(3).permutation(2000)
    te, tr = perm[:500], perm[500:]
    z, v = codes.numpy(), f.double().numpy()
    zs = (z[tr] - z[tr].mean(0)) / z[tr].std(0)
    vs = (v[tr] - v[tr].mean(0)) / v[tr].std(0)
    for j in range(5):
        coef = Lasso(alpha=0.01, max_iter=10_000).fit(zs, vs[:, j]).coef_
        np.testing.assert_allclose(out["importance"][:, j].numpy(), np.abs(coef), atol=1e-10)
    assert out["informativeness"].shape == (5,) and 0 < out["informativeness_mean"] < 1
    assert len(te) == 500


@pytest.mark.parametrize("regressor", ["lasso", "gbt"])
def test_dci_on_constructed_codes(sprite_factors, regressor):
    f = sprite_factors
    g = torch.Generator().manual_seed(0)
    z = _std(f)
    ideal = dis.dci(z, f, regressor=regressor, n_estimators=30)
    assert min(ideal["disentanglement"], ideal["completeness"], ideal["informativeness"]) > 0.95
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    rot = dis.dci(z @ q, f, regressor=regressor, n_estimators=30)
    assert rot["disentanglement"] < ideal["disentanglement"] - 0.3
    noisy = dis.dci(z + torch.randn(z.shape, generator=g, dtype=torch.float64), f, regressor=regressor,
                    n_estimators=30)
    assert noisy["informativeness"] < ideal["informativeness"] - 0.3


def test_duplicated_latents_lower_gbt_completeness(sprite_factors):
    f = sprite_factors
    z = _std(f)
    g = torch.Generator().manual_seed(2)
    dup = torch.cat([z, z + 0.01 * torch.randn(z.shape, generator=g, dtype=torch.float64)], 1)
    assert dis.dci(dup, f, regressor="gbt", n_estimators=30)["completeness"] < 0.85


def test_importance_matrix_bad_input(sprite_factors):
    f = sprite_factors[:100]
    with pytest.raises(ValueError, match="same number of rows"):
        dis.importance_matrix(torch.randn(50, 3), f)
    with pytest.raises(ValueError, match="regressor"):
        dis.importance_matrix(torch.randn(100, 3), f, regressor="forest")
    with pytest.raises(ValueError, match="test_fraction"):
        dis.importance_matrix(torch.randn(100, 3), f, test_fraction=1.5)
    with pytest.raises(ValueError, match="NaN"):
        dis.importance_matrix(torch.full((100, 3), float("nan")), f)


# ------------------------------------------------------------------------------------------- MIG
def test_discretise_equal_width_bins_like_numpy():
    z = torch.randn(500, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    b = dis.discretise(z, 7)
    for j in range(3):
        edges = np.histogram_bin_edges(z[:, j].numpy(), bins=7)
        want = np.clip(np.digitize(z[:, j].numpy(), edges[1:-1]), 0, 6)
        np.testing.assert_array_equal(b[:, j].numpy(), want)
    assert b.min() == 0 and b.max() == 6
    assert (dis.discretise(torch.ones(5, 2), 4) == 0).all()


def test_discrete_mutual_information_matches_sklearn():
    g = torch.Generator().manual_seed(1)
    a = torch.randint(5, (3000,), generator=g)
    b = (a + torch.randint(3, (3000,), generator=g)) % 6
    assert dis.discrete_mutual_information(a, b) == pytest.approx(mutual_info_score(a.numpy(), b.numpy()),
                                                                   abs=1e-10)


def test_mig_direct_computation(sprite_factors):
    f = sprite_factors[::3]
    g = torch.Generator().manual_seed(4)
    z = _std(f) @ torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))[0] * 0.5 + 0.5 * _std(f)
    out = dis.mig(z, f, n_bins=10)
    zb = dis.discretise(z, 10).numpy()
    fn = f.numpy()
    want = []
    for k in range(5):
        mis = sorted((mutual_info_score(zb[:, j], fn[:, k]) for j in range(5)), reverse=True)
        h = scipy_entropy(np.bincount(fn[:, k]))
        want.append((mis[0] - mis[1]) / h)
    np.testing.assert_allclose(out["per_factor"].numpy(), want, atol=1e-10)
    assert out["mig"] == pytest.approx(float(np.mean(want)), abs=1e-10)


def test_mig_on_constructed_codes(sprite_factors):
    f = sprite_factors
    z = _std(f)
    g = torch.Generator().manual_seed(0)
    assert dis.mig(z, f)["mig"] > 0.95
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    assert dis.mig(z @ q, f)["mig"] < 0.5
    assert dis.mig(torch.cat([z, z], 1), f)["mig"] == pytest.approx(0.0, abs=1e-12)  # duplicates: no gap
    assert dis.mig(z + torch.randn(z.shape, generator=g, dtype=torch.float64), f)["mig"] < 0.5


def test_mig_too_few_bins_merges_levels(sprite_factors):
    f = sprite_factors
    z = _std(f)
    assert dis.mig(z, f, n_bins=2)["mig"] < 0.6 < dis.mig(z, f, n_bins=20)["mig"]


def test_mig_bad_input(sprite_factors):
    f = sprite_factors[:100]
    with pytest.raises(TypeError, match="integer level"):
        dis.mig(torch.randn(100, 3), f.double())
    with pytest.raises(ValueError, match="at least 2 latents"):
        dis.mig(torch.randn(100, 1), f)
    with pytest.raises(ValueError, match="n_bins"):
        dis.mig(torch.randn(100, 3), f, n_bins=1)
    with pytest.raises(ValueError, match="constant"):
        dis.mig(torch.randn(100, 3), torch.zeros(100, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="same number of rows"):
        dis.mig(torch.randn(99, 3), f)


# ------------------------------------------------------------------------------------------- beta-VAE
def test_beta_vae_loss_conventions():
    torch.manual_seed(0)
    vae = ck.vae.VAE(256, 4, (16,))
    x = torch.rand(32, 256)
    torch.manual_seed(1)
    loss_sum, m = dis.beta_vae_loss(vae, x, beta=4.0)
    torch.manual_seed(1)
    ref, _ = ck.vae.vae_loss(vae, x, beta=4.0)
    assert loss_sum.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.manual_seed(1)
    loss_mean, _ = dis.beta_vae_loss(vae, x, beta=4.0 / 256, reconstruction="mean")
    assert loss_mean.item() == pytest.approx(loss_sum.item() / 256, rel=1e-5)
    assert dis.summed_beta(4.0 / 256, 256) == pytest.approx(4.0)
    assert set(m) == {"elbo", "rec", "kl"}
    with pytest.raises(ValueError, match="reconstruction"):
        dis.beta_vae_loss(vae, x, reconstruction="median")
    with pytest.raises(ValueError, match="beta"):
        dis.beta_vae_loss(vae, x, beta=-1.0)


def test_latent_traversal_sets_one_latent_per_row():
    z0 = torch.tensor([0.5, -1.0, 2.0])
    vals = torch.linspace(-2, 2, 4)
    out = dis.latent_traversal(lambda z: z * 10, z0, vals)
    assert out.shape == (3, 4, 3)
    for i in range(3):
        for v in range(4):
            want = z0.clone()
            want[i] = vals[v]
            assert torch.equal(out[i, v], want * 10)
    with pytest.raises(ValueError, match="shape"):
        dis.latent_traversal(lambda z: z, torch.zeros(2, 3), vals)


# ------------------------------------------------------------------------------------------- InfoGAN
def test_infogan_bound_equals_mi_with_the_true_posterior():
    # a joint p(c, x) on 4 codes x 6 outcomes with uniform c: with Q = p(c|x) the bound is I(c; x) exactly
    g = torch.Generator().manual_seed(0)
    lik = torch.rand(4, 6, generator=g, dtype=torch.float64)
    lik = lik / lik.sum(1, keepdim=True)  # p(x | c)
    joint = lik / 4
    post = joint / joint.sum(0, keepdim=True)  # p(c | x), columns
    c = torch.arange(4).repeat_interleave(6)
    x_idx = torch.arange(6).repeat(4)
    w = joint.reshape(-1)
    # expected log Q(c|x) under the joint, written as a weighted cross-entropy
    exp_log_q = (w * post[c, x_idx].log()).sum()
    assert (math.log(4) + exp_log_q).item() == pytest.approx(ck.divergences.mutual_information(joint).item(),
                                                             abs=1e-12)
    # the function on a large sample from the joint
    n = 200_000
    cs = torch.randint(4, (n,), generator=g)
    xs = torch.multinomial(lik[cs], 1, generator=g)[:, 0]
    bound = dis.infogan_mi_lower_bound(post[:, xs].T.log(), cs).item()
    assert bound == pytest.approx(ck.divergences.mutual_information(joint).item(), abs=0.01)
    # any other Q gives less
    worse = dis.infogan_mi_lower_bound(torch.zeros(n, 4, dtype=torch.float64), cs).item()
    assert worse == pytest.approx(0.0, abs=1e-12) and worse < bound


def test_infogan_bound_range_and_errors():
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        q = 5 * torch.randn(64, 10, generator=g)
        c = torch.randint(10, (64,), generator=g)
        assert dis.infogan_mi_lower_bound(q, c).item() <= math.log(10) + 1e-6
    q = torch.full((8, 3), -50.0)
    c = torch.arange(8) % 3
    q[torch.arange(8), c] = 50.0
    assert dis.infogan_mi_lower_bound(q, c).item() == pytest.approx(math.log(3), abs=1e-5)
    with pytest.raises(ValueError, match="int64"):
        dis.infogan_mi_lower_bound(q, c.float())
    with pytest.raises(ValueError, match="0..2"):
        dis.infogan_mi_lower_bound(q, c + 1)


def test_infogan_players_train_and_log_the_bound():
    torch.manual_seed(0)
    x, _ = ck.data.load_digits("train", image_shape=True)
    gen = ck.gan.DigitsGenerator(8, 8, n_classes=4)
    disc = dis.InfoGANDiscriminator(4, 8)
    players, streams = dis.infogan_players(gen, disc, noise_dim=8, batch_size=32)
    hist = ck.train.fit_players(players, x, steps=20, batch_size=32, generators=streams, progress=False)
    bound = hist["mi_bound"]
    assert len(bound) > 0 and all(b <= math.log(4) + 1e-6 for b in bound)
    assert disc.q_logits(x[:5]).shape == (5, 4) and disc(x[:5]).shape == (5,)


def test_matched_agreement_undoes_a_permutation():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(5, (400,), generator=g)
    perm = torch.tensor([3, 0, 4, 1, 2])
    codes = perm[y]
    codes[:40] = (codes[:40] + 1) % 5  # 10 % noise
    out = dis.matched_agreement(codes, y, 5, 5)
    inv = torch.argsort(perm)
    assert torch.equal(out["mapping"], inv)
    assert out["accuracy"] == pytest.approx(float((inv[codes] == y).float().mean()))
    assert out["confusion"].sum() == 400
    with pytest.raises(ValueError, match="0..4"):
        dis.matched_agreement(codes + 5, y, 5, 5)
    with pytest.raises(TypeError, match="int64"):
        dis.matched_agreement(codes.float(), y, 5, 5)


# ------------------------------------------------------------------------------------------- StyleGAN pieces
def test_adain_normalises_each_channel():
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(4, 5, 6, 6, generator=g, dtype=torch.float64) + 2
    s, b = torch.rand(4, 5, generator=g, dtype=torch.float64) + 0.5, torch.randn(4, 5, generator=g, dtype=torch.float64)
    y = dis.adain(x, s, b, eps=1e-12)
    torch.testing.assert_close(y.mean((2, 3)), b)
    torch.testing.assert_close(y.std((2, 3), unbiased=False), s)
    ref = torch.nn.functional.instance_norm(x, eps=1e-12) * s[:, :, None, None] + b[:, :, None, None]
    torch.testing.assert_close(y, ref)
    # invariant to a per-channel affine change of the input (the style replaces the input's statistics)
    torch.testing.assert_close(dis.adain(5 * x - 1, s, b, eps=1e-12), y)
    with pytest.raises(ValueError, match="shape"):
        dis.adain(x, s[:, :3], b)
    with pytest.raises(ValueError, match="spatial"):
        dis.adain(x[:, :, :1, :1], s, b)


def test_fade_in_is_continuous_at_the_switch():
    torch.manual_seed(0)
    gen = dis.StyleGenerator(8, 16, 8)
    z = torch.randn(6, 8)
    noise = gen.make_noise(6, torch.Generator().manual_seed(1))
    gen.stage = 8
    w = gen.map(z)
    before = gen.synthesis(w, noise)
    gen.stage, gen.alpha = 16, 0.0
    torch.testing.assert_close(gen.synthesis(w, noise), before, rtol=0, atol=0)
    gen.alpha = 1.0
    assert gen.synthesis(w, noise).shape == (6, 1, 16, 16)
    a, b = torch.zeros(3), torch.ones(3)
    torch.testing.assert_close(dis.fade_in(a, b, 0.25), torch.full((3,), 0.25))
    with pytest.raises(ValueError, match="alpha"):
        dis.fade_in(a, b, 1.5)


def test_style_generator_mixing_and_noise():
    torch.manual_seed(0)
    gen = dis.StyleGenerator(8, 16, 8)
    with torch.no_grad():
        for layer in gen.layers:
            layer.noise_weight.fill_(0.5)
            layer.style.weight.normal_()
    z = torch.randn(4, 8)
    w = gen.map(z)
    noise = gen.make_noise(4, torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = gen.synthesis(w, noise)
        assert torch.equal(a, gen.synthesis(w, noise))  # fixed noise: deterministic
        assert not torch.equal(a, gen.synthesis(w))  # fresh noise changes details
        mixed = torch.stack([w] * 6, 1)
        torch.testing.assert_close(gen.synthesis(mixed, noise), a)  # per-layer w, all equal = one w
        mixed[:, 3:] = w.flip(0)[:, None]
        assert not torch.allclose(gen.synthesis(mixed, noise), a)
    assert 0 < float(a.min()) and float(a.max()) < 1
    with pytest.raises(ValueError, match="w_dim"):
        dis.StyleGenerator(8, 16, 8, use_mapping=False)


def test_sprites_discriminator_stage_8_sees_low_resolution():
    disc = dis.SpritesDiscriminator(4)
    x = torch.rand(3, 1, 16, 16)
    low = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(x, 2), scale_factor=2)
    disc.stage = 8
    torch.testing.assert_close(disc(x), disc(low))
    disc.stage, disc.alpha = 16, 1.0
    assert disc(x).shape == (3,)


def test_slerp_endpoints_and_unit_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(dis.slerp(a, b, 0.0), torch.nn.functional.normalize(a, dim=1))
    torch.testing.assert_close(dis.slerp(a, b, 1.0), torch.nn.functional.normalize(b, dim=1))
    torch.testing.assert_close(dis.slerp(a, b, 0.3).norm(dim=1), torch.ones(5, dtype=torch.float64))


def test_perceptual_path_length_is_a_finite_difference():
    # with pixel features, one pair's value is |G(t + eps) - G(t)|^2 / eps^2, recomputed here by hand
    torch.manual_seed(0)
    gen = dis.StyleGenerator(8, 16, 8)
    feats = lambda x: x.reshape(len(x), -1)
    out_w = dis.perceptual_path_length(gen, feats, space="w", n=64, seed=0)
    out_z = dis.perceptual_path_length(gen, feats, space="z", n=64, seed=0)
    assert out_w["ppl"] >= 0 and out_z["ppl"] >= 0 and math.isfinite(out_w["sem"])
    assert dis.perceptual_path_length(gen, feats, space="w", n=64, seed=0)["ppl"] == out_w["ppl"]
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g)
    t = torch.rand(64, generator=g) * (1 - 1e-2)
    noise = gen.make_noise(64, g)
    with torch.no_grad():
        w1, w2 = gen.map(z1), gen.map(z2)
        a = gen.synthesis(torch.lerp(w1, w2, t[:, None]), noise)
        b = gen.synthesis(torch.lerp(w1, w2, (t + 1e-2)[:, None]), noise)
    want = ((a - b).reshape(64, -1) ** 2).sum(1).mean() / 1e-4
    assert out_w["ppl"] == pytest.approx(float(want), rel=1e-5)
    with pytest.raises(ValueError, match="space"):
        dis.perceptual_path_length(gen, feats, space="s")


def test_linear_separability_separable_and_not():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(600, 3, generator=g, dtype=torch.float64)
    y = (z[:, 0] > 0).long()
    sep = dis.linear_separability(z, y)
    assert sep["accuracy"] > 0.97 and sep["conditional_entropy"] < 0.1
    y_ring = (z[:, :2].norm(dim=1) > 1.18).long()  # a circle: not linearly separable
    ring = dis.linear_separability(z, y_ring)
    assert ring["conditional_entropy"] > 0.5 * ring["label_entropy"]
    with pytest.raises(ValueError, match="2 classes"):
        dis.linear_separability(z, torch.zeros(600, dtype=torch.int64))


def test_linear_probe_direction_recovers_a_linear_attribute():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(500, 4, generator=g, dtype=torch.float64)
    a = torch.tensor([1.0, -2.0, 0.0, 2.0], dtype=torch.float64)
    out = dis.linear_probe_direction(z, z @ a + 3)
    torch.testing.assert_close(out["direction"], a / a.norm())
    assert out["slope"] == pytest.approx(3.0) and out["intercept"] == pytest.approx(3.0) and out["r2"] > 0.999
    with pytest.raises(ValueError, match="more examples"):
        dis.linear_probe_direction(z[:3], (z @ a)[:3])


def test_factor_classifier_learns_positions_quickly():
    torch.manual_seed(0)
    x, f = ck.data.load_sprites("train")
    clf = dis.SpritesFactorClassifier()
    ck.train.fit(clf, torch.optim.Adam(clf.parameters(), 2e-3), dis.factor_classifier_loss, (x, f), steps=150,
                 batch_size=128, progress=False)
    xt, ft = ck.data.load_sprites("test")
    acc = (clf.predict(xt) == ft).float().mean(0)
    assert acc[3] > 0.8 and acc[4] > 0.8  # x and y positions
    lv = clf.expected_levels(xt)
    assert lv.shape == (len(xt), 5) and bool((lv >= 0).all())
