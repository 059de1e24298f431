import numpy as np
import pandas as pd
import pytest
import torch

import hcitools as ht
from hcitools._constants import MIL_KEYS, MODULE_KEYS
from hcitools.dataloaders import BagCollator
from hcitools.module import M4Module

SMALL = {"n_experts": 3, "n_hidden": 16, "n_attention": 8, "n_gate_hidden": 8, "n_tower_hidden": 8}


def _module(**kw):
    torch.manual_seed(0)
    return M4Module(7, 3, **{**SMALL, "dropout": 0.0, **kw}).eval()


def _ragged(sizes, n_input=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = max(sizes)
    mask = torch.arange(n)[None] < torch.tensor(sizes)[:, None]
    x = torch.randn(len(sizes), n, n_input, generator=g) * mask[..., None]
    return x, mask


@pytest.fixture
def screen():
    adata = ht.datasets.synthetic_hci(
        n_compounds=40, n_assays=3, n_plates=3, n_primary=2, n_features=8, label_density=0.4, seed=0
    )
    # ragged bags: drop a random third of the crops (every bag keeps at least one)
    rng = np.random.default_rng(0)
    keep = (rng.random(adata.n_obs) > 0.33) | (adata.obs["crop"].to_numpy() == 0)
    adata = adata[keep].copy()
    adata.obs["tile_row"] = adata.obs["crop"].to_numpy() // 2
    adata.obs["tile_col"] = adata.obs["crop"].to_numpy() % 2
    return adata


def _train(model, **kw):
    model.train(max_epochs=2, warmup_epochs=0, batch_size=16, enable_progress_bar=False, **kw)
    return model


@pytest.mark.parametrize(("expert", "gate"), [("mp_amil", "mp_gate"), ("amil", "mmoe"), ("mp_amil", "mmoe")])
def test_shapes_masking_and_sums(expert, gate):
    m = _module(expert=expert, gate=gate)
    x, mask = _ragged([3, 10, 1, 17])
    out = m.inference(x, mask)
    assert out[MODULE_KEYS.LOGITS].shape == (4, 3)
    assert out[MODULE_KEYS.GATE_WEIGHTS].shape == (4, 3, 4, 3)
    assert out[MODULE_KEYS.EXPERT_ATTENTION].shape == (4, 3, 17)
    assert out[MODULE_KEYS.ATTENTION].shape == (4, 3, 17)
    torch.testing.assert_close(out[MODULE_KEYS.GATE_WEIGHTS].sum(-1), torch.ones(4, 3, 4))
    for key in (MODULE_KEYS.ATTENTION, MODULE_KEYS.EXPERT_ATTENTION):
        att = out[key]
        assert (att.masked_select(~mask[:, None, :].expand_as(att)) == 0).all()  # padding gets no attention
        torch.testing.assert_close(att.sum(-1), torch.ones(att.shape[:2]))


def test_batch_vs_single_and_padding_invariance():
    m = _module()
    sizes = [3, 10, 1, 17, 5]
    x, mask = _ragged(sizes)
    batch = m.inference(x, mask)
    for b, n in enumerate(sizes):  # each bag alone, unpadded: its own (smaller) grid
        alone = m.inference(x[b : b + 1, :n], mask[b : b + 1, :n])
        for key in (MODULE_KEYS.LOGITS, MODULE_KEYS.GATE_WEIGHTS, MODULE_KEYS.BAG_EMBEDDING):
            torch.testing.assert_close(alone[key][0], batch[key][b], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            alone[MODULE_KEYS.EXPERT_ATTENTION][0],
            batch[MODULE_KEYS.EXPERT_ATTENTION][b, :, :n],
            atol=1e-5,
            rtol=0,
        )
    # more padding, filled with garbage: nothing changes
    g = torch.Generator().manual_seed(1)
    x2 = torch.cat([x, 50 * torch.randn(5, 9, 7, generator=g)], dim=1)
    mask2 = torch.cat([mask, torch.zeros(5, 9, dtype=torch.bool)], dim=1)
    padded = m.inference(x2, mask2)
    torch.testing.assert_close(padded[MODULE_KEYS.LOGITS], batch[MODULE_KEYS.LOGITS], atol=1e-5, rtol=1e-5)


def test_ablation_switches():
    mp, amil = _module(), _module(expert="amil")
    conv = [n for n, _ in mp.named_parameters() if "convs" in n]
    assert conv and not [n for n, _ in amil.named_parameters() if "convs" in n]
    # the convolution proxies mix neighbours: permuting the instances changes MP-AMIL, not AMIL
    x, mask = _ragged([16, 12])
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    xp = x.clone()
    xp[0] = x[0, perm]
    for m, changes in ((mp, True), (amil, False)):
        a, b = m.inference(x, mask)[MODULE_KEYS.LOGITS], m.inference(xp, mask)[MODULE_KEYS.LOGITS]
        assert (not torch.allclose(a[0], b[0], atol=1e-5)) == changes
    # MMoE gates: one softmax per task, the same on every proxy segment; MP-Gate: one per segment
    gw = _module(gate="mmoe").inference(x, mask)[MODULE_KEYS.GATE_WEIGHTS]
    assert torch.allclose(gw, gw[:, :, :1].expand_as(gw))
    gw = mp.inference(x, mask)[MODULE_KEYS.GATE_WEIGHTS]
    assert not torch.allclose(gw, gw[:, :, :1].expand_as(gw))
    # experts are initialised independently
    w = mp.experts.fc.weight
    assert not torch.allclose(w[0], w[1])


def test_bad_arguments(screen):
    ht.model.M4.setup_anndata(screen, group_key="compound")
    with pytest.raises(ValueError, match="divisible"):
        ht.model.M4(screen, n_hidden=18)
    with pytest.raises(ValueError, match="expert"):
        ht.model.M4(screen, expert="transmil")
    with pytest.raises(ValueError, match="n_proxies"):
        ht.model.M4(screen, n_proxies=5)
    screen.obs["tile_row"] = 0  # two crops of a field of view at one position
    obs = screen.obs.copy()
    with pytest.raises(ValueError, match="share a grid position"):
        ht.model.M4.setup_anndata(screen, grid_keys=["fov", "tile_row", "tile_col"])
    pd.testing.assert_frame_equal(screen.obs, obs)  # nothing registered
    with pytest.raises(TypeError, match="grid_keys"):
        ht.model.M4.setup_anndata(screen, grid_keys="tile_row")


def test_grid_keys_place_crops(screen):
    ht.model.M4.setup_anndata(screen, group_key="compound", grid_keys=["fov", "tile_row", "tile_col"])
    model = ht.model.M4(screen, **SMALL)
    data = model._bag_data()
    assert data.positions is not None
    batch = BagCollator(data)(np.arange(4))
    assert batch[MIL_KEYS.POSITIONS].shape == (*batch[MIL_KEYS.MASK].shape, 2)
    # positions follow the crop's field of view and tile, with a 3-cell gap between fields of view
    pos = screen.obsm["_scvi_grid"]
    one = screen.obs["well"] == screen.obs["well"].iloc[0]
    fov, row, col = (screen.obs.loc[one, k].to_numpy() for k in ("fov", "tile_row", "tile_col"))
    # two fields of view side by side: the second one's tiles start 2 + 3 columns to the right
    np.testing.assert_array_equal(pos.loc[one, "grid_row"].to_numpy(), row)
    width = screen.obs.loc[one, "tile_col"].max() + 1 + 3
    np.testing.assert_array_equal(pos.loc[one, "grid_col"].to_numpy(), col + width * (fov != fov.min()))
    _train(model)
    with_grid = model.predict()
    model.module.eval()
    with torch.inference_mode():
        row_order = model.module.inference(batch[MIL_KEYS.X], batch[MIL_KEYS.MASK])[MODULE_KEYS.LOGITS]
        placed = model.module.inference(batch[MIL_KEYS.X], batch[MIL_KEYS.MASK], batch[MIL_KEYS.POSITIONS])
    prob = torch.sigmoid(placed[MODULE_KEYS.LOGITS]).numpy()
    np.testing.assert_allclose(prob, with_grid.to_numpy()[:4], atol=1e-5)
    assert not np.allclose(row_order.numpy(), placed[MODULE_KEYS.LOGITS].numpy(), atol=1e-6)


def test_model_api_save_load_and_weighting(screen, tmp_path):
    ht.model.M4.setup_anndata(screen, group_key="compound", grid_keys=["fov", "tile_row", "tile_col"])
    model = _train(ht.model.M4(screen, **SMALL), weighting="uncertainty")
    n_bags = screen.obs["well"].nunique()
    pred = model.predict()
    assert pred.shape == (n_bags, 3)
    gw = model.get_gate_weights()
    assert gw.shape == (n_bags, 3, 4, 3)
    np.testing.assert_allclose(gw.sum(-1), 1.0, atol=1e-5)
    att = model.get_attention()
    assert att.shape == (screen.n_obs, 3)
    sums = pd.DataFrame(model.get_attention(expert="all")).groupby(screen.obs["well"].to_numpy()).sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-5)
    assert model.get_attention(expert=2).shape == (screen.n_obs,)
    with pytest.raises(ValueError, match="expert"):
        model.get_attention(expert="mean")
    assert "task_weight_assay_00" in model.history
    model.save(tmp_path / "m4")
    loaded = ht.model.M4.load(tmp_path / "m4", adata=screen)
    pd.testing.assert_frame_equal(loaded.predict(), pred, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(loaded.get_gate_weights(), gw, atol=1e-6)
    assert loaded.registry_["setup_args"]["grid_keys"] == ["fov", "tile_row", "tile_col"]


def test_expert_collapse_warning(screen):
    ht.model.M4.setup_anndata(screen, group_key="compound")
    model = _train(ht.model.M4(screen, **SMALL, gate="mmoe"))
    with torch.no_grad():  # a gate that always picks expert 0, frozen (a second `train` keeps the weights)
        model.module.gates.out.bias[:, 0] = 50.0
    for p in model.module.gates.parameters():
        p.requires_grad_(False)
    with pytest.warns(UserWarning, match="Expert collapse: expert 0"):
        _train(model)


def test_tl_momil_m4(screen):
    ht.pp.split_compounds(screen, method="random", n_folds=5, seed=0)
    ht.tl.momil(
        screen, method="m4", key_added="m4", train_kwargs={"max_epochs": 1, "warmup_epochs": 0}, **SMALL
    )
    ev = screen.uns["m4"]["evaluation"]
    assert set(ev["method"]) == {"m4", "bag_size"}
    assert screen.obsm["m4_attention"].shape == (screen.n_obs, 3)
