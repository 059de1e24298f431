"""Loaders of public data sets, read from a local folder (``path=`` or ``$HCITOOLS_DATA``).

Every loader returns an AnnData in the hcitools data model. No loader downloads at import or test time;
:func:`kang2018` can fetch the full public data set through pertpy's own downloader when asked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import DATA_ENV, HCI_KEYS, PERTURBATION_KEYS
from .._validate import check_bool, check_choice

_SOURCES = {
    "hci/lincs_SQ00015054": "github.com/cytomining/cytominer-eval, cytominer_eval/example_data/compound/",
    "hci/deepprofiler_embeddings": "github.com/cytomining/pycytominer, tests/test_data/DeepProfiler_example_data/",
    "hci/jump_target2_BR00121431": "github.com/cytomining/pycytominer tests and github.com/jump-cellpainting/JUMP-Target",
    "hci/moshkov2023_assays": "github.com/CaicedoLab/2023_Moshkov_NatComm",
    "mil": "github.com/rosasalberto/mil, mil/data/datasets/csv/",
    "perturbation": "github.com/theislab/scgen (git show dd7e178:data/valid.h5ad); full data: pertpy.data.kang_2018()",
}


def data_path(subfolder: str, filename: str, *, path: str | os.PathLike | None = None) -> Path:
    """Find a data file: ``path/<subfolder>/<filename>``, ``path/<filename>``, or ``$HCITOOLS_DATA/<subfolder>/<filename>``.

    ``path`` may point at the data root (holding ``hci/``, ``mil/``, ``perturbation/``) or at the data set's own
    folder; without ``path`` the environment variable ``HCITOOLS_DATA`` names the root.

    Raises
    ------
    FileNotFoundError
        Saying where it looked and where to get the data.
    """
    if path is not None and not isinstance(path, str | os.PathLike):
        raise TypeError(f"`path` must be a folder (str or os.PathLike) or None, got {type(path).__name__}.")
    candidates = []
    if path is not None:
        candidates += [Path(path) / subfolder / filename, Path(path) / filename]
    elif os.environ.get(DATA_ENV.VARIABLE):
        candidates.append(Path(os.environ[DATA_ENV.VARIABLE]) / subfolder / filename)
    for cand in candidates:
        if cand.is_file():
            return cand
    where = (
        f"`path={str(path)!r}`"
        if path is not None
        else f"${DATA_ENV.VARIABLE}={os.environ.get(DATA_ENV.VARIABLE)!r}"
    )
    raise FileNotFoundError(
        f"Could not find {subfolder}/{filename} (looked at {', '.join(map(str, candidates)) or 'nothing'}; from "
        f"{where}). Pass `path=` the data root or set the environment variable {DATA_ENV.VARIABLE} to the folder "
        f"that holds {subfolder.split('/')[0]}/. The files come from {_SOURCES[subfolder]}."
    )


def _categorical(obs: pd.DataFrame, cols) -> pd.DataFrame:
    for c in cols:
        obs[c] = obs[c].astype(str).astype("category")
    return obs


def lincs_plate(path: str | os.PathLike | None = None) -> AnnData:
    """One LINCS Cell Painting plate (``SQ00015054``, A549, 48 h) at well level: 384 wells × 454 features.

    The features were aggregated and normalised by pycytominer against *all* wells of the plate, then
    feature-selected (as shipped by cytominer-eval). For a DMSO-referenced profile, re-normalise with
    :func:`hcitools.pp.normalize_plates`.

    Parameters
    ----------
    path
        Data root or the ``hci/lincs_SQ00015054`` folder; default ``$HCITOOLS_DATA``.

    Returns
    -------
    AnnData wells × CellProfiler features. ``obs`` keeps every ``Metadata_*`` column and adds the data-model
    columns ``plate``, ``well`` (``"<plate>_<well>"``), ``well_position``, ``compound``
    (``Metadata_broad_sample``; controls are ``"DMSO"``), ``dose`` (µM), ``moa`` and ``target``
    (``|``-separated). ``var["compartment"]`` is Cells, Cytoplasm or Nuclei.
    """
    df = pd.read_csv(
        data_path("hci/lincs_SQ00015054", "SQ00015054_normalized_feature_select.csv.gz", path=path)
    )
    meta_cols = [c for c in df.columns if c.startswith("Metadata_")]
    obs = df[meta_cols].copy()
    obs[HCI_KEYS.PLATE] = obs["Metadata_Plate"].astype(str)
    obs[HCI_KEYS.WELL_POSITION] = obs["Metadata_Well"].astype(str)
    obs[HCI_KEYS.WELL] = obs[HCI_KEYS.PLATE] + "_" + obs[HCI_KEYS.WELL_POSITION]
    obs[HCI_KEYS.COMPOUND] = obs["Metadata_broad_sample"].astype(str)
    obs["dose"] = obs["Metadata_mmoles_per_liter"].astype(float)
    obs["moa"] = obs["Metadata_moa"]
    obs["target"] = obs["Metadata_target"]
    obs.index = pd.Index(obs[HCI_KEYS.WELL].to_numpy())
    obs = _categorical(obs, [HCI_KEYS.PLATE, HCI_KEYS.WELL_POSITION, HCI_KEYS.COMPOUND])
    features = [c for c in df.columns if c not in meta_cols]
    var = pd.DataFrame({"compartment": [f.split("_", 1)[0] for f in features]}, index=features)
    return AnnData(df[features].to_numpy(np.float32), obs=obs, var=var)


def deepprofiler_cells(
    path: str | os.PathLike | None = None, *, dataset: Literal["lincs", "bbbc021"] = "lincs"
) -> AnnData:
    """DeepProfiler single-cell embeddings as MIL instances.

    Parameters
    ----------
    path
        Data root or the ``hci/deepprofiler_embeddings`` folder; default ``$HCITOOLS_DATA``.
    dataset
        ``"lincs"``: plate SQ00014812, DMSO well A01, sites 5 and 8, 337 cells × 6400 (EfficientNet Cell
        Painting model). ``"bbbc021"``: plate Week1_22123, well B02, site 1, 206 cells × 50 (CNN).

    Returns
    -------
    AnnData cells × embedding dimensions with ``obs``: ``plate``, ``well`` (``"<plate>_<well>"``),
    ``well_position``, ``fov`` (site), ``compound`` (``"DMSO"`` for LINCS, unknown for BBBC021), and cell
    centres in ``obsm["spatial"]`` (LINCS only).
    """
    files = {
        "lincs": ["SQ00014812_A01_site5.npz", "SQ00014812_A01_site8.npz"],
        "bbbc021": ["BBBC021_Week1_22123_B02_s1.npz"],
    }
    check_choice(dataset, "dataset", list(files))
    feats, obs_parts, locs = [], [], []
    for name in files[dataset]:
        with np.load(data_path("hci/deepprofiler_embeddings", name, path=path), allow_pickle=True) as z:
            X = z["features"].astype(np.float32)
            meta = z["metadata"].item()
            if "locations" in z:
                locs.append(z["locations"])
        n = X.shape[0]
        feats.append(X)
        obs_parts.append(
            pd.DataFrame(
                {
                    HCI_KEYS.PLATE: str(meta["Metadata_Plate"]),
                    HCI_KEYS.WELL_POSITION: str(meta["Metadata_Well"]),
                    HCI_KEYS.FOV: str(meta["Metadata_Site"]),
                    HCI_KEYS.COMPOUND: str(meta.get("Compound", "unknown")),
                    "model": str(meta.get("Metadata_Model", "")),
                    "cell": np.arange(n),
                }
            )
        )
    obs = pd.concat(obs_parts, ignore_index=True)
    obs[HCI_KEYS.WELL] = obs[HCI_KEYS.PLATE] + "_" + obs[HCI_KEYS.WELL_POSITION]
    obs.index = pd.Index(obs[HCI_KEYS.WELL] + "_s" + obs[HCI_KEYS.FOV] + "_c" + obs["cell"].astype(str))
    obs = _categorical(
        obs, [HCI_KEYS.PLATE, HCI_KEYS.WELL, HCI_KEYS.WELL_POSITION, HCI_KEYS.FOV, HCI_KEYS.COMPOUND]
    )
    X = np.vstack(feats)
    adata = AnnData(X, obs=obs, var=pd.DataFrame(index=[f"dp_{j}" for j in range(X.shape[1])]))
    if len(locs) == len(files[dataset]):
        adata.obsm["spatial"] = np.vstack(locs).astype(np.float32)
    return adata


def kang2018(
    path: str | os.PathLike | None = None, *, source: Literal["local", "pertpy"] = "local"
) -> AnnData:
    """Kang et al. (2018) IFN-β-stimulated PBMCs, log-normalised, in the perturbation data model.

    Parameters
    ----------
    path
        Data root or the ``perturbation`` folder; default ``$HCITOOLS_DATA`` (``source="local"`` only).
    source
        ``"local"``: scGen's validation split (1,975 cells × 6,998 HVGs, 7 cell types) from the data folder.
        ``"pertpy"``: the full public data set through :func:`pertpy.data.kang_2018` (downloads it, then
        normalises counts to 10,000 per cell and applies ``log1p``).

    Returns
    -------
    AnnData cells × genes with ``obs["condition"]`` ∈ {``"control"``, ``"stimulated"``} and
    ``obs["cell_type"]``.
    """
    check_choice(source, "source", ("local", "pertpy"))
    if source == "local":
        import anndata as ad

        adata = ad.read_h5ad(data_path("perturbation", "kang2018_pbmc_scgen_valid.h5ad", path=path))
        cond = adata.obs[PERTURBATION_KEYS.CONDITION].astype(str)
    elif source == "pertpy":
        from .._utils import import_optional

        pt = import_optional("pertpy", "kang2018(source='pertpy')")
        import scanpy as sc

        adata = pt.data.kang_2018()
        adata.layers["counts"] = adata.X.copy()
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
        cond = adata.obs["label"].astype(str).map({"ctrl": "control", "stim": "stimulated"})
    else:
        raise ValueError(f"`source` must be 'local' or 'pertpy', got {source!r}.")
    adata.obs[PERTURBATION_KEYS.CONDITION] = pd.Categorical(cond, categories=["control", "stimulated"])
    adata.obs[PERTURBATION_KEYS.CELL_TYPE] = (
        adata.obs[PERTURBATION_KEYS.CELL_TYPE].astype(str).astype("category")
    )
    return adata


_MIL_NAMES = ("corel_dogs", "protein")


def mil_dataset(
    name: Literal["corel_dogs", "protein"],
    path: str | os.PathLike | None = None,
    *,
    drop_position_feature: bool = True,
) -> AnnData:
    """A small real multiple-instance learning data set (binary, one task) as an instance AnnData.

    Parameters
    ----------
    name
        ``"corel_dogs"`` (2,000 bags, 100 positive, 9 features) or ``"protein"`` (193 bags, 25 positive).
    path
        Data root or the ``mil`` folder; default ``$HCITOOLS_DATA``.
    drop_position_feature
        ``protein`` only: drop its first feature column, which is a within-bag position index (each bag holds
        0 … n-1 once), not a measurement.

    Returns
    -------
    AnnData instances × features with ``obs``: ``well`` (the bag, ``"bag_0001"``…), ``plate`` (the data set
    name), ``compound`` (the bag again: each bag is its own group); ``obsm["assays"]``: one column ``name``
    with the bag label (1 / 0) on every instance. The source orders positive bags first, so never split by
    row order.
    """
    check_choice(name, "name", _MIL_NAMES)
    check_bool(drop_position_feature, "drop_position_feature")
    df = pd.read_csv(data_path("mil", f"{name}.csv", path=path), header=None)
    label = df[0].to_numpy(dtype=float)
    bag = df[1].astype(int).map(lambda i: f"bag_{i:04d}")
    features = df.iloc[:, 2:]
    if name == "protein" and drop_position_feature:
        features = features.iloc[:, 1:]
    obs = pd.DataFrame(
        {HCI_KEYS.WELL: bag.to_numpy(), HCI_KEYS.PLATE: name, HCI_KEYS.COMPOUND: bag.to_numpy()}
    )
    obs.index = pd.Index([f"{b}_{i}" for i, b in enumerate(bag)])
    obs = _categorical(obs, [HCI_KEYS.WELL, HCI_KEYS.PLATE, HCI_KEYS.COMPOUND])
    var = pd.DataFrame(index=[f"feature_{j}" for j in range(features.shape[1])])
    adata = AnnData(features.to_numpy(np.float32), obs=obs, var=var)
    adata.obsm[HCI_KEYS.ASSAYS] = pd.DataFrame({name: label}, index=adata.obs_names)
    return adata
