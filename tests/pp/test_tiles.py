import numpy as np
import pandas as pd
import pytest
import torch

import hcitools as ht


def _fovs(n=2, c=3, size=48, seed=0):
    return np.random.default_rng(seed).gamma(2.0, 100.0, size=(n, c, size, size))


def test_tile_grid_and_metadata():
    obs = pd.DataFrame({"plate": ["p1", "p1"], "well": ["p1_A01", "p1_A02"], "fov": [1, 1]})
    tiles = ht.pp.tile_images(_fovs(), grid=9, obs=obs)
    assert tiles.images.shape == (18, 3, 16, 16)
    assert tiles.obs["well"].tolist()[:9] == ["p1_A01"] * 9
    assert tiles.obs[["tile_row", "tile_col"]].max().tolist() == [2, 2]
    assert tiles.images.min() >= 0 and tiles.images.max() <= 1


def test_tile_clipping_and_scaling():
    img = _fovs(n=1, c=2)
    img[0, 0, 0, 0] = 1e9  # one hot pixel must not compress the channel's range
    tiles = ht.pp.tile_images(img, grid=4)
    ch0 = np.concatenate([t[0].ravel() for t in tiles.images])
    assert np.median(ch0) > 0.1
    lo, hi = np.percentile(img[0, 1], [0.01, 99.9])
    expected = (np.clip(img[0, 1], lo, hi) - lo) / (hi - lo)
    np.testing.assert_allclose(tiles.images[0, 1], expected[:24, :24], rtol=1e-5, atol=1e-6)


def test_tile_size_and_stride():
    tiles = ht.pp.tile_images(_fovs(n=1, size=96), tile_size=48, stride=24)
    assert len(tiles) == 9  # as 480/240 on 960 × 960
    assert tiles.obs["x0"].tolist()[:3] == [0, 24, 48]


def test_tile_errors():
    with pytest.raises(ValueError, match="square number"):
        ht.pp.tile_images(_fovs(), grid=8)
    with pytest.raises(ValueError, match="exactly one"):
        ht.pp.tile_images(_fovs(), grid=4, tile_size=8)
    with pytest.raises(ValueError, match="does not fit"):
        ht.pp.tile_images(_fovs(), tile_size=100)
    bad = _fovs()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ht.pp.tile_images(bad, grid=4)


def test_embed_tiles_batched_equals_single():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    obs = pd.DataFrame({"plate": ["p1"] * 2, "well": ["p1_A01", "p1_B01"], "fov": [1, 2]})
    tiles = ht.pp.tile_images(_fovs(), grid=16, obs=obs)
    a = ht.pp.embed_tiles(tiles, net, batch_size=5, device="cpu", progress=False)
    b = ht.pp.embed_tiles(tiles, net, batch_size=1, device="cpu", progress=False)
    assert a.shape == (32, 8)
    np.testing.assert_allclose(a.X, b.X, rtol=1e-5, atol=1e-6)
    assert a.obs["well"].nunique() == 2 and "tile_row" in a.obs
    wells = ht.pp.aggregate(a, by="well")
    assert wells.n_obs == 2
    assert net.training  # the user's module is left in its mode
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        ht.pp.embed_tiles(tiles, lambda x: x)
