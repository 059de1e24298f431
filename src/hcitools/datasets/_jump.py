"""JUMP Cell Painting TARGET-2 plate BR00121431: raw CellProfiler per-cell tables as an instance AnnData."""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import HCI_KEYS
from .._validate import check_str
from ._loaders import _SOURCES, data_path

_COMPARTMENTS = ("Cells", "Cytoplasm", "Nuclei")
_ID_COLUMNS = ("ImageNumber", "ObjectNumber")
_FOLDER = "hci/jump_target2_BR00121431"


def _read_site(path, prefix: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join the three compartments of one site into one row per cell; return (features, metadata)."""
    tables = {
        c: pd.read_csv(data_path(_FOLDER, f"single_cell/{prefix}_{c}.csv.gz", path=path))
        for c in _COMPARTMENTS
    }
    image = pd.read_csv(data_path(_FOLDER, f"single_cell/{prefix}_Image.csv.gz", path=path))
    cells, cyto, nuc = tables["Cells"], tables["Cytoplasm"], tables["Nuclei"]
    # CellProfiler links: each cytoplasm object names its parent cell and nucleus.
    link = cyto[["ImageNumber", "ObjectNumber", "Parent_Cells", "Parent_Nuclei"]].rename(
        columns={"ObjectNumber": "_cyto"}
    )
    merged = link.merge(
        cells.add_prefix("Cells_").rename(
            columns={"Cells_ImageNumber": "ImageNumber", "Cells_ObjectNumber": "Parent_Cells"}
        ),
        on=["ImageNumber", "Parent_Cells"],
        how="inner",
        validate="one_to_one",
    )
    merged = merged.merge(
        cyto.add_prefix("Cytoplasm_").rename(
            columns={"Cytoplasm_ImageNumber": "ImageNumber", "Cytoplasm_ObjectNumber": "_cyto"}
        ),
        on=["ImageNumber", "_cyto"],
        how="inner",
        validate="one_to_one",
    )
    merged = merged.merge(
        nuc.add_prefix("Nuclei_").rename(
            columns={"Nuclei_ImageNumber": "ImageNumber", "Nuclei_ObjectNumber": "Parent_Nuclei"}
        ),
        on=["ImageNumber", "Parent_Nuclei"],
        how="inner",
        validate="one_to_one",
    )
    meta_img = image[["ImageNumber", "Metadata_Plate", "Metadata_Well", "Metadata_Site"]]
    merged = merged.merge(meta_img, on="ImageNumber", how="left", validate="many_to_one")
    feature_cols = [
        c
        for c in merged.columns
        if c.split("_", 1)[0] in _COMPARTMENTS
        and not re.match(r"^(Cells|Cytoplasm|Nuclei)_(Parent_|Children_)", c)
    ]
    meta = merged[["ImageNumber", "Parent_Cells", "Metadata_Plate", "Metadata_Well", "Metadata_Site"]]
    meta = meta.assign(
        x=merged["Cells_Location_Center_X"].to_numpy(), y=merged["Cells_Location_Center_Y"].to_numpy()
    )
    return merged[feature_cols], meta


def jump_target2(path: str | os.PathLike | None = None, *, labels_key: str = "targets") -> AnnData:
    """Single cells of the JUMP Cell Painting TARGET-2 plate BR00121431 (wells A01 and A02, site 1; U2OS).

    Builds an instance AnnData from the raw CellProfiler per-object tables: Cells, Cytoplasm and Nuclei are
    joined on the image number and CellProfiler's object links (each cytoplasm names its parent cell and
    nucleus; here these equal the object numbers), feature names are prefixed by compartment
    (``Cells_AreaShape_Area``, as in pycytominer's profiles), and link columns (``Parent_*``, ``Children_*``)
    are dropped. Compounds come from the JUMP-Target-2 plate map (empty = DMSO) and compound metadata, and the
    multi-gene ``target_list`` becomes a binary compound × gene label matrix (:func:`hcitools.pp.labels_from_lists`).

    Parameters
    ----------
    path
        Data root or the ``hci/jump_target2_BR00121431`` folder; default ``$HCITOOLS_DATA``.
    labels_key
        obsm key for the target labels.

    Returns
    -------
    AnnData cells × CellProfiler features (125 × 5,786). ``obs``: ``plate``, ``well`` (``"<plate>_<well>"``),
    ``well_position``, ``fov`` (site), ``compound`` (``broad_sample``; ``"DMSO"`` for controls), ``pert_iname``,
    ``smiles``, ``control_type``; ``obsm["spatial"]``: cell centres; ``obsm[labels_key]``: DataFrame cells ×
    genes (1 = the compound lists the gene as a target, 0 = it does not, NaN for DMSO);
    ``uns["jump_target2"]["compound_labels"]``: the compound × gene matrix for the whole plate layout.
    """
    from ..pp._labels import labels_from_lists

    check_str(labels_key, "labels_key")
    platemap = pd.read_csv(data_path(_FOLDER, "JUMP-Target-2_compound_platemap.tsv", path=path), sep="\t")
    metadata = pd.read_csv(data_path(_FOLDER, "JUMP-Target-2_compound_metadata.tsv", path=path), sep="\t")
    feats, metas = [], []
    for prefix in ("BR00121431-A01-1", "BR00121431-A02-1"):
        f, m = _read_site(path, prefix)
        feats.append(f)
        metas.append(m)
    X = pd.concat(feats, ignore_index=True)
    meta = pd.concat(metas, ignore_index=True)
    if X.isna().any().any():
        raise ValueError(
            "The JUMP tables hold missing feature values; the copy in the data folder may be damaged."
        )
    obs = pd.DataFrame(
        {
            HCI_KEYS.PLATE: meta["Metadata_Plate"].astype(str),
            HCI_KEYS.WELL_POSITION: meta["Metadata_Well"].astype(str),
            HCI_KEYS.FOV: meta["Metadata_Site"].astype(str),
            "cell": meta["Parent_Cells"].astype(int),
        }
    )
    obs[HCI_KEYS.WELL] = obs[HCI_KEYS.PLATE] + "_" + obs[HCI_KEYS.WELL_POSITION]
    sample = obs[HCI_KEYS.WELL_POSITION].map(platemap.set_index("well_position")["broad_sample"])
    obs[HCI_KEYS.COMPOUND] = sample.fillna(HCI_KEYS.CONTROL_VALUE).astype(str)
    info = metadata.dropna(subset=["broad_sample"]).drop_duplicates("broad_sample").set_index("broad_sample")
    for col in ("pert_iname", "smiles", "control_type"):
        obs[col] = obs[HCI_KEYS.COMPOUND].map(info[col])
    obs.index = pd.Index(obs[HCI_KEYS.WELL] + "_s" + obs[HCI_KEYS.FOV] + "_c" + obs["cell"].astype(str))
    for col in (HCI_KEYS.PLATE, HCI_KEYS.WELL, HCI_KEYS.WELL_POSITION, HCI_KEYS.FOV, HCI_KEYS.COMPOUND):
        obs[col] = obs[col].astype("category")
    adata = AnnData(X.to_numpy(np.float32), obs=obs, var=pd.DataFrame(index=X.columns))
    adata.var["compartment"] = [c.split("_", 1)[0] for c in X.columns]
    adata.obsm["spatial"] = meta[["x", "y"]].to_numpy(np.float32)
    compound_labels = labels_from_lists(metadata, compound_col="broad_sample", labels_col="target_list")
    per_cell = compound_labels.reindex(adata.obs[HCI_KEYS.COMPOUND].astype(str).to_numpy())
    per_cell.index = adata.obs_names
    adata.obsm[labels_key] = per_cell
    adata.uns["jump_target2"] = {"compound_labels": compound_labels, "source": _SOURCES[_FOLDER]}
    return adata
