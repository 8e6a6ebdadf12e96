"""Tests for coursekit.nets: shapes, layer structure, input checks, gradients, seeded initialisation."""

import pytest
import torch
from torch import nn

from coursekit.nets import MLP, ConvDecoder8x8, ConvEncoder8x8


def test_mlp_shapes_and_structure():
    m = MLP(2, 3, hidden=(16, 8))
    assert m(torch.zeros(5, 2)).shape == (5, 3)
    assert m(torch.zeros(4, 5, 2)).shape == (4, 5, 3)  # any leading batch dimensions
    linears = [layer for layer in m.modules() if isinstance(layer, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(2, 16), (16, 8), (8, 3)]
    assert sum(isinstance(layer, nn.SiLU) for layer in m.modules()) == 2  # none after the output layer


def test_mlp_default_hidden_and_custom_activation():
    m = MLP(64, 10)
    assert [lin.out_features for lin in m.modules() if isinstance(lin, nn.Linear)] == [256, 256, 10]
    r = MLP(2, 1, hidden=(4,), activation=nn.ReLU)
    assert any(isinstance(layer, nn.ReLU) for layer in r.modules())
    assert not any(isinstance(layer, nn.SiLU) for layer in r.modules())


def test_mlp_without_hidden_layers_is_affine():
    torch.manual_seed(0)
    m = MLP(3, 2, hidden=())
    x = torch.randn(7, 3)
    lin = m.net[0]
    assert torch.allclose(m(x), x @ lin.weight.T + lin.bias)


def test_mlp_output_is_unbounded():
    torch.manual_seed(0)
    m = MLP(1, 1, hidden=(8,))
    with torch.no_grad():
        y = m(torch.linspace(-1e3, 1e3, 11)[:, None])
    assert float(y.abs().max()) > 10  # no squashing output activation


@pytest.mark.parametrize(
    "args, exc",
    [((0, 1), ValueError), ((2, -1), ValueError), ((2.0, 1), TypeError), ((2, 1, (8, 0)), ValueError)],
)
def test_mlp_bad_sizes(args, exc):
    with pytest.raises(exc):
        MLP(*args)


def test_mlp_wrong_input_dimension():
    m = MLP(64, 8, hidden=(4,))
    with pytest.raises(ValueError, match=r"\(\.\.\., 64\)"):
        m(torch.zeros(3, 63))
    with pytest.raises(TypeError):
        m([[0.0] * 64])


def test_conv_encoder_decoder_shapes():
    enc, dec = ConvEncoder8x8(16, channels=4), ConvDecoder8x8(8, channels=4)
    assert enc(torch.zeros(5, 1, 8, 8)).shape == (5, 16)
    assert dec(torch.zeros(5, 8)).shape == (5, 1, 8, 8)
    assert ConvEncoder8x8(3).net[0].out_channels == 32  # default width


@pytest.mark.parametrize("shape", [(5, 64), (5, 8, 8), (5, 3, 8, 8), (5, 1, 28, 28)])
def test_conv_encoder_rejects_wrong_shapes(shape):
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        ConvEncoder8x8(4, channels=2)(torch.zeros(shape))


def test_conv_decoder_rejects_wrong_code_size():
    with pytest.raises(ValueError):
        ConvDecoder8x8(8, channels=2)(torch.zeros(5, 7))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    enc, dec = ConvEncoder8x8(6, channels=4), ConvDecoder8x8(6, channels=4)
    x = torch.rand(4, 1, 8, 8)
    loss = nn.functional.binary_cross_entropy_with_logits(dec(enc(x)), x)
    loss.backward()
    for name, p in list(enc.named_parameters()) + list(dec.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_initialisation_follows_the_seed():
    torch.manual_seed(3)
    a = MLP(4, 2, hidden=(8,))
    torch.manual_seed(3)
    b = MLP(4, 2, hidden=(8,))
    torch.manual_seed(4)
    c = MLP(4, 2, hidden=(8,))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_unet_without_classes_is_unchanged_and_refuses_labels():
    from coursekit.nets import UNet

    net = UNet(channels=8, groups=4)
    assert net.label_embed is None and not any(k.startswith("label_embed") for k in net.state_dict())
    with pytest.raises(ValueError, match="unconditional U-Net"):
        net(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))


def test_class_conditional_unet():
    """The label embedding is added to the time embedding: the same seed gives the other layers the unconditional
    U-Net's weights, the output depends on the label, no label means the null label K, and bad labels are refused."""
    from coursekit.nets import UNet

    torch.manual_seed(1)
    plain = UNet(channels=8, groups=4)
    torch.manual_seed(1)
    cond = UNet(channels=8, groups=4, n_classes=3)
    shared = plain.state_dict()
    assert all(torch.equal(cond.state_dict()[k], v) for k, v in shared.items())
    assert cond.label_embed.weight.shape == (4, 32)  # labels 0..2 and the null label 3, size 4C
    for p in cond.parameters():
        nn.init.normal_(p, std=0.05)
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([0, 3, 7, 9])
    y = torch.tensor([0, 1, 2, 3])
    out = cond(x, t, y)
    assert out.shape == x.shape
    assert not torch.allclose(out, cond(x, t, torch.tensor([1, 2, 0, 3])))
    assert torch.equal(cond(x, t), cond(x, t, torch.full((4,), 3)))
    assert torch.allclose(cond(x[:1], t[:1], y[:1]), out[:1], atol=1e-6)  # one image does not see the others
    with pytest.raises(ValueError, match=r"y must lie in 0\.\.3"):
        cond(x, t, torch.tensor([0, 1, 2, 4]))
    with pytest.raises(TypeError, match="integer tensor"):
        cond(x, t, torch.zeros(4))
    with pytest.raises(ValueError, match="n_classes"):
        UNet(channels=8, groups=4, n_classes=0)
