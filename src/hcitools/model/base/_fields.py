"""Registered fields of the MIL models (scvi-tools ``scvi.data.fields``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scvi.data.fields import CategoricalObsField, ObsmField


class BagIdField(CategoricalObsField):
    """Ids that are new on every AnnData (bags, compounds, plates), registered as integer codes.

    scvi-tools' :class:`~scvi.data.fields.CategoricalObsField` keeps the category names in the registry and maps
    query data onto them; bag and compound ids of query data are new by nature, and keeping the training data's
    ids in the registry would store them in every saved model. This field registers the codes of
    ``pd.factorize(obs[key], sort=True)`` into ``obs["_scvi_<registry_key>"]`` (as scvi-tools' field does) and
    keeps only the number of ids; the names are read back from ``obs[key]`` (:meth:`names`).
    """

    N_CATEGORIES_KEY = "n_categories"

    def register_field(self, adata: AnnData) -> dict:
        self.validate_field(adata)
        codes, _ = pd.factorize(adata.obs[self._original_attr_key], sort=True)
        adata.obs[self.attr_key] = codes.astype(np.int64)
        return {self.ORIGINAL_ATTR_KEY: self._original_attr_key, self.N_CATEGORIES_KEY: int(codes.max()) + 1}

    def transfer_field(self, state_registry: dict, adata_target: AnnData, **kwargs) -> dict:
        return self.register_field(adata_target)

    def get_summary_stats(self, state_registry: dict) -> dict:
        return {self.count_stat_key: state_registry[self.N_CATEGORIES_KEY]}

    def view_state_registry(self, state_registry: dict):
        return None

    def names(self, adata: AnnData) -> np.ndarray:
        """The ids in code order (code ``i`` is ``names[i]``)."""
        return np.asarray(pd.factorize(adata.obs[self._original_attr_key], sort=True)[1]).astype(str)


class LabelsField(ObsmField):
    """Assay labels: ``obsm[labels_key]``, a DataFrame n_obs × n_assays of 1 / 0 / NaN (not measured).

    scvi-tools' categorical fields reject NaN; here NaN is the "not measured" code. The registry keeps the assay
    names (column names, strings). On query data (``load(..., adata=query)``, or a query method given new data)
    the labels are never read: the query may lack them or hold other assays, and the assays stay the model's.
    """

    def transfer_field(self, state_registry: dict, adata_target: AnnData, **kwargs) -> dict:
        return {self.COLUMN_NAMES_KEY: list(state_registry[self.COLUMN_NAMES_KEY])}

    def register_field(self, adata: AnnData) -> dict:
        state = super().register_field(adata)
        state[self.COLUMN_NAMES_KEY] = [str(c) for c in state[self.COLUMN_NAMES_KEY]]
        return state
