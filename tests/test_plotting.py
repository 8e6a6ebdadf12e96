"""Tests for coursekit.plotting with the non-interactive Agg backend: return values, drawn content, bad input."""

import math

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display needed

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.axes import Axes

from coursekit import plotting
from coursekit.train import History


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _digits(n):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 17, (n, 64), generator=g).float() / 16


def test_image_grid_places_images_row_by_row():
    x = _digits(23)
    ax = plotting.image_grid(x, nrow=10, title="digits")
    assert isinstance(ax, Axes) and ax.get_title() == "digits"
    canvas = np.asarray(ax.images[0].get_array())
    assert canvas.shape == (3 * 9 - 1, 10 * 9 - 1)  # 3 rows of 10, 1-pixel gaps
    assert np.allclose(canvas[0:8, 0:8], x[0].reshape(8, 8).numpy())
    assert np.allclose(canvas[0:8, 9:17], x[1].reshape(8, 8).numpy())
    assert np.allclose(canvas[9:17, 0:8], x[10].reshape(8, 8).numpy())
    assert np.allclose(canvas[18:26, 18:26], x[22].reshape(8, 8).numpy())
    assert np.all(canvas[18:26, 27:] == 0)  # empty cells stay blank


@pytest.mark.parametrize("shape", [(6, 64), (6, 1, 8, 8), (6, 8, 8), (6, 3, 8, 8), (6, 784)])
def test_image_grid_accepts_layouts(shape):
    x = torch.rand(shape)
    ax = plotting.image_grid(x, nrow=3)
    side = 28 if shape[-1] == 784 else 8
    assert np.asarray(ax.images[0].get_array()).shape[:2] == (2 * side + 1, 3 * side + 2)


def test_image_grid_draws_into_given_axes_and_numpy_input():
    _, axes = plt.subplots(1, 2)
    out = plotting.image_grid(np.random.rand(4, 64), nrow=2, ax=axes[1])
    assert out is axes[1] and len(axes[0].images) == 0


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.randn(4, 64) * 5, "sigmoid"),          # logits, not probabilities
        (torch.full((4, 64), float("nan")), "NaN"),
        (torch.rand(4, 63), "square"),
        (torch.rand(4, 2, 8, 8), "C = 1 or 3"),
        (torch.rand(64), "shape"),
    ],
)
def test_image_grid_bad_input(x, match):
    with pytest.raises(ValueError, match=match):
        plotting.image_grid(x)


def test_image_grid_bad_nrow_and_type():
    with pytest.raises(ValueError, match="nrow"):
        plotting.image_grid(torch.rand(4, 64), nrow=0)
    with pytest.raises(TypeError):
        plotting.image_grid([[0.5] * 64])


def _history():
    h = History()
    for step in range(10, 110, 10):
        h.log(step, loss=1.0 / step, kl=0.1 * step)
    return h


def test_plot_history_lines_and_smoothing():
    h = _history()
    ax = plotting.plot_history(h, keys=("loss", "kl"), smooth=0.5, logy=True)
    assert isinstance(ax, Axes) and len(ax.lines) == 4  # raw (faint) + smoothed per key
    assert ax.get_yscale() == "log"
    assert list(ax.lines[0].get_xdata()) == h.steps
    raw = plotting.plot_history(h, keys="loss", smooth=0)
    assert len(raw.lines) == 1 and np.allclose(raw.lines[0].get_ydata(), h["loss"])


def test_plot_history_from_dict_and_nan_gaps():
    ax = plotting.plot_history({"loss": [3.0, float("nan"), 1.0]}, smooth=0.9)
    smoothed = ax.lines[1].get_ydata()
    assert list(ax.lines[0].get_xdata()) == [1, 2, 3]
    assert smoothed[0] == 3.0 and math.isnan(smoothed[1]) and 1.0 < smoothed[2] < 3.0


def test_plot_history_bad_input():
    with pytest.raises(ValueError, match="'acc' was not logged"):
        plotting.plot_history(_history(), keys=("acc",))
    with pytest.raises(ValueError, match="smooth"):
        plotting.plot_history(_history(), smooth=1.0)


def test_scatter_2d():
    x = torch.randn(100, 2)
    modes = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    ax = plotting.scatter_2d(x, modes=modes, lim=3, title="samples")
    assert isinstance(ax, Axes) and len(ax.collections) == 2
    assert np.allclose(ax.collections[0].get_offsets(), x.numpy())
    assert ax.get_xlim() == (-3, 3)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        plotting.scatter_2d(torch.randn(10, 3))
    with pytest.raises(ValueError, match=r"\(K, 2\)"):
        plotting.scatter_2d(x, modes=torch.zeros(3))


def _std_normal_log_prob(p):
    return -0.5 * (p**2).sum(dim=1) - math.log(2 * math.pi)


def test_density_2d_shows_the_density():
    ax = plotting.density_2d(_std_normal_log_prob, xlim=(-3, 3), ylim=(-2, 2), n=41)
    z = np.asarray(ax.images[0].get_array())
    assert z.shape == (41, 41)
    assert np.isclose(z.max(), 1 / (2 * math.pi), rtol=1e-5)  # peak of N(0, I) at the grid centre
    assert np.unravel_index(z.argmax(), z.shape) == (20, 20)
    assert ax.images[0].get_extent() == [-3, 3, -2, 2]
    logz = np.asarray(plotting.density_2d(_std_normal_log_prob, n=11, log=True).images[0].get_array())
    assert np.isclose(logz.max(), -math.log(2 * math.pi), rtol=1e-5)


def test_density_2d_orientation():
    # density increasing with y only: the top row (origin="lower": last row) is the largest
    ax = plotting.density_2d(lambda p: p[:, 1], xlim=(0, 1), ylim=(0, 1), n=5)
    z = np.asarray(ax.images[0].get_array())
    assert np.all(np.diff(z[:, 0]) > 0) and np.allclose(z[0], z[0, 0])


def test_density_2d_bad_input():
    with pytest.raises(ValueError, match="shape"):
        plotting.density_2d(lambda p: p, n=5)
    with pytest.raises(ValueError, match="NaN"):
        plotting.density_2d(lambda p: p[:, 0] * float("nan"), n=5)
    with pytest.raises(ValueError, match="xlim"):
        plotting.density_2d(_std_normal_log_prob, xlim=(1, -1))
    zero_density = plotting.density_2d(lambda p: torch.full((p.shape[0],), -math.inf), n=5)
    assert np.all(np.asarray(zero_density.images[0].get_array()) == 0)


def test_vector_field_2d():
    ax = plotting.vector_field_2d(lambda p: -p, n=7)
    assert isinstance(ax, Axes) and len(ax.collections) == 1
    assert ax.collections[0].N == 49
    with pytest.raises(ValueError):
        plotting.vector_field_2d(lambda p: p[:, 0], n=7)


def test_interpolation_strip_rows():
    a, b = torch.rand(8, 64), torch.rand(8, 64)
    ax = plotting.interpolation_strip([a, b], title="interp")
    canvas = np.asarray(ax.images[0].get_array())
    assert canvas.shape == (17, 71)  # 2 rows of 8
    assert np.allclose(canvas[9:17, 63:71], b[7].reshape(8, 8).numpy())
    one = plotting.interpolation_strip(torch.rand(5, 1, 8, 8))
    assert np.asarray(one.images[0].get_array()).shape == (8, 44)
    five_d = plotting.interpolation_strip(torch.rand(3, 4, 1, 8, 8))
    assert np.asarray(five_d.images[0].get_array()).shape == (26, 35)
    with pytest.raises(ValueError, match="same number"):
        plotting.interpolation_strip([a, b[:5]])
