"""Tests for coursekit.data: digits splits, 2-D toy distributions, the offline MNIST IDX reader."""

import gzip

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sk_load_digits

from coursekit import data

# ----------------------------------------------------------------------------------------------------
# digits
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_digits_shapes_dtypes_ranges(split):
    x, y = data.load_digits(split)
    n = data.DIGITS_SPLIT_SIZES[split]
    assert x.shape == (n, 64) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.equal(x * 16, torch.round(x * 16))  # intensities 0..16 divided by 16
    assert set(y.tolist()) == set(range(10))


def test_digits_split_sizes_constant():
    assert data.DIGITS_SPLIT_SIZES == {"train": 1297, "val": 250, "test": 250}


def test_digits_splits_are_disjoint_and_cover_the_dataset():
    idx = data._digits_split_indices()
    all_idx = np.concatenate([idx[s] for s in ("train", "val", "test")])
    assert len(all_idx) == 1797 and len(np.unique(all_idx)) == 1797
    # Public behaviour: the three splits together are exactly scikit-learn's images (as a multiset).
    xs = torch.cat([data.load_digits(s)[0] for s in ("train", "val", "test")]).numpy() * 16
    ref = sk_load_digits().data
    assert xs.shape == ref.shape == (1797, 64)
    assert np.array_equal(xs[np.lexsort(xs.T)], ref[np.lexsort(ref.T)])


def test_digits_are_deterministic_and_pinned():
    x1, y1 = data.load_digits("val")
    x2, y2 = data.load_digits("val")
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    # Guards against the split silently changing (e.g. a different permutation generator).
    assert data.load_digits("train")[1][:10].tolist() == [2, 8, 2, 6, 6, 7, 1, 9, 8, 5]


def test_digits_binarize_and_image_shape():
    x, _ = data.load_digits("test")
    xb, _ = data.load_digits("test", binarize=True)
    assert set(xb.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(xb, (x >= 0.5).float())
    xi, _ = data.load_digits("test", image_shape=True)
    assert xi.shape == (250, 1, 8, 8)
    assert torch.equal(xi.reshape(250, 64), x)


def test_digits_device_argument():
    x, y = data.load_digits("val", device="cpu")
    assert x.device.type == "cpu" and y.device.type == "cpu"
    if torch.cuda.is_available():  # (the "meta" device would do on CPU-only machines, but costs seconds)
        xc, yc = data.load_digits("val", device="cuda")
        assert xc.device.type == "cuda" and yc.device.type == "cuda" and torch.equal(xc.cpu(), x)


@pytest.mark.parametrize("split", ["training", "valid", "", None])
def test_digits_bad_split(split):
    with pytest.raises(ValueError, match="train"):
        data.load_digits(split)


# ----------------------------------------------------------------------------------------------------
# 2-D toy distributions
# ----------------------------------------------------------------------------------------------------

TOYS = ["two_moons", "swiss_roll", "ring_of_gaussians", "grid_of_gaussians"]


@pytest.mark.parametrize("name", TOYS)
def test_toy_shape_dtype_determinism(name):
    fn = getattr(data, name)
    a = fn(300, seed=1)
    assert a.shape == (300, 2) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, fn(300, seed=1))
    assert not torch.equal(a, fn(300, seed=2))
    assert torch.equal(a, data.sample_2d(name, 300, seed=1))


@pytest.mark.parametrize("name", TOYS)
def test_toy_does_not_touch_global_rng(name):
    state = torch.get_rng_state()
    getattr(data, name)(50)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("name", TOYS)
@pytest.mark.parametrize("n, exc", [(-5, ValueError), (0, ValueError), (2.0, TypeError)])
def test_toy_bad_n(name, n, exc):
    with pytest.raises(exc, match="n"):
        getattr(data, name)(n)


def test_two_moons_without_noise_lies_on_the_two_circles():
    p = data.two_moons(500, noise=0.0).double()
    upper = (p[:, 0] ** 2 + p[:, 1] ** 2 - 1).abs() < 1e-5
    lower = ((p[:, 0] - 1) ** 2 + (p[:, 1] - 0.5) ** 2 - 1).abs() < 1e-5
    assert bool((upper | lower).all())
    assert 150 < int(upper.sum()) < 350  # both moons used, roughly half each
    with pytest.raises(ValueError, match="noise"):
        data.two_moons(10, noise=-0.1)


def test_swiss_roll_roughly_unit_std():
    p = data.swiss_roll(5000)
    assert 0.7 < float(p.std(0).min()) and float(p.std(0).max()) < 1.3


def _nearest_mode(points, modes):
    d = torch.cdist(points, modes)
    dist, which = d.min(dim=1)
    return dist, which


def test_ring_of_gaussians_modes_and_coverage():
    modes = data.ring_modes()
    assert modes.shape == (8, 2)
    assert torch.allclose(modes.norm(dim=1), torch.full((8,), 2.0))
    assert (torch.allclose(modes[0], torch.tensor([2.0, 0.0]))
            and torch.allclose(modes[2], torch.tensor([0.0, 2.0]), atol=1e-6))
    p = data.ring_of_gaussians(1600, std=0.02)
    dist, which = _nearest_mode(p, modes)
    assert float(dist.max()) < 0.02 * 6  # every point within 6 std of a mode
    counts = torch.bincount(which, minlength=8)
    assert int(counts.min()) > 120  # equal weights: about 200 each


def test_grid_of_gaussians_modes_and_coverage():
    modes = data.grid_modes()
    assert modes.shape == (25, 2)
    assert set(modes[:, 0].tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0}
    p = data.grid_of_gaussians(2500, std=0.05)
    dist, which = _nearest_mode(p, modes)
    assert float(dist.max()) < 0.05 * 6
    assert int(torch.bincount(which, minlength=25).min()) > 50
    assert data.grid_modes(side=3, spacing=1.0).abs().max() == 1.0


def test_ring_and_grid_bad_parameters():
    with pytest.raises(ValueError):
        data.ring_of_gaussians(10, std=0.0)
    with pytest.raises(ValueError):
        data.ring_of_gaussians(10, n_modes=0)
    with pytest.raises(ValueError):
        data.grid_of_gaussians(10, spacing=-1.0)


def test_gaussian_mixture_statistics_and_weights():
    means = [[-3.0, 0.0], [3.0, 1.0]]
    p = data.gaussian_mixture(20_000, means, [0.5, 1.0], [0.25, 0.75], seed=3)
    right = p[:, 0] > 0
    assert abs(float(right.float().mean()) - 0.75) < 0.02
    assert torch.allclose(p[right].mean(0), torch.tensor([3.0, 1.0]), atol=0.05)
    assert torch.allclose(p[right].std(0), torch.tensor([1.0, 1.0]), atol=0.05)
    assert torch.allclose(p[~right].std(0), torch.tensor([0.5, 0.5]), atol=0.05)
    only_second = data.gaussian_mixture(100, means, 0.1, [0.0, 2.0])  # weights are normalised
    assert bool((only_second[:, 0] > 0).all())


@pytest.mark.parametrize(
    "means, stds, weights",
    [
        ([0.0, 0.0], 1.0, None),                # means not (k, d)
        ([[0.0, 0.0]], 0.0, None),              # std must be > 0
        ([[0.0, 0.0]], [1.0, 1.0, 1.0], None),  # stds shape
        ([[0.0, 0.0], [1.0, 1.0]], 1.0, [1.0, -0.5]),  # negative weight
        ([[0.0, 0.0], [1.0, 1.0]], 1.0, [0.0, 0.0]),   # zero total weight
        ([[0.0, 0.0], [1.0, 1.0]], 1.0, [1.0]),        # wrong number of weights
        ([[float("nan"), 0.0]], 1.0, None),     # non-finite mean
    ],
)
def test_gaussian_mixture_bad_inputs(means, stds, weights):
    with pytest.raises(ValueError):
        data.gaussian_mixture(10, means, stds, weights)


def test_sample_2d_unknown_name():
    with pytest.raises(ValueError, match="two_moons"):
        data.sample_2d("spiral", 10)


def test_sample_2d_aliases_and_kwargs():
    assert torch.equal(data.sample_2d("ring", 20, seed=4, std=0.1), data.ring_of_gaussians(20, seed=4, std=0.1))
    assert torch.equal(data.sample_2d("moons", 20, noise=0.0), data.two_moons(20, noise=0.0))


# ----------------------------------------------------------------------------------------------------
# MNIST IDX files (tiny files written by the tests; never any network)
# ----------------------------------------------------------------------------------------------------


def _write_idx(path, array, magic=None, truncate=0):
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    payload = header + array.tobytes()
    with gzip.open(path, "wb") as f:
        f.write(payload[: len(payload) - truncate])


def _tiny_mnist(root, split="test", n=5):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = np.arange(n, dtype=np.uint8) % 10
    prefix = "t10k" if split == "test" else "train"
    _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
    _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return images, labels


@pytest.mark.parametrize("split", ["train", "test"])
def test_load_mnist_reads_idx_files(tmp_path, split):
    images, labels = _tiny_mnist(tmp_path, split)
    x, y = data.load_mnist(tmp_path, split)
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.tolist() == labels.tolist()
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.allclose(x[:, 0] * 255, torch.from_numpy(images).float())


def test_load_mnist_missing_files_explains_how_to_download(tmp_path):
    _tiny_mnist(tmp_path, "test")
    with pytest.raises(FileNotFoundError) as err:
        data.load_mnist(tmp_path, "train")
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and "download=True" in msg and str(tmp_path) in msg
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST"):
        data.load_mnist(tmp_path / "nothing", "test", fashion=True)


def test_load_mnist_bad_split(tmp_path):
    with pytest.raises(ValueError, match="train"):
        data.load_mnist(tmp_path, "val")


def test_load_mnist_download_uses_pooch_with_known_md5(tmp_path, monkeypatch):
    import pooch

    calls = []

    def fake_retrieve(url, known_hash, fname, path, **kw):
        calls.append((url, known_hash, fname))
        n = 3
        if "images" in fname:
            _write_idx(path / fname, np.zeros((n, 28, 28)))
        else:
            _write_idx(path / fname, np.ones(n))
        return str(path / fname)

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    root = tmp_path / "mnist"
    x, y = data.load_mnist(root, "test", download=True)
    assert x.shape == (3, 1, 28, 28) and y.tolist() == [1, 1, 1]
    expected = dict(data.MNIST_FILES["mnist"]["test"])
    assert [c[2] for c in calls] == list(expected)
    for url, known_hash, fname in calls:
        assert known_hash == f"md5:{expected[fname]}" and url.startswith("https://") and url.endswith(fname)
    data.load_mnist(root, "test", download=True)  # files present now: no second download
    assert len(calls) == 2


def test_read_idx_rejects_corrupt_files(tmp_path):
    good = tmp_path / "ok.gz"
    _write_idx(good, np.zeros((2, 3, 3)))
    assert data.read_idx(good, expected_magic=2051).shape == (2, 3, 3)

    wrong_magic = tmp_path / "magic.gz"
    _write_idx(wrong_magic, np.zeros((2, 3, 3)), magic=0x12345678)
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(wrong_magic)

    labels_not_images = tmp_path / "labels.gz"
    _write_idx(labels_not_images, np.zeros(4))
    with pytest.raises(ValueError, match="2051"):
        data.read_idx(labels_not_images, expected_magic=2051)

    truncated = tmp_path / "short.gz"
    _write_idx(truncated, np.zeros((2, 3, 3)), truncate=5)
    with pytest.raises(ValueError, match="download it again"):
        data.read_idx(truncated)

    not_gzip = tmp_path / "plain.gz"
    not_gzip.write_bytes(b"this is not a gzip file")
    with pytest.raises(ValueError, match="corrupt"):
        data.read_idx(not_gzip)


def test_load_mnist_label_count_mismatch(tmp_path):
    _tiny_mnist(tmp_path, "test", n=5)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4))
    with pytest.raises(ValueError, match="4 labels"):
        data.load_mnist(tmp_path, "test")


# ----------------------------------------------------------------------------------------------------
# sprites with known factors (chapter 14)
def test_sprites_grid_and_splits():
    grid = data.all_sprite_factors()
    assert grid.shape == (4608, 5) and grid.dtype == torch.int64
    assert len({tuple(r) for r in grid.tolist()}) == 4608
    for j, k in enumerate(data.SPRITE_FACTORS.values()):
        assert grid[:, j].min() == 0 and grid[:, j].max() == k - 1
    x_tr, f_tr = data.load_sprites("train")
    x_te, f_te = data.load_sprites("test")
    assert x_tr.shape == (3686, 1, 16, 16) and x_te.shape == (922, 1, 16, 16)
    assert x_tr.dtype == torch.float32 and f_tr.dtype == torch.int64
    both = {tuple(r) for r in f_tr.tolist()} | {tuple(r) for r in f_te.tolist()}
    assert len(both) == 4608  # disjoint and covering
    assert sum(data.SPRITE_SPLIT_SIZES.values()) == 4608


def test_sprites_every_combination_renders_and_differs():
    x, _ = data.load_sprites("all")
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    mass = x.sum(dim=(1, 2, 3))
    assert bool((mass > 3).all())  # every sprite is visible (at least a few pixels of ink)
    flat = (x.reshape(len(x), -1) * 16).round().to(torch.int64)
    assert len({tuple(r) for r in flat.tolist()}) == 4608  # no two factor combinations give the same image
    assert torch.allclose(x * 16, (x * 16).round())  # multiples of 1/16 (4x4 supersampling)


def test_sprites_factors_move_the_image_as_documented():
    vals = data.sprite_factor_values()
    base = torch.tensor([[0, 3, 0, 0, 0]])
    rows = torch.cat([base.clone() for _ in range(8)])
    rows[:, 3] = torch.arange(8)
    x = data.render_sprites(rows)[:, 0].double()
    cols = torch.arange(16, dtype=torch.float64) + 0.5
    cx = (x.sum(1) * cols).sum(1) / x.sum(dim=(1, 2))
    torch.testing.assert_close(cx, vals["x"], atol=0.15, rtol=0)  # the centroid is the x position
    sizes = data.render_sprites(torch.tensor([[1, s, 0, 4, 4] for s in range(4)])).sum(dim=(1, 2, 3))
    assert bool((sizes.diff() > 0).all())  # scale increases the area


def test_sample_sprites_deterministic_and_uniform():
    x1, f1 = data.sample_sprites(3000, seed=5)
    x2, f2 = data.sample_sprites(3000, seed=5)
    assert torch.equal(x1, x2) and torch.equal(f1, f2)
    assert not torch.equal(f1, data.sample_sprites(3000, seed=6)[1])
    torch.testing.assert_close(data.render_sprites(f1[:10]), x1[:10])
    counts = torch.bincount(f1[:, 0], minlength=3).double()
    assert bool(((counts / 3000 - 1 / 3).abs() < 0.05).all())
    state = torch.get_rng_state()
    data.sample_sprites(10, seed=0)
    assert torch.equal(state, torch.get_rng_state())


def test_sprites_bad_input():
    with pytest.raises(TypeError, match="integer"):
        data.render_sprites(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="shape"):
        data.render_sprites(torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="outside 0..2"):
        data.render_sprites(torch.tensor([[3, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="split"):
        data.load_sprites("val")
    with pytest.raises(ValueError):
        data.sample_sprites(0)
