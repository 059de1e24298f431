"""The adversarial (gradient-reversal) batch branch removes the plate from the representation it acts on.

Known negative result behind the design: with the domain classifier trained jointly with the encoder in one
optimiser step at the model's learning rate, the encoder only has to fool a stale linear classifier: its own
cross-entropy sits at chance (≈ ln 3 for 3 plates) while a freshly fitted linear probe still reads the plate from
the bag representation at balanced accuracy 0.95–0.99. The classifier now has its own optimiser, several updates
per batch at 10 × lr (``train(n_discriminator_steps=5, discriminator_lr=None)``), which keeps it near its
optimum, so that the encoder must remove what a linear probe can read.
"""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import hcitools as ht
from hcitools._constants import MIL_KEYS, MODULE_KEYS
from hcitools.module import MoMILModule
from hcitools.train._mil_plan import MILTrainingPlan

# un-normalised screen, 3 plates with strong additive and multiplicative effects; every compound on every plate,
# so the plate carries no information about the assays
SCREEN = dict(
    n_compounds=120, n_assays=3, n_plates=3, n_primary=2, n_features=12, label_density=0.6,
    responder_fraction=0.6, label_noise=0.2, plate_effect=1.0, fovs_per_well=1, n_unrelated=0, n_mechanisms=4,
    mechanism_rate=0.3, seed=0,
)  # fmt: skip
TRAIN = dict(max_epochs=20, lr=3e-3, batch_size=24, validation_size=0.0, seed=0, enable_progress_bar=False)


def _split(adata, seed=0):
    compounds = np.array(sorted(set(adata.obs["compound"].astype(str)) - {"DMSO"}))
    test = np.random.default_rng(seed).choice(compounds, len(compounds) // 3, replace=False)
    is_test = adata.obs["compound"].astype(str).isin(test).to_numpy()
    return adata[~is_test].copy(), adata[is_test].copy()


def _fit(train, adversarial):
    ht.model.MoMIL.setup_anndata(train, group_key="compound", batch_key="plate")
    model = ht.model.MoMIL(train, n_hidden=16, n_head_hidden=8, adversarial=adversarial)
    model.train(**TRAIN)
    return model


def _test_auroc(model, test, truth, assays):
    """Mean compound AUROC of the primary assays on held-out compounds against all their true labels."""
    pred = model.predict(test, level="compound").drop(index="DMSO", errors="ignore")
    return float(np.mean([roc_auc_score(truth.loc[pred.index, a], pred[a]) for a in assays]))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The validation bags hold no primary assay")
def test_adversary_lowers_plate_probe_accuracy():
    full = ht.datasets.synthetic_hci(**SCREEN)
    truth = full.uns["synthetic_hci"]["true_labels"]
    primary = full.uns["synthetic_hci"]["primary_assays"]
    train, test = _split(full)
    scores, auroc = {}, {}
    for adversarial in (False, True):
        model = _fit(train.copy(), adversarial)
        table = ht.tl.probe_concepts(train, model, keys="plate", n_splits=3, seed=0)
        scores[adversarial] = table.set_index("representation")["score"]
        auroc[adversarial] = _test_auroc(model, test, truth, primary)
        if adversarial:
            disc = model.history["discriminator_loss"]["discriminator_loss"].to_numpy(dtype=float)
            assert len(disc) == TRAIN["max_epochs"] and np.isfinite(disc).all()
    plain, adv = scores[False], scores[True]
    # strong plate effects: a linear probe reads the plate from the inputs and from the plain model
    assert plain["pooled_input"] > 0.95 and adv["pooled_input"] > 0.95
    assert plain["shared_projection"] > 0.9 and plain["bag_embedding"] > 0.9
    # the adversary acts on the shared projection (the mean projected instance, probe "shared_projection"):
    # a fresh probe's balanced accuracy drops there and in the attention-pooled bag embeddings built on it
    assert adv["shared_projection"] < plain["shared_projection"] - 0.15, (plain, adv)
    assert adv["bag_embedding"] < plain["bag_embedding"] - 0.15, (plain, adv)
    # ... while the assays are still predicted on held-out compounds
    assert auroc[False] > 0.7
    assert auroc[True] > 0.7 and auroc[True] > auroc[False] - 0.1, auroc


def _plan(module, **kw):
    return MILTrainingPlan(module, assays=["a", "b"], lr=1e-3, **kw)


def test_discriminator_has_its_own_optimiser():
    module = MoMILModule(6, 2, head="abmil", n_hidden=8, n_head_hidden=4, n_batches=3)
    plan = _plan(module, n_discriminator_steps=3)
    main = plan.configure_optimizers()["optimizer"]
    in_main = {id(p) for group in main.param_groups for p in group["params"]}
    own = list(module.domain_classifier.parameters())
    assert not any(id(p) in in_main for p in own)
    assert all(id(p) in in_main for p in module.projector.parameters())
    assert plan._discriminator_optimizer.param_groups[0]["lr"] == pytest.approx(1e-2)  # 10 × lr by default
    assert _plan(module, discriminator_lr=0.05).discriminator_lr == 0.05


def test_discriminator_steps_lower_its_loss_and_leave_the_encoder():
    torch.manual_seed(0)
    module = MoMILModule(6, 2, head="abmil", n_hidden=8, n_head_hidden=4, n_batches=3, discriminator_hidden=5)
    assert isinstance(module.domain_classifier, torch.nn.Sequential)  # the MLP discriminator
    plan = _plan(module, n_discriminator_steps=20)
    plan.configure_optimizers()
    rep = torch.randn(12, 8) + torch.arange(3).repeat(4)[:, None].float()  # separable by batch
    codes = torch.arange(3).repeat(4)
    before = float(module.discriminator_loss(rep, codes).detach())
    encoder = [p.detach().clone() for p in module.projector.parameters()]
    plan._adversary_batch = (rep, codes, 12)
    plan.on_train_batch_end(None, {MIL_KEYS.BATCH: codes}, 0)
    assert float(module.discriminator_loss(rep, codes).detach()) < before - 0.1
    assert all(torch.equal(a, b) for a, b in zip(encoder, module.projector.parameters(), strict=True))
    value, n = plan._epoch_means.sums["discriminator_loss"]
    assert float(n) == 12 and np.isfinite(float(value))


def test_adversary_options_validated():
    adata = ht.datasets.synthetic_hci(n_compounds=20, n_assays=2, n_primary=1, n_features=4, seed=0)
    ht.model.MoMIL.setup_anndata(adata, group_key="compound", batch_key="plate")
    with pytest.raises(ValueError, match="adversarial=True"):
        ht.model.MoMIL(adata, discriminator_hidden=8)
    with pytest.raises(ValueError, match="discriminator_hidden"):
        ht.model.MoMIL(adata, adversarial=True, discriminator_hidden=0)
    model = ht.model.MoMIL(adata, n_hidden=4, n_head_hidden=4, adversarial=True, discriminator_hidden=3)
    assert model.module.domain_classifier[0].out_features == 3
    with pytest.raises(ValueError, match="n_discriminator_steps"):
        model.train(max_epochs=1, n_discriminator_steps=0)
    with pytest.raises(ValueError, match="discriminator_lr"):
        model.train(max_epochs=1, discriminator_lr=-1.0)
    assert not model.is_trained_
    assert MODULE_KEYS.BAG_REPRESENTATION in model.module.output_kinds
