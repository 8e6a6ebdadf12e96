"""Tests for coursekit.gan (chapter 06): the value function and its identities, the losses against torch's
binary cross-entropy, mode coverage, fit_gan (the two players of the one training loop: Algorithm 1 bit for bit,
determinism, divergence guard, conditional labels, ensembles, learning-rate schedule, checkpoint/resume) with
chapter 06's and chapter 07's objectives, and the image GANs (shapes, ranges, input validation, the conditional
nets use the label, the projection discriminator matches its formula, a few training steps on the digits move the
discriminator's loss below its chance value)."""

import math

import pytest
import torch
from torch.nn import functional as F

import coursekit as ck
from coursekit import data as D
from coursekit import gan as G
from coursekit import wasserstein as W
from coursekit.divergences import js_divergence
from coursekit.train import TrainingDiverged

from _helpers import assert_rejects_bad_scores


def random_simplex(k, *, seed, zeros=False):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(k, generator=g, dtype=torch.float64) ** 2
    if zeros:
        w = w * (torch.rand(k, generator=g, dtype=torch.float64) > 0.3)
        w[0] += 0.05
    return w / w.sum()


def logit(p):
    return torch.log(p) - torch.log1p(-p)


# ------------------------------------------------------------------------------ optimal D and the JSD identity


def test_optimal_discriminator_values_and_zero_zero_convention():
    p = torch.tensor([0.2, 0.0, 0.5, 0.0])
    q = torch.tensor([0.6, 0.3, 0.5, 0.0])
    d = G.optimal_discriminator(p, q)
    assert torch.allclose(d, torch.tensor([0.25, 0.0, 0.5, 0.5]))


@pytest.mark.parametrize("seed", range(6))
def test_value_at_optimal_d_is_2jsd_minus_log4(seed):
    """Exact expectations over K outcomes: V(D*, G) = sum p log D* + sum q log(1 - D*) = 2 JSD - log 4."""
    p, q = random_simplex(8, seed=seed, zeros=seed % 2 == 1), random_simplex(8, seed=40 + seed, zeros=seed % 2 == 1)
    d = G.optimal_discriminator(p, q)
    value = (torch.xlogy(p, d) + torch.xlogy(q, 1 - d)).sum()
    assert value.item() == pytest.approx(2 * js_divergence(p, q).item() - math.log(4), abs=1e-12)
    # D* is the maximiser: any other discriminator gives a smaller value
    g = torch.Generator().manual_seed(seed)
    for _ in range(20):
        other = (d + 0.2 * (torch.rand(8, generator=g, dtype=torch.float64) - 0.5)).clamp(1e-6, 1 - 1e-6)
        v_other = (torch.xlogy(p, other) + torch.xlogy(q, 1 - other)).sum()
        assert v_other.item() <= value.item() + 1e-12


@pytest.mark.parametrize("seed", range(4))
def test_gan_value_on_a_batch_with_counts_equals_2jsd_minus_log4(seed):
    """Distributions with rational probabilities c_k / n: a batch holding outcome k exactly c_k times makes the
    batch mean of gan_value an exact expectation. At D* = sigmoid(logit) the value is 2 JSD - log 4, and the
    half-weighted objective (minus the mean BCE over the balanced real+fake batch) is JSD - log 2."""
    g = torch.Generator().manual_seed(seed)
    k, n = 6, 60
    cp = torch.multinomial(torch.ones(k), n, replacement=True, generator=g).bincount(minlength=k)
    cq = torch.multinomial(torch.rand(k, generator=g) + 0.1, n, replacement=True, generator=g).bincount(minlength=k)
    p, q = cp.double() / n, cq.double() / n
    d = G.optimal_discriminator(p, q).clamp(1e-300, 1 - 1e-16)  # D* is 0 or 1 where one side has no mass
    logits = logit(d)
    real = torch.repeat_interleave(logits, cp)
    fake = torch.repeat_interleave(logits, cq)
    jsd = js_divergence(p, q).item()
    assert G.gan_value(real, fake).item() == pytest.approx(2 * jsd - math.log(4), abs=1e-9)
    bce = F.binary_cross_entropy_with_logits(torch.cat([real, fake]),
                                             torch.cat([torch.ones(n), torch.zeros(n)]).double())
    assert (-bce).item() == pytest.approx(jsd - math.log(2), abs=1e-9)
    assert G.discriminator_loss(real, fake).item() == pytest.approx(math.log(4) - 2 * jsd, abs=1e-9)


# ------------------------------------------------------------------------------------------------------ losses


def bce(logits, label):
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(label)))


@pytest.mark.parametrize("shape", [(7,), (7, 1)])
def test_losses_match_binary_cross_entropy(shape):
    g = torch.Generator().manual_seed(0)
    real = 3 * torch.randn(shape, generator=g)
    fake = 3 * torch.randn(shape, generator=g)
    assert torch.allclose(G.discriminator_loss(real, fake), bce(real, 1) + bce(fake, 0), atol=1e-6)
    assert torch.allclose(G.gan_value(real, fake), -(bce(real, 1) + bce(fake, 0)), atol=1e-6)
    assert torch.allclose(G.generator_loss(fake, "non_saturating"), bce(fake, 1), atol=1e-6)
    assert torch.allclose(G.generator_loss(fake), bce(fake, 1), atol=1e-6)  # the default
    assert torch.allclose(G.generator_loss(fake, "minimax"), -bce(fake, 0), atol=1e-6)
    # hand formula log sigmoid on moderate logits
    s = torch.sigmoid(fake.double())
    assert G.generator_loss(fake.double(), "minimax").item() == pytest.approx(torch.log(1 - s).mean().item(), abs=1e-10)
    for out in (G.discriminator_loss(real, fake), G.generator_loss(fake), G.gan_value(real, fake)):
        assert out.ndim == 0


def test_real_and_fake_batches_may_differ_in_size():
    real, fake = torch.randn(5), torch.randn(3, 1)
    want = bce(real, 1) + bce(fake.reshape(-1), 0)
    assert torch.allclose(G.discriminator_loss(real, fake), want, atol=1e-6)


def test_losses_are_finite_for_extreme_logits():
    big = torch.tensor([-200.0, 0.0, 200.0], requires_grad=True)
    for loss in (G.discriminator_loss(big, big), G.generator_loss(big, "minimax"), G.generator_loss(big)):
        assert torch.isfinite(loss)
        (grad,) = torch.autograd.grad(loss, big)
        assert torch.isfinite(grad).all()
    assert G.generator_loss(torch.tensor([-200.0])).item() == pytest.approx(200.0)


def test_minimax_saturates_and_non_saturating_does_not():
    """d/dl of E log(1 - sigmoid(l)) is -sigmoid(l)/M, of -E log sigmoid(l) is -(1 - sigmoid(l))/M."""
    fake = torch.tensor([-8.0, -2.0, 0.0, 3.0], dtype=torch.float64, requires_grad=True)
    (g_mm,) = torch.autograd.grad(G.generator_loss(fake, "minimax"), fake)
    (g_ns,) = torch.autograd.grad(G.generator_loss(fake, "non_saturating"), fake)
    s = torch.sigmoid(fake.detach())
    assert torch.allclose(g_mm, -s / 4) and torch.allclose(g_ns, -(1 - s) / 4)
    assert abs(g_mm[0]) < 1e-3 and abs(g_ns[0]) > 0.2  # D rejects the sample: minimax gives ~no gradient


@pytest.mark.parametrize("call", [
    lambda x: G.gan_value(x, torch.zeros(3)),
    lambda x: G.discriminator_loss(torch.zeros(3), x),
    lambda x: G.generator_loss(x),
])
def test_losses_reject_bad_input(call):
    assert_rejects_bad_scores(call)


def test_generator_loss_rejects_unknown_kind_and_optimal_d_bad_input():
    with pytest.raises(ValueError, match="non_saturating"):
        G.generator_loss(torch.zeros(3), kind="wgan")
    with pytest.raises(ValueError, match=">= 0"):
        G.optimal_discriminator(torch.tensor([-0.1, 1.1]), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="same shape"):
        G.optimal_discriminator(torch.tensor([0.1, 0.9]), torch.tensor([0.2, 0.3, 0.5]))
    with pytest.raises(ValueError, match="NaN"):
        G.optimal_discriminator(torch.tensor([float("nan")]), torch.tensor([0.5]))
    with pytest.raises(TypeError):
        G.optimal_discriminator([0.5], torch.tensor([0.5]))


# ------------------------------------------------------------------------------------------------ mode coverage


def test_mode_coverage_on_constructed_samples():
    modes = D.ring_modes()  # 8 modes, radius 2
    std = 0.02
    r = modes[0] + torch.zeros(10, 2)  # 10 exactly at mode 0
    near3 = modes[3] + torch.tensor([[2.9 * std, 0.0]])  # high quality, assigned to mode 3
    far5 = modes[5] + torch.tensor([[0.0, 3.1 * std]])  # just outside 3 std: low quality
    origin = torch.zeros(5, 2)  # far from every mode
    samples = torch.cat([r, near3, far5, origin])
    out = G.mode_coverage(samples, modes, std)
    assert out["modes_covered"] == 2 and out["n_modes"] == 8
    assert out["high_quality"] == pytest.approx(11 / 17)
    assert out["counts"].tolist() == [10, 0, 0, 1, 0, 0, 0, 0]
    assert out["nearest"][10].item() == 3 and out["nearest"][11].item() == 5
    assert G.mode_coverage(samples, modes, std, min_count=2)["modes_covered"] == 1
    assert G.mode_coverage(samples, modes, std, n_std=4.0)["modes_covered"] == 3


@pytest.mark.parametrize("bench", ["ring", "grid"])
def test_mode_coverage_of_real_data(bench):
    x = D.sample_2d(bench, 5000, seed=1)
    modes = D.ring_modes() if bench == "ring" else D.grid_modes()
    out = G.mode_coverage(x, modes, 0.02)
    assert out["modes_covered"] == len(modes)
    assert out["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.006)  # chi(2) within 3 std: 0.989


def test_mode_coverage_rejects_bad_input():
    modes = D.ring_modes()
    with pytest.raises(ValueError, match="dimension"):
        G.mode_coverage(torch.zeros(3, 3), modes, 0.02)
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        G.mode_coverage(torch.zeros(3), modes, 0.02)
    with pytest.raises(ValueError, match="std"):
        G.mode_coverage(torch.zeros(3, 2), modes, -1.0)
    with pytest.raises(ValueError, match="NaN"):
        G.mode_coverage(torch.full((3, 2), float("nan")), modes, 0.02)
    with pytest.raises(TypeError):
        G.mode_coverage(torch.zeros(3, 2), modes, 0.02, min_count=1.5)


# -------------------------------------------------------------------------------------------- training loop


#: fit_gan's objectives by name: chapter 06's two (passed as strings) and chapter 07's WGAN objectives.
LOSSES = {"minimax": "minimax", "non_saturating": "non_saturating", "wgan_gp": W.wgan_gp_loss(),
          "wgan_clip": W.wgan_clip_loss()}


def small_gan(seed=0, z=4, out=2, hidden=(16,)):
    torch.manual_seed(seed)
    gen = torch.nn.Sequential(torch.nn.Linear(z, hidden[0]), torch.nn.ReLU(), torch.nn.Linear(hidden[0], out))
    dis = torch.nn.Sequential(torch.nn.Linear(out, hidden[0]), torch.nn.ReLU(), torch.nn.Linear(hidden[0], 1))
    return gen, dis


def gaussian_data(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.tensor([3.0, -1.0]) + 0.5 * torch.randn(n, 2, generator=g)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_fit_gan_is_deterministic_for_a_seed(loss, capsys):
    runs = []
    for seed in (0, 0, 1):
        gen, dis = small_gan(seed=0)
        hist = G.fit_gan(gen, dis, gaussian_data(), loss=LOSSES[loss], steps=6, batch_size=32, latent_dim=4, seed=seed,
                         log_every=2, progress=False)
        runs.append((torch.cat([p.detach().flatten() for p in gen.parameters()]), hist))
    assert torch.equal(runs[0][0], runs[1][0])
    assert runs[0][1]["loss_d"] == runs[1][1]["loss_d"] and runs[0][1]["loss_g"] == runs[1][1]["loss_g"]
    assert not torch.equal(runs[0][0], runs[2][0])  # another seed: other batches and latents
    assert runs[0][1].steps == [2, 4, 6]
    keys = set(runs[0][1].keys())
    assert {"loss_d", "loss_g"} <= keys
    assert ({"w_estimate"} <= keys) if loss.startswith("wgan") else ({"d_real", "d_fake"} <= keys)
    assert ("gp" in keys) == (loss == "wgan_gp")


def test_fit_gan_prints_a_summary_and_respects_the_clip(capsys):
    gen, dis = small_gan()
    G.fit_gan(gen, dis, gaussian_data(), loss=W.wgan_clip_loss(clip=0.02), steps=3, batch_size=32, latent_dim=4)
    assert max(p.abs().max().item() for p in dis.parameters()) <= 0.02
    out = capsys.readouterr().out
    assert "GAN (wgan_clip): 3 steps in" in out and "loss_d" in out


def test_fit_gan_raises_training_diverged_with_step_and_hint():
    gen, dis = small_gan()

    def poison(step, g, d, h):
        if step == 2:
            with torch.no_grad():
                d[0].weight.fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match=r"step 3 of 10.*lower learning rates") as info:
        G.fit_gan(gen, dis, gaussian_data(), steps=10, batch_size=32, latent_dim=4, progress=False, callback=poison)
    assert info.value.step == 3 and math.isnan(info.value.value)
    assert "discriminator" in info.value.quantity


def test_fit_gan_conditional_passes_the_batch_labels_to_both_networks():
    n_classes, n = 3, 300
    labels = torch.arange(n) % n_classes
    data = F.one_hot(labels, n_classes).float() + 0.01 * torch.randn(n, n_classes)
    seen = {"g": [], "d": []}

    class CondG(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.lin = torch.nn.Embedding(n_classes, 4), torch.nn.Linear(8, n_classes)

        def forward(self, z, y):
            seen["g"].append((z.shape, y.clone()))
            return self.lin(torch.cat([z, self.emb(y)], 1))

    class CondD(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.lin = torch.nn.Embedding(n_classes, 4), torch.nn.Linear(n_classes + 4, 1)

        def forward(self, x, y):
            seen["d"].append((x.detach().clone(), y.clone()))
            return self.lin(torch.cat([x, self.emb(y)], 1))

    torch.manual_seed(0)
    G.fit_gan(CondG(), CondD(), data, labels=labels, steps=3, batch_size=16, latent_dim=4, progress=False)
    # per step: D on real, D on fake, then D on fake for the generator step; G twice (D step, G step)
    assert len(seen["d"]) == 9 and len(seen["g"]) == 6
    for zshape, y in seen["g"]:
        assert zshape == (16, 4) and y.shape == (16,) and y.dtype == torch.int64
    x_real, y_real = seen["d"][0]
    assert torch.equal(x_real.argmax(1), y_real)  # labels are those of the real rows
    assert torch.equal(seen["d"][1][1], y_real) and torch.equal(seen["g"][0][1], y_real)
    with pytest.raises(ValueError, match="int64"):
        G.fit_gan(CondG(), CondD(), data, labels=labels.float(), steps=1, batch_size=16, latent_dim=4)
    with pytest.raises(ValueError, match="same number of examples"):
        G.fit_gan(CondG(), CondD(), data, labels=labels[:10], steps=1, batch_size=16, latent_dim=4)


def test_fit_gan_learns_a_gaussian():
    """A linear generator and a small discriminator move samples from N(b, AA^T) near 0 onto N((1.5, -1), 0.25 I)."""
    torch.manual_seed(0)
    gen = torch.nn.Linear(2, 2)
    dis = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.LeakyReLU(0.2), torch.nn.Linear(32, 1))
    data = 0.5 * torch.randn(2048, 2, generator=torch.Generator().manual_seed(0)) + torch.tensor([1.5, -1.0])
    before = G.generate(gen, 2000, 2, seed=1)
    assert (before.mean(0) - torch.tensor([1.5, -1.0])).norm() > 1.0
    G.fit_gan(gen, dis, data, steps=400, batch_size=128, latent_dim=2, lr_g=5e-3, lr_d=5e-3, progress=False)
    x = G.generate(gen, 2000, 2, seed=1)
    assert torch.allclose(x.mean(0), torch.tensor([1.5, -1.0]), atol=0.15)
    assert 0.2 < x.std(0).mean().item() < 0.8


def test_fit_gan_bad_arguments_and_budget():
    gen, dis = small_gan()
    x = gaussian_data()
    with pytest.raises(ValueError, match="loss must be one of"):
        G.fit_gan(gen, dis, x, loss="hinge", steps=1, batch_size=8, latent_dim=4)
    with pytest.raises(ValueError, match="batch_size"):
        G.fit_gan(gen, dis, x, steps=1, batch_size=10_000, latent_dim=4)
    with pytest.raises(ValueError, match="NaN"):
        G.fit_gan(gen, dis, torch.full((10, 2), float("nan")), steps=1, batch_size=4, latent_dim=4)
    with pytest.raises(ValueError, match="generator returned"):
        G.fit_gan(gen, dis, torch.zeros(10, 3), steps=1, batch_size=4, latent_dim=4)
    with pytest.raises(TypeError, match="nn.Module"):
        G.fit_gan(lambda z: z, dis, x, steps=1, batch_size=4, latent_dim=4)
    hist = G.fit_gan(gen, dis, x, steps=100_000, batch_size=8, latent_dim=4, max_seconds=0.2, progress=False)
    assert hist.stop_reason == "max_seconds" and 0 < hist.steps[-1] < 100_000


# --------------------------------------------------------------------------------------- batched ensembles


def test_ensemble_mlp_members_match_standalone_mlps():
    ens = G.EnsembleMLP([3, 4, 5], 6, 2, hidden=(8, 7), activation=torch.nn.Tanh)
    x = torch.randn(10, 3, 6)
    out = ens(x)
    assert out.shape == (10, 3, 2)
    for e in range(3):
        assert torch.allclose(ens.member(e)(x[:, e]), out[:, e], atol=1e-6)
    # a member's initial weights depend only on its seed
    again = G.EnsembleMLP([9, 4], 6, 2, hidden=(8, 7), activation=torch.nn.Tanh)
    assert torch.equal(again.weights[0][1], ens.weights[0][1])
    with pytest.raises(ValueError, match=r"\(N, 3, 6\)"):
        ens(torch.randn(10, 6))


@pytest.mark.parametrize("loss", ["non_saturating", "wgan_gp"])
def test_ensemble_training_equals_separate_runs(loss):
    """Summed member losses + Adam (elementwise) = each member trained alone on the same batches."""
    E, B, zd = 3, 16, 4
    gens, dis = G.EnsembleMLP([0, 1, 2], zd, 2, (8,)), G.EnsembleMLP([10, 11, 12], 2, 1, (8,))
    singles = [(gens.member(e), dis.member(e)) for e in range(E)]
    opts = [torch.optim.Adam(gens.parameters(), 1e-2), torch.optim.Adam(dis.parameters(), 1e-2)]
    single_opts = [(torch.optim.Adam(g.parameters(), 1e-2), torch.optim.Adam(d.parameters(), 1e-2)) for g, d in singles]
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        x, z = torch.randn(B, E, 2, generator=g), torch.randn(B, E, zd, generator=g)
        eps_seed = int(torch.randint(0, 10_000, (1,), generator=g))

        def d_loss(dnet, gnet, x, z, ensemble, e=None, eps_seed=eps_seed):
            fake = gnet(z).detach()
            r, f = dnet(x).reshape(-1), dnet(fake).reshape(-1)
            if loss == "wgan_gp":
                # one eps per (example, member): the ensemble flattens (B, E) so member e's eps are column e
                eps_gen = torch.Generator().manual_seed(eps_seed)
                if ensemble:
                    crit = lambda t: dnet(t.reshape(B, E, 2)).reshape(-1)
                    gp = W.gradient_penalty(crit, x.reshape(-1, 2), fake.reshape(-1, 2), generator=eps_gen)
                else:
                    eps_all = torch.rand(B * E, 1, generator=eps_gen).reshape(B, E, 1)
                    x_hat = (eps_all[:, e] * x + (1 - eps_all[:, e]) * fake).requires_grad_(True)
                    (gr,) = torch.autograd.grad(dnet(x_hat).sum(), x_hat, create_graph=True)
                    gp = ((gr.norm(dim=1) - 1) ** 2).mean()
                return W.wasserstein_critic_loss(r, f) + 10 * gp
            return G.discriminator_loss(r, f)

        def g_loss(dnet, gnet, z):
            f = dnet(gnet(z)).reshape(-1)
            return W.wasserstein_generator_loss(f) if loss == "wgan_gp" else G.generator_loss(f)

        opts[1].zero_grad()
        (E * d_loss(dis, gens, x, z, True)).backward()
        opts[1].step()
        opts[0].zero_grad()
        (E * g_loss(dis, gens, z)).backward()
        opts[0].step()
        for e, ((gn, dn), (og, od)) in enumerate(zip(singles, single_opts)):
            od.zero_grad()
            d_loss(dn, gn, x[:, e], z[:, e], False, e).backward()
            od.step()
            og.zero_grad()
            g_loss(dn, gn, z[:, e]).backward()
            og.step()
    for e, (gn, dn) in enumerate(singles):
        for a, b in zip(gens.member(e).parameters(), gn.parameters()):
            assert torch.allclose(a, b, atol=1e-5)
        for a, b in zip(dis.member(e).parameters(), dn.parameters()):
            assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("loss", ["minimax", "wgan_gp"])
def test_fit_gan_ensemble_of_one_equals_a_plain_run(loss):
    ens_g, ens_d = G.EnsembleMLP([0], 4, 2, (8,)), G.EnsembleMLP([1], 2, 1, (8,))
    g1, d1 = ens_g.member(0), ens_d.member(0)
    x = gaussian_data(256)
    h_ens = G.fit_gan(ens_g, ens_d, x[:, None], loss=LOSSES[loss], steps=5, batch_size=32, latent_dim=4, ensemble=1,
                      progress=False, log_every=1)
    h_one = G.fit_gan(g1, d1, x, loss=LOSSES[loss], steps=5, batch_size=32, latent_dim=4, progress=False, log_every=1)
    assert h_ens["loss_d"] == pytest.approx(h_one["loss_d"], abs=1e-5)
    for a, b in zip(ens_g.member(0).parameters(), g1.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_fit_gan_linear_lr_schedule_decays_to_zero():
    gen, dis = small_gan()
    opt_g, opt_d = torch.optim.Adam(gen.parameters(), 0.1), torch.optim.SGD(dis.parameters(), 0.2)
    seen = []
    G.fit_gan(gen, dis, gaussian_data(), steps=4, batch_size=32, latent_dim=4, optimizer_g=opt_g, optimizer_d=opt_d,
              lr_schedule="linear", progress=False,
              callback=lambda step, g, d, h: seen.append((opt_g.param_groups[0]["lr"], opt_d.param_groups[0]["lr"])))
    assert [g for g, _ in seen] == pytest.approx([0.1 * (1 - t / 4) for t in range(1, 5)])
    assert [d for _, d in seen] == pytest.approx([0.2 * (1 - t / 4) for t in range(1, 5)])
    with pytest.raises(ValueError, match="lr_schedule"):
        G.fit_gan(gen, dis, gaussian_data(), steps=1, batch_size=8, latent_dim=4, lr_schedule="cosine")


def test_fit_gan_on_images_with_a_tuple_latent_and_gradient_penalty():
    torch.manual_seed(0)
    gen = torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 1, 8), torch.nn.Sigmoid())  # (B, 4, 1, 1) -> (B, 1, 8, 8)
    dis = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1))
    images = torch.rand(64, 1, 8, 8)
    hist = G.fit_gan(gen, dis, images, loss=W.wgan_gp_loss(), steps=3, batch_size=16, latent_dim=(4, 1, 1),
                     progress=False, log_every=1)
    assert len(hist["gp"]) == 3 and all(math.isfinite(v) for v in hist["gp"])
    assert G.generate(gen, 5, (4, 1, 1)).shape == (5, 1, 8, 8)


def test_fit_gan_ensemble_shape_errors():
    gen, dis = G.EnsembleMLP([0, 1], 4, 2, (8,)), G.EnsembleMLP([2, 3], 2, 1, (8,))
    with pytest.raises(ValueError, match=r"data must have shape \(N, 2, ...\)"):
        G.fit_gan(gen, dis, torch.randn(50, 3, 2), steps=1, batch_size=8, latent_dim=4, ensemble=2)
    plain_d = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 1))  # (B, 2, 2) -> (B, 1): not per member
    with pytest.raises(ValueError, match=r"\(B, 2\) or \(B, 2, 1\)"):
        G.fit_gan(gen, plain_d, torch.randn(50, 2, 2), steps=1, batch_size=8, latent_dim=4, ensemble=2,
                  progress=False)


# ------------------------------------------------------------------------------ the loop: algorithm and resume
def _hand_written_algorithm_1(gen, dis, data, objective, *, steps, batch_size, latent_dim, n_critic, lr, seed):
    """Goodfellow et al. (2014), Algorithm 1, written out with fit_gan's random streams: the minibatch order from
    a CPU generator seeded ``seed`` (fresh permutation per epoch, drop-last), latents from one seeded ``seed + 1``,
    the penalty's epsilons from one seeded ``seed + 2``."""
    perm_g = torch.Generator().manual_seed(seed)
    z_g, eps_g = torch.Generator().manual_seed(seed + 1), torch.Generator().manual_seed(seed + 2)
    # fused: the implementation coursekit.train runs for an Adam left at torch's defaults (the same update, to rounding)
    opt_g = torch.optim.Adam(gen.parameters(), lr, betas=objective.betas, fused=True)
    opt_d = torch.optim.Adam(dis.parameters(), lr, betas=objective.betas, fused=True)
    n, perm, pos = data.shape[0], None, data.shape[0]
    for _ in range(steps):
        for _ in range(n_critic):
            if pos + batch_size > n:
                perm, pos = torch.randperm(n, generator=perm_g), 0
            x, pos = data[perm[pos:pos + batch_size]], pos + batch_size
            with torch.no_grad():
                fake = gen(torch.randn(batch_size, latent_dim, generator=z_g))
            loss_d = objective.discriminator_loss(dis(x).reshape(-1), dis(fake).reshape(-1))
            if objective.penalty is not None:
                loss_d = loss_d + objective.penalty_weight * objective.penalty(dis, x, fake, generator=eps_g)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        opt_g.zero_grad()
        objective.generator_loss(dis(gen(torch.randn(batch_size, latent_dim, generator=z_g))).reshape(-1)).backward()
        opt_g.step()  # (the discriminator's gradients from this step are cleared before its next update)


@pytest.mark.parametrize("loss", ["non_saturating", "wgan_gp"])
def test_fit_gan_is_algorithm_1_with_its_random_streams(loss):
    """The one training loop runs exactly the algorithm of the papers, bit for bit: same batches, same latents,
    same penalty epsilons, in the same order."""
    objective = G.GAN_LOSSES[loss] if isinstance(LOSSES[loss], str) else LOSSES[loss]
    kw = {"steps": 7, "batch_size": 24, "latent_dim": 4, "n_critic": 2, "seed": 5}
    gen_a, dis_a = small_gan()
    G.fit_gan(gen_a, dis_a, gaussian_data(100), loss=objective, lr_g=1e-2, lr_d=1e-2, progress=False, **kw)
    gen_b, dis_b = small_gan()
    _hand_written_algorithm_1(gen_b, dis_b, gaussian_data(100), objective, lr=1e-2, **kw)
    for a, b in zip([*gen_a.parameters(), *dis_a.parameters()], [*gen_b.parameters(), *dis_b.parameters()]):
        assert torch.equal(a, b)


class _Interrupt(Exception):
    pass


def _resumable_gan_run(path, loss, *, stop_at=None, init_seed=0, **kw):
    gen, dis = small_gan(seed=init_seed)
    labels = torch.arange(300) % 3
    data = gaussian_data(300) + labels[:, None].float()

    def crash(step, g, d, h):
        if step == stop_at:
            raise _Interrupt

    args = dict(loss=LOSSES[loss], steps=12, batch_size=32, latent_dim=4, n_critic=2, seed=4, log_every=5,
                lr_schedule="linear", progress=False, checkpoint_path=path, **kw)
    if stop_at is None:
        return gen, G.fit_gan(gen, dis, data, **args)
    with pytest.raises(_Interrupt):
        G.fit_gan(gen, dis, data, checkpoint_every=3, callback=crash, **args)
    return gen, None


@pytest.mark.parametrize("loss", ["non_saturating", "wgan_gp", "wgan_clip"])
def test_fit_gan_resumed_from_a_checkpoint_ends_bit_identical(tmp_path, loss):
    gen_a, hist_a = _resumable_gan_run(None, loss)
    path = tmp_path / "gan.pt"
    _resumable_gan_run(path, loss, stop_at=8)  # the last checkpoint is at step 6
    assert torch.load(path, weights_only=True)["step"] == 6
    torch.manual_seed(1234)  # "a new process": other initial weights, another global RNG state
    gen_c, hist_c = _resumable_gan_run(path, loss, init_seed=99)
    for a, c in zip(gen_a.parameters(), gen_c.parameters()):
        assert torch.equal(a, c)
    assert hist_a.steps == hist_c.steps == [5, 10, 12]
    for key in hist_a.keys():  # noqa: SIM118 (a History, not a dict: it has no __iter__)
        assert hist_a[key] == hist_c[key], key


def test_fit_gan_resume_needs_the_saved_latent_stream(tmp_path):
    """The test above can fail: a checkpoint whose latent stream is replaced continues differently."""
    gen_a, _ = _resumable_gan_run(None, "non_saturating")
    path = tmp_path / "gan.pt"
    _resumable_gan_run(path, "non_saturating", stop_at=8)
    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt["players"]) == {"discriminator", "generator"} and set(ckpt["generators"]) == {"latents", "penalty"}
    ckpt["generators"]["latents"] = torch.Generator().manual_seed(777).get_state()
    torch.save(ckpt, path)
    gen_c, _ = _resumable_gan_run(path, "non_saturating")
    assert not all(torch.equal(a, c) for a, c in zip(gen_a.parameters(), gen_c.parameters()))


def test_fit_gan_names_the_objective_to_pass_for_the_wasserstein_losses():
    gen, dis = small_gan()
    for loss, fix in (("wgan_gp", r"coursekit\.wasserstein\.wgan_gp_loss\(gp_weight="),
                      ("wgan_clip", r"coursekit\.wasserstein\.wgan_clip_loss\(clip=")):
        with pytest.raises(ValueError, match=fix):
            G.fit_gan(gen, dis, gaussian_data(), loss=loss, steps=1, batch_size=8, latent_dim=4)
    assert G.GAN_LOSS_DEFAULTS["non_saturating"] == {"lr_g": 2e-4, "lr_d": 2e-4, "betas": (0.5, 0.999),
                                                     "n_critic": 1, "optimizer": "adam"}


# ------------------------------------------------------------------------------------ image GANs (digits)
@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_generator_shapes_and_range():
    torch.manual_seed(0)
    g = G.DigitsGenerator(latent_dim=8, channels=8)
    x = g(torch.randn(5, 8))
    assert x.shape == (5, 1, 8, 8) and x.dtype == torch.float32
    assert bool((x > 0).all() and (x < 1).all())
    s1 = g.sample(4, generator=torch.Generator().manual_seed(1))
    s2 = g.sample(4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(s1, s2) and s1.shape == (4, 1, 8, 8)


def test_discriminator_shapes_and_flat_input():
    torch.manual_seed(0)
    d = G.DigitsDiscriminator(channels=8)
    x = torch.rand(6, 1, 8, 8)
    out = d(x)
    assert out.shape == (6,)
    assert torch.allclose(d(x.reshape(6, 64)), out)


def test_no_batch_statistics():
    """A sample's logit must not depend on the other samples in its batch (no batch norm)."""
    torch.manual_seed(0)
    d, g = G.DigitsDiscriminator(channels=8), G.DigitsGenerator(latent_dim=4, channels=8)
    x = torch.rand(8, 1, 8, 8)
    assert torch.allclose(d(x)[:2], d(x[:2]), atol=1e-6)
    z = torch.randn(8, 4)
    assert torch.allclose(g(z)[:2], g(z[:2]), atol=1e-6)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in [*d.modules(), *g.modules()])


def test_validation_errors():
    g, d = G.DigitsGenerator(latent_dim=4, channels=4), G.DigitsDiscriminator(channels=4)
    gc, dc = G.DigitsGenerator(latent_dim=4, channels=4, n_classes=10), G.DigitsDiscriminator(channels=4, n_classes=10)
    with pytest.raises(ValueError, match="shape"):
        g(torch.randn(3, 5))
    with pytest.raises(ValueError, match="finite|NaN"):
        g(torch.full((2, 4), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        d(torch.rand(3, 1, 7, 7))
    with pytest.raises(ValueError, match="unconditional"):
        g(torch.randn(3, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="conditional"):
        gc(torch.randn(3, 4))
    with pytest.raises(ValueError, match="0..9"):
        dc(torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 10]))
    with pytest.raises(TypeError, match="integer"):
        dc(torch.rand(3, 1, 8, 8), torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        gc(torch.randn(3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError):
        G.DigitsGenerator(latent_dim=0)


def test_conditional_nets_use_the_label():
    torch.manual_seed(0)
    g = G.DigitsGenerator(latent_dim=4, channels=8, n_classes=10)
    z = torch.randn(1, 4).expand(10, 4)
    x = g(z, torch.arange(10))
    assert (x[0] - x[1]).abs().max() > 1e-4  # same noise, different class -> different image
    d = G.DigitsDiscriminator(channels=8, n_classes=10)
    img = torch.rand(1, 1, 8, 8).expand(10, 1, 8, 8)
    logits = d(img, torch.arange(10))
    assert logits.std() > 0


def test_projection_formula():
    """logit(x, y) = w^T phi(x) + b + embed(y)^T phi(x) (Miyato & Koyama 2018, the projection form)."""
    torch.manual_seed(1)
    d = G.DigitsDiscriminator(channels=4, n_classes=3)
    x, y = torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 2, 1, 0])
    phi = d.features(2 * x - 1)
    want = phi @ d.head.weight[0] + d.head.bias[0] + (d.embed.weight[y] * phi).sum(1)
    assert torch.allclose(d(x, y), want, atol=1e-5)


def test_a_few_steps_train_the_discriminator():
    """After 60 discriminator steps against a fixed generator, its loss is well below the chance value log 4."""
    torch.manual_seed(0)
    x, _ = ck.data.load_digits("train", image_shape=True)
    g, d = G.DigitsGenerator(latent_dim=8, channels=8), G.DigitsDiscriminator(channels=8)
    opt = torch.optim.Adam(d.parameters(), lr=2e-3)
    for _ in range(60):
        real = x[torch.randint(0, len(x), (64,))]
        with torch.no_grad():
            fake = g.sample(64)
        loss = F.softplus(-d(real)).mean() + F.softplus(d(fake)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * math.log(4)


def test_class_agreement():
    x, y = ck.data.load_digits("test")
    out = G.class_agreement(x, y)
    clf = ck.metrics.get_digits_classifier()
    assert out["accuracy"] == pytest.approx(clf.accuracy["test"], abs=1e-6)
    assert len(out["per_class"]) == 10 and all(0 <= a <= 1 for a in out["per_class"])
    assert 0 < out["confidence"] <= 1 and out["predicted"].shape == y.shape
    wrong = G.class_agreement(x[:20], (y[:20] + 1) % 10)
    assert wrong["accuracy"] < 0.2
    missing = G.class_agreement(x[:3], torch.tensor([1, 1, 2]))
    assert math.isnan(missing["per_class"][0])
    with pytest.raises(ValueError, match="one entry per example"):
        G.class_agreement(x[:3], y[:2])
    with pytest.raises(ValueError, match="0..9"):
        G.class_agreement(x[:2], torch.tensor([0, 12]))


# ------------------------------------------------------------------ spectral normalisation, R1, FGSM
def _known_spectrum(sv, m=9, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    s = torch.zeros(m, n, dtype=torch.float64)
    s[range(len(sv)), range(len(sv))] = torch.tensor(sv, dtype=torch.float64)
    return u @ s @ v.T


def test_power_iteration_matches_torch_linalg_largest_singular_value():
    g = torch.Generator().manual_seed(1)
    W_batch = torch.randn(4, 12, 7, generator=g, dtype=torch.float64)
    sigma, u, v = G.spectral_norm_power_iteration(W_batch, 500, generator=g)
    torch.testing.assert_close(sigma, torch.linalg.matrix_norm(W_batch, ord=2), rtol=1e-6, atol=0)
    torch.testing.assert_close(u.norm(dim=-1), torch.ones(4, dtype=torch.float64))
    # u, v are the top singular vectors: W v = sigma u
    torch.testing.assert_close(torch.einsum("bmn,bn->bm", W_batch, v), sigma[:, None] * u, rtol=1e-4, atol=1e-4)
    # the error shrinks like (s2 / s1)^(2t): with s = (2, 1, ...) twenty steps reach ~1e-12 relative error
    W_known = _known_spectrum([2.0, 1.0, 0.5, 0.1])
    errors = [abs(G.spectral_norm_power_iteration(W_known, t, generator=torch.Generator().manual_seed(3))[0].item()
                  - 2.0) for t in (1, 5, 20)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-9
    # sigma is never above the largest singular value (Rayleigh quotient)
    assert (sigma <= torch.linalg.svdvals(W_batch)[:, 0] + 1e-12).all()


def test_power_iteration_bad_input():
    with pytest.raises(ValueError, match="batch of matrices"):
        G.spectral_norm_power_iteration(torch.ones(3), 1)
    with pytest.raises(ValueError, match="u must have shape"):
        G.spectral_norm_power_iteration(torch.ones(2, 3, 4), 1, u=torch.ones(3))
    with pytest.raises(ValueError, match="n_iter"):
        G.spectral_norm_power_iteration(torch.ones(3, 4), 0)


def test_add_spectral_norm_makes_every_layer_of_every_member_norm_one():
    model = G.EnsembleMLP([0, 1, 2], 2, 1, hidden=(16, 16))
    G.add_spectral_norm(model, n_iter=1)
    model.train()
    x = torch.randn(5, 3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    sn0 = model.weights.parametrizations["0"][0]
    model(x)
    u_first = sn0.u.clone()
    model.eval()
    model(x)  # eval mode: the stored vectors, no new power iteration
    torch.testing.assert_close(sn0.u, u_first, rtol=0, atol=0)
    model.train()
    for _ in range(60):  # one power iteration per training-mode forward pass, u kept between calls
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    assert not torch.equal(sn0.u, u_first)
    model(x)
    for w in model.weights:  # the parametrised (normalised) weights
        torch.testing.assert_close(torch.linalg.matrix_norm(w, ord=2), torch.ones(3), rtol=1e-3, atol=0)
    # the Lipschitz bound holds for each member: |f(x) - f(y)| <= |x - y| (ReLU is 1-Lipschitz)
    a, b = torch.randn(200, 3, 2), torch.randn(200, 3, 2)
    with torch.no_grad():
        ratio = (model(a) - model(b)).norm(dim=-1) / (a - b).norm(dim=-1)
    assert ratio.max() <= 1.0 + 1e-3
    # gradients reach the raw weights
    opt.zero_grad()
    model(x).sum().backward()
    assert model.weights.parametrizations["0"].original.grad.abs().sum() > 0
    with pytest.raises(TypeError, match="EnsembleMLP"):
        G.add_spectral_norm(torch.nn.Linear(2, 2))


def test_r1_penalty_against_a_closed_form_gradient():
    # critic l(x) = a^T x + 0.5 x^T B x: grad = a + B x (B symmetric), so R1 = mean ||a + B x||^2
    g = torch.Generator().manual_seed(4)
    a = torch.randn(3, generator=g, dtype=torch.float64)
    M = torch.randn(3, 3, generator=g, dtype=torch.float64)
    B = M + M.T
    x = torch.randn(10, 3, generator=g, dtype=torch.float64)
    critic = lambda t: t @ a + 0.5 * ((t @ B) * t).sum(-1)
    ref = (a + x @ B).pow(2).sum(-1).mean()
    torch.testing.assert_close(G.r1_penalty(critic, x), ref)
    # differentiable in the critic's parameters (create_graph=True)
    a_req = a.clone().requires_grad_(True)
    G.r1_penalty(lambda t: t @ a_req, x).backward()
    torch.testing.assert_close(a_req.grad, 2 * a)
    with pytest.raises(ValueError, match="one score per example"):
        G.r1_penalty(lambda t: t, x)


def test_non_saturating_r1_trains_through_fit_gan_and_logs_the_penalty():
    x = D.ring_of_gaussians(256, std=0.05, seed=0)
    torch.manual_seed(0)
    gen, dis = ck.nets.MLP(4, 2, hidden=(16,)), ck.nets.MLP(2, 1, hidden=(16,))
    objective = G.non_saturating_r1_loss(gamma=2.0)
    assert objective.penalty_weight == 1.0 and objective.penalty_key == "r1"
    history = G.fit_gan(gen, dis, x, loss=objective, steps=5, batch_size=32, latent_dim=4, progress=False)
    assert "r1" in history and all(v >= 0 for v in history["r1"])
    with pytest.raises(ValueError):
        G.non_saturating_r1_loss(gamma=0.0)


def test_fgsm_is_the_sign_of_the_autograd_gradient_within_the_budget():
    torch.manual_seed(0)
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    x = torch.rand(6, 64, generator=torch.Generator().manual_seed(5)) * 0.8 + 0.1
    y = torch.arange(6)
    eps = 0.05
    x_adv = G.fgsm_perturb(clf, x, y, eps)
    assert (x_adv - x).abs().max() <= eps + 1e-7 and x_adv.min() >= 0 and x_adv.max() <= 1
    # for a linear classifier the gradient of the cross-entropy is W^T (softmax - onehot), computed here by hand
    W_, b_ = clf[1].weight.detach(), clf[1].bias.detach()
    p = torch.softmax(x @ W_.T + b_, 1)
    grad = (p - F.one_hot(y, 10).float()) @ W_
    torch.testing.assert_close(x_adv, (x + eps * grad.sign()).clamp(0, 1))
    # the loss goes up
    loss = lambda t: F.cross_entropy(clf(t), y).item()
    assert loss(x_adv) > loss(x)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        G.fgsm_perturb(clf, x + 1, y, eps)
    with pytest.raises(ValueError, match="labels"):
        G.fgsm_perturb(clf, x, y.float(), eps)
    with pytest.raises(ValueError, match="epsilon"):
        G.fgsm_perturb(clf, x, y, -0.1)
