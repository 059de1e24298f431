from types import SimpleNamespace

import numpy as np
import pytest
import torch

import hcitools as ht
from hcitools._constants import MIL_KEYS, MODULE_KEYS
from hcitools.dataloaders import BagData, BagDataSplitter
from hcitools.train._pseudo import PseudoLabels, check_pseudo_labels

torch.set_num_threads(1)


class _FixedLogits(torch.nn.Module):
    """A stand-in module whose logit for every task is the bag's first feature (same on all instances)."""

    def _get_inference_input(self, tensors):  # the module protocol (MILModuleBase)
        return {"x": tensors[MIL_KEYS.X], "mask": tensors[MIL_KEYS.MASK]}

    def inference(self, x, mask):
        return {MODULE_KEYS.LOGITS: x[:, 0, :2]}


def _splitter():
    # 12 bags × 2 tasks; the first two features are the logits, the probabilities are set exactly
    prob = np.array(
        [[0.9, 0.9], [0.8, 0.8], [0.7, 0.7], [0.3, 0.3], [0.2, 0.2], [0.1, 0.1],  # validation bags 0-5
         [0.95, 0.95], [0.6, 0.6], [0.05, 0.05], [0.5, 0.5], [0.99, 0.01], [0.85, 0.85]]  # training bags 6-11
    )  # fmt: skip
    labels = np.array(
        [[1, 1], [1, 1], [1, 1], [0, 0], [0, 0], [0, 0],
         [np.nan, np.nan], [np.nan, 1], [np.nan, np.nan], [0, np.nan], [np.nan, np.nan], [1, 0]]
    )  # fmt: skip
    bags = np.repeat(np.arange(12), 2)
    X = np.log(prob / (1 - prob))[bags]
    data = BagData.from_arrays(X, bags, labels[bags], 2)
    splitter = BagDataSplitter(data, validation_size=0.5, batch_size=4)
    splitter.val_idx = np.arange(6)  # fix the split of the constructed data
    splitter.train_idx = np.array([7, 9, 11])
    splitter.unlabelled_train_idx = np.array([6, 8, 10])
    splitter.n_val, splitter.include_unlabelled = 6, True
    return splitter, prob, labels


def test_refresh_known_thresholds_and_labels():
    splitter, _, labels = _splitter()
    cb = PseudoLabels(splitter, warmup=0, every=1, percentile=0.9, emphasis=(1.05, 0.5), key_assays=["a"])
    pl_module = SimpleNamespace(
        module=_FixedLogits(), device=torch.device("cpu"), assays=["a", "b"], labels_override=None
    )
    cb.refresh(pl_module)
    th_pos, th_neg = cb.thresholds
    # correct validation positives [0.9, 0.8, 0.7]: 0.9-quantile 0.88; negatives [0.3, 0.2, 0.1]: 0.1-quantile 0.12
    np.testing.assert_allclose(
        th_pos, [0.88, 0.88 * 1.05], rtol=1e-5
    )  # task b is not a key assay: emphasised
    np.testing.assert_allclose(th_neg, [0.12, 0.12 * 0.5], rtol=1e-5)
    got = pl_module.labels_override.numpy()
    # validation rows are never changed
    np.testing.assert_array_equal(np.isnan(got[:6]), np.isnan(labels[:6]))
    np.testing.assert_array_equal(got[:6][~np.isnan(labels[:6])], labels[:6][~np.isnan(labels[:6])])
    expected = np.array(
        [[1, 1],  # bag 6: 0.95 ≥ 0.88 and ≥ 0.924
         [np.nan, 1],  # bag 7: 0.6 between; observed b kept
         [0, 0],  # bag 8: 0.05 ≤ 0.12 and ≤ 0.06
         [0, np.nan],  # bag 9: observed a kept, 0.5 between
         [1, 0],  # bag 10: a 0.99, b 0.01
         [1, 0]]  # bag 11: observed
    )  # fmt: skip
    np.testing.assert_array_equal(got[6:], expected)
    # new positives: a in bags 6 and 10, b in bag 6; new negatives: a in bag 8, b in bags 8 and 10
    assert [c.tolist() for c in cb._counts] == [[2, 1], [1, 2]]


def test_check_pseudo_labels():
    out = check_pseudo_labels({"warmup": 2}, ["a", "b"], ["a"])
    assert out == {"warmup": 2, "every": 5, "percentile": 0.9, "emphasis": (1.0, 1.0), "key_assays": ["a"]}
    with pytest.raises(ValueError, match="unknown"):
        check_pseudo_labels({"warm": 2}, ["a"], None)
    with pytest.raises(ValueError, match="α_pos"):
        check_pseudo_labels({"emphasis": (0.9, 0.5)}, ["a"], None)
    with pytest.raises(ValueError, match="key_assays"):
        check_pseudo_labels({"key_assays": ["z"]}, ["a"], None)
    with pytest.raises(TypeError, match="dict"):
        check_pseudo_labels(0.9, ["a"], None)


def test_train_with_pseudo_labels_schedule_and_history():
    adata = ht.datasets.synthetic_hci(
        n_compounds=60, n_assays=3, n_primary=1, n_features=8, n_plates=3, label_density=0.2, seed=0
    )
    ht.model.MoMIL.setup_anndata(adata, group_key="compound")
    model = ht.model.MoMIL(adata, primary_assays=["assay_00"], n_hidden=8, n_head_hidden=8)
    n_unlabelled = int(
        adata.obsm["assays"]
        .groupby(adata.obs["well"].astype(str).to_numpy())
        .first()
        .isna()
        .all(axis=1)
        .sum()
    )
    assert n_unlabelled > 0
    with pytest.raises(ValueError, match="α_neg"):
        model.train(max_epochs=2, pseudo_labels={"emphasis": (1.1, 1.5)})
    assert not model.is_trained_  # a refused call changed nothing
    model.train(
        max_epochs=6, warmup_epochs=0, patience=100, lr=3e-3, enable_progress_bar=False, validation_size=0.4,
        pseudo_labels={"warmup": 2, "every": 2, "percentile": 0.6, "emphasis": (1.0, 1.0)},
    )  # fmt: skip
    h = model.history
    pos, neg = h["pseudo_labels_pos"].iloc[:, 0].to_numpy(), h["pseudo_labels_neg"].iloc[:, 0].to_numpy()
    assert (
        len(pos) == 6 and (pos[:2] == 0).all() and (neg[:2] == 0).all()
    )  # the warm-up trains on observed labels
    assert neg[2] > 0  # first refresh after epoch 2
    assert neg[2] == neg[3] and pos[2] == pos[3]  # labels constant between refreshes
    per_assay = sum(h[f"pseudo_neg_{a}"].iloc[:, 0].to_numpy() for a in model.assays)
    np.testing.assert_array_equal(per_assay, neg)
    # unlabelled training bags are part of the split the model trained on; the observed labels are untouched
    assert len(model.split_bags["train_unlabelled"]) > 0
    assert set(model.split_bags["train_unlabelled"]) <= set(model.split_bags["train"])
    assert model.train_params_["pseudo_labels"]["warmup"] == 2
    assert adata.obsm["assays"].notna().sum().sum() > 0
