"""A simulated high-content imaging screen with known ground truth."""

from __future__ import annotations

import string

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import HCI_KEYS
from .._validate import check_int, check_real

#: obsm key of the complete ground-truth labels of :func:`synthetic_hci`.
TRUE_LABELS_KEY = "assays_true"


def _well_names(n: int, n_rows: int = 16, n_cols: int = 24) -> list[str]:
    """Well positions of a 384-well plate (A01 … P24), in row order."""
    rows = string.ascii_uppercase[:n_rows]
    return [f"{rows[i // n_cols]}{i % n_cols + 1:02d}" for i in range(n)]


def synthetic_hci(
    n_compounds: int = 200,
    *,
    n_assays: int = 12,
    n_plates: int = 4,
    wells_per_compound: int = 3,
    fovs_per_well: int = 2,
    crops_per_fov: int = 4,
    n_features: int = 64,
    label_density: float = 0.04,
    n_primary: int = 6,
    n_mechanisms: int = 8,
    n_unrelated: int | None = None,
    mechanism_rate: float = 0.15,
    responder_fraction: float = 0.3,
    effect_size: float = 3.0,
    primary_density_ratio: float = 4.0,
    n_control_wells: int = 8,
    n_scaffolds: int | None = None,
    plate_effect: float = 0.5,
    plate_scale: float = 0.2,
    label_noise: float = 0.5,
    seed: int = 0,
) -> AnnData:
    """Simulate a high-content imaging screen: crop embeddings, plates, DMSO wells and sparse assay labels.

    The generative model (every draw comes from one ``numpy.random.Generator`` seeded by ``seed``):

    1. **Mechanisms.** Each compound has a binary vector of ``n_mechanisms`` latent mechanisms of action
       (each on with probability ``mechanism_rate``) and a potency in [0.5, 1.5]. Compounds sharing a scaffold
       share most mechanisms (a scaffold has a prototype; each compound flips a mechanism with prob. 0.1).
    2. **Morphology.** Mechanism *k* has a direction ``u_k`` in feature space. Crops are drawn from a
       correlated Gaussian "cell state" (a random low-rank plus diagonal covariance). In a well of an active
       compound only a fraction ``responder_fraction`` of crops respond: their embedding moves by
       ``effect_size · potency · Σ_k m_k u_k``. The other crops look like DMSO, so mean pooling dilutes the
       signal that attention pooling can find. ``obs["responder"]`` keeps the instance-level truth.
    3. **Assays.** Each assay reads out one or two mechanisms plus noise (``label_noise``); assays that share
       a mechanism are related, and ``n_unrelated`` assays read out *hidden* mechanisms that have no
       morphological direction (unrelated tasks that no image model can predict). An assay's activity is the
       top ~20 % of its score over compounds.
    4. **Observed labels.** A label is observed with probability ``p_sec`` for secondary assays and
       ``primary_density_ratio · p_sec`` for the ``n_primary`` primary assays, solved so that the overall
       observed fraction equals ``label_density``; each assay keeps at least 2 observed positives and
       2 observed negatives (revealed at random) so that its AUROC is defined.
    5. **Layout.** Each compound is in ``wells_per_compound`` replicate wells on different plates;
       every plate has ``n_control_wells`` DMSO wells. Plates apply an additive (``plate_effect``) and a
       multiplicative (``plate_scale``, log-normal) effect per feature, so plate-wise normalisation matters.
    6. **Tiling.** Each well has ``fovs_per_well`` fields of view of ``crops_per_fov`` crops; a crop is one row.
    7. **Cell count.** ``obs["cell_count"]`` (constant within a well) is the number of cells the well would
       hold: ``round(300 · exp(−potency · m_0 + 0.15 · ε))``, ε ~ N(0, 1) per well, so compounds acting through
       mechanism 0 (cytotoxic) leave fewer cells; a concept for auxiliary branches and probes. It is drawn from
       its own generator (seeded by ``(seed, 1)``), so every other draw is as without it.

    Parameters
    ----------
    n_compounds
        Number of treatment compounds (DMSO comes on top).
    n_assays
        Number of assays (tasks); the first ``n_primary`` are primary assays.
    n_plates
        Number of plates; must be at least ``wells_per_compound``.
    wells_per_compound
        Replicate wells per compound, on different plates.
    fovs_per_well, crops_per_fov
        Instances per well = ``fovs_per_well · crops_per_fov``.
    n_features
        Embedding dimension.
    label_density
        Overall fraction of observed (compound, assay) labels.
    n_primary
        Number of primary assays (denser labels).
    n_mechanisms
        Number of latent mechanisms with a morphological signature.
    n_unrelated
        Assays that read out hidden mechanisms; default ``max(1, n_assays // 6)``.
    mechanism_rate
        Probability that a compound acts through a given mechanism.
    responder_fraction
        Fraction of crops of an active well that respond.
    effect_size
        Norm of a responding crop's shift per unit potency and mechanism.
    primary_density_ratio
        Label density of primary assays relative to secondary assays.
    n_control_wells
        DMSO wells per plate.
    n_scaffolds
        Number of chemical scaffolds; default ``max(2, n_compounds // 5)``.
    plate_effect, plate_scale
        SD of the additive plate offsets and of the log multiplicative plate scales.
    label_noise
        SD of the noise added to assay scores before thresholding.
    seed
        Seed of the random generator.

    Returns
    -------
    AnnData with one row per crop:

    - ``X``: float32 embeddings (n_instances × ``n_features``);
    - ``obs``: ``plate``, ``well`` (unique across plates, ``"<plate>_<position>"``), ``well_position``
      (repeats across plates), ``fov``, ``crop``, ``compound`` (``"DMSO"`` for controls), ``scaffold``,
      ``is_control``, ``responder`` (instance-level truth);
    - ``obsm["assays"]``: DataFrame n_instances × ``n_assays`` of observed labels (1 / 0 / NaN), constant
      within wells; NaN for DMSO;
    - ``obsm["assays_true"]``: DataFrame like ``obsm["assays"]`` with the complete ground-truth labels (1 / 0;
      NaN only for DMSO): what imputed labels and pseudo-labels are scored against; never a model input;
    - ``uns["synthetic_hci"]``: ``params``, ``primary_assays``, ``assay_mechanisms`` (assay → mechanisms),
      ``unrelated_assays``, ``true_labels`` (compound × assay, all labels), ``mechanisms`` (compound ×
      mechanism), ``related_assays`` (primary assay → the secondary assays that share a mechanism with it) and
      ``assay_affinity`` (assays × assays DataFrame: the Jaccard index of the assays' mechanism sets, 1 on the
      diagonal, 0 for assays sharing no mechanism; a stand-in for STRING scores of their targets, e.g. for
      :func:`hcitools.tl.select_assays`). These come from the draws above: no extra random draw.

    Examples
    --------
    >>> import hcitools as ht
    >>> adata = ht.datasets.synthetic_hci(n_compounds=50, seed=0)
    >>> adata.obsm["assays"].shape[1]
    12
    """
    for name, value, low in (
        ("n_compounds", n_compounds, 1), ("n_assays", n_assays, 1), ("n_plates", n_plates, 1),
        ("wells_per_compound", wells_per_compound, 1), ("fovs_per_well", fovs_per_well, 1),
        ("crops_per_fov", crops_per_fov, 1), ("n_features", n_features, 1), ("n_primary", n_primary, 0),
        ("n_mechanisms", n_mechanisms, 1), ("n_control_wells", n_control_wells, 1), ("seed", seed, 0),
    ):  # fmt: skip
        check_int(value, name, min=low)
    check_int(n_unrelated, "n_unrelated", min=0, allow_none=True)
    check_int(n_scaffolds, "n_scaffolds", min=1, allow_none=True)
    check_real(mechanism_rate, "mechanism_rate", min=0, max=1)
    for name, value in (
        ("effect_size", effect_size), ("plate_effect", plate_effect), ("plate_scale", plate_scale),
        ("label_noise", label_noise),
    ):  # fmt: skip
        check_real(value, name, min=0)
    check_real(primary_density_ratio, "primary_density_ratio", min=0, min_inclusive=False)
    check_real(label_density, "label_density", min=0, max=1, min_inclusive=False)
    check_real(responder_fraction, "responder_fraction", min=0, max=1, min_inclusive=False)
    if n_plates < wells_per_compound:
        raise ValueError(
            f"`n_plates` ({n_plates}) must be at least `wells_per_compound` ({wells_per_compound}): replicate "
            "wells go to different plates."
        )
    if not 0 < label_density <= 1:
        raise ValueError(f"`label_density` must be in (0, 1], got {label_density}.")
    if not 0 <= n_primary <= n_assays:
        raise ValueError(f"`n_primary` must be between 0 and `n_assays` ({n_assays}), got {n_primary}.")
    if (
        min(n_compounds, n_assays, n_features, fovs_per_well, crops_per_fov, n_control_wells, n_mechanisms)
        < 1
    ):
        raise ValueError("Counts and sizes must be positive integers.")
    if not 0 < responder_fraction <= 1:
        raise ValueError(f"`responder_fraction` must be in (0, 1], got {responder_fraction}.")
    wells_needed = n_compounds * wells_per_compound / n_plates + n_control_wells
    if wells_needed > 384:
        min_plates = int(np.ceil(n_compounds * wells_per_compound / (384 - n_control_wells)))
        raise ValueError(
            f"{n_compounds} compounds × {wells_per_compound} wells do not fit on {n_plates} plates of 384 wells "
            f"(with {n_control_wells} DMSO wells each); pass `n_plates` ≥ {min_plates}."
        )
    rng = np.random.default_rng(seed)
    n_unrelated = max(1, n_assays // 6) if n_unrelated is None else n_unrelated
    n_unrelated = min(n_unrelated, n_assays)
    n_scaffolds = max(2, n_compounds // 5) if n_scaffolds is None else n_scaffolds
    n_hidden_mech = max(1, n_unrelated)
    K = n_mechanisms + n_hidden_mech

    # 1. Mechanisms, shared within scaffolds.
    scaffold = rng.integers(0, n_scaffolds, size=n_compounds)
    prototypes = rng.random((n_scaffolds, K)) < mechanism_rate
    flips = rng.random((n_compounds, K)) < 0.1
    mech = prototypes[scaffold] ^ flips
    potency = rng.uniform(0.5, 1.5, size=n_compounds)

    # 2. Morphological directions (hidden mechanisms have none).
    U = rng.normal(size=(n_mechanisms, n_features))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    shift = effect_size * potency[:, None] * (mech[:, :n_mechanisms].astype(float) @ U)

    # 3. Assays: related assays share visible mechanisms; unrelated ones read hidden mechanisms.
    assay_names = [f"assay_{t:02d}" for t in range(n_assays)]
    W = np.zeros((n_assays, K))
    assay_mech: dict[str, list[int]] = {}
    n_related = n_assays - n_unrelated
    for t in range(n_assays):
        if t < n_related:
            ks = rng.choice(n_mechanisms, size=min(rng.integers(1, 3), n_mechanisms), replace=False)
        else:
            ks = np.array([n_mechanisms + (t - n_related) % n_hidden_mech])
        W[t, ks] = rng.uniform(0.7, 1.3, size=len(ks))
        assay_mech[assay_names[t]] = [int(k) for k in ks]
    score = (mech * potency[:, None]) @ W.T + label_noise * rng.normal(size=(n_compounds, n_assays))
    threshold = np.quantile(score, 0.8, axis=0)
    truth = (score > threshold).astype(float)

    # 4. Observed labels.
    T, P = n_assays, n_primary
    p_sec = label_density * T / (primary_density_ratio * P + (T - P))
    p_obs = np.full(T, p_sec)
    p_obs[:P] = min(1.0, primary_density_ratio * p_sec)
    observed = rng.random((n_compounds, T)) < p_obs
    for t in range(T):
        for cls in (0.0, 1.0):
            have = np.flatnonzero(observed[:, t] & (truth[:, t] == cls))
            pool = np.flatnonzero(~observed[:, t] & (truth[:, t] == cls))
            need = min(max(0, 2 - len(have)), len(pool))
            if need:
                observed[rng.choice(pool, size=need, replace=False), t] = True
    labels_c = np.where(observed, truth, np.nan)

    # 5. Layout: replicate wells on distinct plates, DMSO on every plate.
    compound_names = [f"cpd_{i:04d}" for i in range(n_compounds)]
    well_plate, well_cpd = [], []
    load = np.zeros(n_plates, dtype=int)
    for i in range(n_compounds):
        # least-loaded plates first (random tie-break), so that plates fill evenly
        plates = np.lexsort((rng.random(n_plates), load))[:wells_per_compound]
        load[plates] += 1
        well_plate += plates.tolist()
        well_cpd += [i] * wells_per_compound
    for p in range(n_plates):
        well_plate += [p] * n_control_wells
        well_cpd += [-1] * n_control_wells
    well_plate = np.asarray(well_plate)
    well_cpd = np.asarray(well_cpd)
    order = rng.permutation(len(well_plate))  # random plate layout
    well_plate, well_cpd = well_plate[order], well_cpd[order]
    position = np.empty(len(well_plate), dtype=object)
    for p in range(n_plates):
        idx = np.flatnonzero(well_plate == p)
        position[idx] = _well_names(len(idx))

    # 6. Instances.
    per_well = fovs_per_well * crops_per_fov
    n_wells = len(well_plate)
    n = n_wells * per_well
    rank = max(1, n_features // 8)
    L = rng.normal(size=(n_features, rank)) / np.sqrt(rank)
    X = rng.normal(size=(n, rank)) @ L.T + 0.7 * rng.normal(size=(n, n_features))
    inst_well = np.repeat(np.arange(n_wells), per_well)
    inst_cpd = well_cpd[inst_well]
    treated = inst_cpd >= 0
    responder = treated & (rng.random(n) < responder_fraction)
    responder &= np.concatenate([[False], mech[:, :n_mechanisms].any(axis=1)])[inst_cpd + 1]
    X[responder] += shift[inst_cpd[responder]]
    add = plate_effect * rng.normal(size=(n_plates, n_features))
    mult = np.exp(plate_scale * rng.normal(size=(n_plates, n_features)))
    inst_plate = well_plate[inst_well]
    X = X * mult[inst_plate] + add[inst_plate]

    # 7. Cell count per well (own stream: the draws above are unchanged).
    cell_rng = np.random.default_rng((seed, 1))
    toxic = np.concatenate([[0.0], potency * mech[:, 0]])[well_cpd + 1]
    cell_count = np.round(300.0 * np.exp(-toxic + 0.15 * cell_rng.normal(size=n_wells))).astype(np.int64)

    plate_names = np.array([f"plate{p}" for p in range(n_plates)])
    cpd_names = np.array([HCI_KEYS.CONTROL_VALUE, *compound_names], dtype=object)
    scaffold_names = np.array(["none", *[f"scaffold_{s:03d}" for s in scaffold]], dtype=object)
    obs = pd.DataFrame(
        {
            HCI_KEYS.PLATE: plate_names[inst_plate],
            HCI_KEYS.WELL: [
                f"{plate_names[p]}_{pos}" for p, pos in zip(inst_plate, position[inst_well], strict=True)
            ],
            HCI_KEYS.WELL_POSITION: position[inst_well].astype(str),
            HCI_KEYS.FOV: np.tile(np.repeat(np.arange(fovs_per_well), crops_per_fov), n_wells),
            "crop": np.tile(np.arange(crops_per_fov), n_wells * fovs_per_well),
            HCI_KEYS.COMPOUND: cpd_names[inst_cpd + 1],
            HCI_KEYS.SCAFFOLD: scaffold_names[inst_cpd + 1],
            "is_control": ~treated,
            "responder": responder,
            "cell_count": cell_count[inst_well],
        }
    )
    obs.index = pd.Index([f"crop_{i}" for i in range(n)])
    for col in (HCI_KEYS.PLATE, HCI_KEYS.WELL, HCI_KEYS.WELL_POSITION, HCI_KEYS.COMPOUND, HCI_KEYS.SCAFFOLD):
        obs[col] = obs[col].astype("category")
    lab = np.vstack([np.full((1, T), np.nan), labels_c])[inst_cpd + 1]
    adata = AnnData(
        X.astype(np.float32), obs=obs, var=pd.DataFrame(index=[f"f{j}" for j in range(n_features)])
    )
    adata.obsm[HCI_KEYS.ASSAYS] = pd.DataFrame(lab, index=adata.obs_names, columns=assay_names)
    true_inst = np.vstack([np.full((1, T), np.nan), truth])[inst_cpd + 1]
    adata.obsm[TRUE_LABELS_KEY] = pd.DataFrame(true_inst, index=adata.obs_names, columns=assay_names)
    mech_sets = [set(assay_mech[a]) for a in assay_names]
    affinity = np.array(
        [[len(a & b) / len(a | b) if a | b else 0.0 for b in mech_sets] for a in mech_sets], dtype=float
    )
    related = {
        p_name: [s_name for s_name in assay_names[n_primary:] if mech_sets[i] & set(assay_mech[s_name])]
        for i, p_name in enumerate(assay_names[:n_primary])
    }
    params = {
        k: v
        for k, v in dict(
            n_compounds=n_compounds, n_assays=n_assays, n_plates=n_plates, wells_per_compound=wells_per_compound,
            fovs_per_well=fovs_per_well, crops_per_fov=crops_per_fov, n_features=n_features,
            label_density=label_density, n_primary=n_primary, n_mechanisms=n_mechanisms, n_unrelated=n_unrelated,
            mechanism_rate=mechanism_rate, responder_fraction=responder_fraction, effect_size=effect_size,
            primary_density_ratio=primary_density_ratio, n_control_wells=n_control_wells, n_scaffolds=n_scaffolds,
            plate_effect=plate_effect, plate_scale=plate_scale, label_noise=label_noise, seed=seed,
        ).items()
    }  # fmt: skip
    adata.uns["synthetic_hci"] = {
        "params": params,
        "primary_assays": assay_names[:n_primary],
        "unrelated_assays": assay_names[n_related:],
        "assay_mechanisms": assay_mech,
        "true_labels": pd.DataFrame(truth, index=compound_names, columns=assay_names),
        "mechanisms": pd.DataFrame(
            mech.astype(int), index=compound_names, columns=[f"mech_{k}" for k in range(K)]
        ),
        "related_assays": related,
        "assay_affinity": pd.DataFrame(affinity, index=assay_names, columns=assay_names),
    }
    return adata
