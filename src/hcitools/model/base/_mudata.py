"""Registered fields of the MuData layout (scvi-tools' MuData fields).

An HCI screen as a :class:`~mudata.MuData`: an instance modality (``"crops"``: crops × features, ``obs["well"]``,
``obs["compound"]``, ...) and a label modality (``"compounds"``: compounds × assays, ``X`` = 1 / 0 / NaN, assay
metadata in ``var``, compound metadata such as SMILES and scaffold in ``obs``). Labels are stored once per
compound (or per well, for dose-level labels) and gathered per bag; they are never copied onto every crop.

The per-modality fields are scvi-tools' fields wrapped by :func:`scvi.data.fields.MuDataWrapper` (as
``MuDataLayerField`` is); :class:`LabelIndexField` is the one field that spans both modalities (the row of each
instance's labels), which no scvi-tools field does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scvi.data.fields import BaseAnnDataField, LayerField, MuDataWrapper

from ._fields import BagIdField


class MuDataBagIdField(MuDataWrapper(BagIdField)):
    """:class:`~hcitools.model.base.BagIdField` on a modality of a MuData."""

    def names(self, mdata) -> np.ndarray:
        """The ids in code order (see :meth:`BagIdField.names`)."""
        return self.adata_field.names(self.get_modality(mdata))


class MuDataLabelsField(MuDataWrapper(LayerField)):
    """The label modality's ``X`` (rows × assays, 1 / 0 / NaN); the registry keeps the assay names (``var_names``).

    Like :class:`~hcitools.model.base.LabelsField`, query data (``load(..., adata=query)``, or new data given to a
    query method) are never read for labels: they may lack the label modality.
    """

    def register_field(self, mdata) -> dict:
        state = super().register_field(mdata)
        state[self.adata_field.COLUMN_NAMES_KEY] = [str(c) for c in state[self.adata_field.COLUMN_NAMES_KEY]]
        return state

    def transfer_field(self, state_registry: dict, mdata_target, **kwargs) -> dict:
        return {k: (list(v) if isinstance(v, list | np.ndarray) else v) for k, v in state_registry.items()}


class LabelIndexField(BaseAnnDataField):
    """Row of each instance's labels in the label modality, written to ``mod[instance_mod].obs["_scvi_label_index"]``.

    ``obs[label_key]`` of the instance modality (e.g. ``"compound"``) is looked up in the ``obs_names`` of the
    label modality; -1 marks instances whose value has no row there (unlabelled, e.g. DMSO). On query data the
    labels are not read, and every instance gets -1 when the label modality or the column is absent.
    """

    ATTR_KEY = "_scvi_label_index"

    def __init__(self, registry_key: str, label_key: str, *, instance_mod: str, label_mod: str):
        super().__init__()
        self._registry_key = registry_key
        self.label_key = label_key
        self.instance_mod = instance_mod
        self.label_mod = label_mod

    @property
    def registry_key(self) -> str:
        return self._registry_key

    @property
    def mod_key(self) -> str:
        return self.instance_mod

    @property
    def attr_name(self) -> str:
        return "obs"

    @property
    def attr_key(self) -> str:
        return self.ATTR_KEY

    @property
    def is_empty(self) -> bool:
        return False

    def validate_field(self, mdata) -> None:
        if self.instance_mod not in mdata.mod:
            raise ValueError(f"The MuData has no modality {self.instance_mod!r}.")

    @staticmethod
    def rows(instances, labels, label_key: str) -> np.ndarray:
        """Row in ``labels.obs_names`` of each value of ``instances.obs[label_key]`` (-1 where absent)."""
        index = pd.Index(labels.obs_names.astype(str))
        return index.get_indexer(instances.obs[label_key].astype(str).to_numpy()).astype(np.int64)

    def register_field(self, mdata) -> dict:
        self.validate_field(mdata)
        instances = mdata.mod[self.instance_mod]
        rows = self.rows(instances, mdata.mod[self.label_mod], self.label_key)
        instances.obs[self.ATTR_KEY] = rows
        return {"label_key": self.label_key, "label_mod": self.label_mod, "n_matched": int((rows >= 0).sum())}

    def transfer_field(self, state_registry: dict, mdata_target, **kwargs) -> dict:
        self.validate_field(mdata_target)
        instances = mdata_target.mod[self.instance_mod]
        if self.label_mod in mdata_target.mod and self.label_key in instances.obs:
            return self.register_field(mdata_target)
        instances.obs[self.ATTR_KEY] = np.full(instances.n_obs, -1, dtype=np.int64)
        return {"label_key": self.label_key, "label_mod": self.label_mod, "n_matched": 0}

    def get_summary_stats(self, state_registry: dict) -> dict:
        return {}

    def view_state_registry(self, state_registry: dict):
        return None
