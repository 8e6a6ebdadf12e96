"""Tests for the chapter 06 image GANs in coursekit.gan: shapes, ranges, input validation, the conditional nets
really use the label, the projection discriminator matches its formula, and a few training steps on the digits
move the discriminator's loss below its chance value."""

import math

import pytest
import torch
from torch.nn import functional as F

import coursekit as ck
from coursekit.gan import DigitsDiscriminator, DigitsGenerator, class_agreement


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_generator_shapes_and_range():
    torch.manual_seed(0)
    g = DigitsGenerator(latent_dim=8, channels=8)
    x = g(torch.randn(5, 8))
    assert x.shape == (5, 1, 8, 8) and x.dtype == torch.float32
    assert bool((x > 0).all() and (x < 1).all())
    s1 = g.sample(4, generator=torch.Generator().manual_seed(1))
    s2 = g.sample(4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(s1, s2) and s1.shape == (4, 1, 8, 8)


def test_discriminator_shapes_and_flat_input():
    torch.manual_seed(0)
    d = DigitsDiscriminator(channels=8)
    x = torch.rand(6, 1, 8, 8)
    out = d(x)
    assert out.shape == (6,)
    assert torch.allclose(d(x.reshape(6, 64)), out)


def test_no_batch_statistics():
    """A sample's logit must not depend on the other samples in its batch (no batch norm)."""
    torch.manual_seed(0)
    d, g = DigitsDiscriminator(channels=8), DigitsGenerator(latent_dim=4, channels=8)
    x = torch.rand(8, 1, 8, 8)
    assert torch.allclose(d(x)[:2], d(x[:2]), atol=1e-6)
    z = torch.randn(8, 4)
    assert torch.allclose(g(z)[:2], g(z[:2]), atol=1e-6)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in [*d.modules(), *g.modules()])


def test_validation_errors():
    g, d = DigitsGenerator(latent_dim=4, channels=4), DigitsDiscriminator(channels=4)
    gc, dc = DigitsGenerator(latent_dim=4, channels=4, n_classes=10), DigitsDiscriminator(channels=4, n_classes=10)
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
        DigitsGenerator(latent_dim=0)


def test_conditional_nets_use_the_label():
    torch.manual_seed(0)
    g = DigitsGenerator(latent_dim=4, channels=8, n_classes=10)
    z = torch.randn(1, 4).expand(10, 4)
    x = g(z, torch.arange(10))
    assert (x[0] - x[1]).abs().max() > 1e-4  # same noise, different class -> different image
    d = DigitsDiscriminator(channels=8, n_classes=10)
    img = torch.rand(1, 1, 8, 8).expand(10, 1, 8, 8)
    logits = d(img, torch.arange(10))
    assert logits.std() > 0


def test_projection_formula():
    """logit(x, y) = w^T phi(x) + b + embed(y)^T phi(x) (Miyato & Koyama 2018, the projection form)."""
    torch.manual_seed(1)
    d = DigitsDiscriminator(channels=4, n_classes=3)
    x, y = torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 2, 1, 0])
    phi = d.features(2 * x - 1)
    want = phi @ d.head.weight[0] + d.head.bias[0] + (d.embed.weight[y] * phi).sum(1)
    assert torch.allclose(d(x, y), want, atol=1e-5)


def test_a_few_steps_train_the_discriminator():
    """After 60 discriminator steps against a fixed generator, its loss is well below the chance value log 4."""
    torch.manual_seed(0)
    x, _ = ck.data.load_digits("train", image_shape=True)
    g, d = DigitsGenerator(latent_dim=8, channels=8), DigitsDiscriminator(channels=8)
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
    out = class_agreement(x, y)
    clf = ck.metrics.get_digits_classifier()
    assert out["accuracy"] == pytest.approx(clf.accuracy["test"], abs=1e-6)
    assert len(out["per_class"]) == 10 and all(0 <= a <= 1 for a in out["per_class"])
    assert 0 < out["confidence"] <= 1 and out["predicted"].shape == y.shape
    wrong = class_agreement(x[:20], (y[:20] + 1) % 10)
    assert wrong["accuracy"] < 0.2
    missing = class_agreement(x[:3], torch.tensor([1, 1, 2]))
    assert math.isnan(missing["per_class"][0])
    with pytest.raises(ValueError, match="one entry per image"):
        class_agreement(x[:3], y[:2])
    with pytest.raises(ValueError, match="0..9"):
        class_agreement(x[:2], torch.tensor([0, 12]))
