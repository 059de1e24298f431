"""Shared user API of the MIL models (scvi-tools ``BaseModelClass``): setup, training, queries."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy.special import expit
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager, AnnDataManagerValidationCheck
from scvi.data.fields import (
    LayerField,
    MuDataLayerField,
    MuDataObsmField,
    MuDataWrapper,
    NumericalJointObsField,
    ObsmField,
)
from scvi.model.base import BaseModelClass
from scvi.train import TrainRunner

from .._constants import HCI_KEYS, MIL_KEYS, MODULE_KEYS
from .._utils import progress_bar_default, quiet_loggers, third_party_quiet, warn
from .._validate import (
    _preview,
    check_bool,
    check_constant_within,
    check_int,
    check_labels,
    check_real,
    validate_hci,
)
from ..dataloaders import BagData, BagDataSplitter, bag_loader
from ..train import MILTrainingPlan, RestoreBestWeights
from ..train._mil_plan import (
    ADVERSARIAL_SCHEDULE,
    MIN_VALIDATION_CLASS,
    N_DISCRIMINATOR_STEPS,
    VAL_LOSS,
    VAL_MEAN_AUROC,
    EarlyStopping,
    TrainingDefaults,
    check_adversarial_weight,
    check_discriminator_args,
    make_task_weighting,
    scaled_defaults,
)
from ..train._run import history_file_dir, run_training, seed_and_reset
from ..train._weighting import TaskWeighting
from .base import (
    BagIdField,
    LabelIndexField,
    LabelsField,
    MuDataBagIdField,
    MuDataLabelsField,
    PersistenceMixin,
)

logger = logging.getLogger("hcitools")

#: Early-stopping / model-selection monitors of ``train(monitor=...)``: name → (logged metric, mode).
MONITORS = {"auto": None, "auroc": (VAL_MEAN_AUROC, "max"), "loss": (VAL_LOSS, "min")}


def _check_assays_learnable(labels: pd.DataFrame, bags: np.ndarray) -> None:
    """Every assay needs observed positive and negative bags."""
    per_bag = labels.groupby(bags, sort=False).first()
    n_pos, n_neg = (per_bag == 1).sum(), (per_bag == 0).sum()
    empty = list(labels.columns[(n_pos + n_neg) == 0])
    single = list(labels.columns[((n_pos == 0) | (n_neg == 0)) & ((n_pos + n_neg) > 0)])
    if empty or single:
        parts = []
        if empty:
            parts.append(f"assays without any observed label: {_preview(empty)}")
        if single:
            parts.append(f"assays with a single observed class: {_preview(single)}")
        raise ValueError(
            "Every assay needs observed positive and negative bags to be learned and evaluated; "
            + "; ".join(parts)
            + ". Drop them, e.g. `adata.obsm['assays'] = adata.obsm['assays'].drop(columns=[...])`."
        )


class AuxField(NumericalJointObsField):
    """Numeric obs columns constant within bags (``aux_keys``, e.g. cell count), joined into one obsm frame.

    Only training reads them: query data (``load(..., adata=query)``, or new data given to a query method) may
    lack the columns, and then nothing is registered for them.
    """

    def transfer_field(self, state_registry: dict, adata_target: AnnData, **kwargs) -> dict:
        if all(k in adata_target.obs for k in self.attr_keys):
            return super().transfer_field(state_registry, adata_target, **kwargs)
        return {self.COLUMNS_KEY: np.asarray(state_registry[self.COLUMNS_KEY])}


MuDataAuxField = MuDataWrapper(AuxField)


def _is_mudata(data) -> bool:
    return hasattr(data, "mod") and not isinstance(data, AnnData)


def _check_obs_in_memory(adata: AnnData, where: str = "adata") -> None:
    """Only the instance matrix may be lazy or on disk: ``obs`` (and ``obsm``) are read as pandas objects."""
    if not isinstance(adata.obs, pd.DataFrame):
        raise TypeError(
            f"{where}.obs is a {type(adata.obs).__name__}, not a pandas DataFrame (a fully lazy AnnData, e.g. from "
            "`anndata.experimental.read_lazy`). MIL models read obs and obsm in memory and only the instance "
            "matrix lazily: with `g = zarr.open_group(path)`, build `ad.AnnData(X=ad.experimental.read_elem_lazy("
            "g['X']), obs=ad.io.read_elem(g['obs']), var=ad.io.read_elem(g['var']), obsm=ad.io.read_elem(g['obsm']))`."
        )


def _check_label_table(labels: AnnData, label_mod: str) -> pd.DataFrame:
    """The label modality as a DataFrame rows × assays of 1 / 0 / NaN (rows = compounds or wells)."""
    where = f"mdata.mod[{label_mod!r}]"
    if labels.obs_names.duplicated().any():
        raise ValueError(
            f"{where}.obs_names repeat {_preview(labels.obs_names[labels.obs_names.duplicated()])}: one row per compound (or well)."
        )
    if labels.var_names.duplicated().any():
        raise ValueError(
            f"{where}.var_names (assays) repeat {_preview(labels.var_names[labels.var_names.duplicated()])}."
        )
    try:
        values = np.asarray(
            labels.X.toarray() if hasattr(labels.X, "toarray") else labels.X, dtype=np.float64
        )
    except (TypeError, ValueError) as err:
        raise TypeError(f"{where}.X must hold numeric labels 1 / 0 / NaN: {err}") from err
    bad = ~(np.isnan(values) | (values == 0) | (values == 1))
    if bad.any():
        raise ValueError(
            f"{where}.X must hold 1 (active), 0 (inactive) or NaN (not measured); found {_preview(np.unique(values[bad]))}."
        )
    return pd.DataFrame(values, index=labels.obs_names.astype(str), columns=labels.var_names.astype(str))


def _check_aux_keys(adata: AnnData, aux_keys, bag_key: str, *, query: bool) -> list[str] | None:
    """``aux_keys`` as a list of obs columns: numeric (not boolean), finite and constant within bags."""
    if aux_keys is None:
        return None
    keys = [aux_keys] if isinstance(aux_keys, str) else aux_keys
    if not isinstance(keys, Sequence) or not all(isinstance(k, str) for k in keys) or not keys:
        raise TypeError(f"`aux_keys` must be an obs column name or a list of them, got {aux_keys!r}.")
    keys = list(keys)
    if len(set(keys)) != len(keys):
        raise ValueError(f"`aux_keys` names columns more than once: {keys}.")
    if query and not all(k in adata.obs for k in keys):
        return keys  # query data: aux columns are not read
    missing = [k for k in keys if k not in adata.obs]
    if missing:
        raise KeyError(
            f"adata.obs has no columns {missing} (argument `aux_keys`). Available columns: "
            f"{_preview(adata.obs.columns, 12)}."
        )
    for key in keys:
        col = adata.obs[key]
        what = f"adata.obs[{key!r}] (argument `aux_keys`)"
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise TypeError(f"{what} must be numeric (e.g. a cell count), got dtype {col.dtype}.")
        if not np.isfinite(col.to_numpy(dtype=float)).all():
            raise ValueError(f"{what} holds NaN or infinite values; aux concepts need a value for every bag.")
        check_constant_within(
            col,
            adata.obs[bag_key].to_numpy(),
            what=what,
            group_what=f"bags of adata.obs[{bag_key!r}]",
            fix="An aux concept is a property of the bag (well), e.g. its cell count: give every instance of "
            "a bag the same value.",
        )
    return keys


def _check_task_affinity(task_affinity, assays: list[str]) -> np.ndarray:
    """A T × T affinity matrix by assay name (a DataFrame, or the saved form ``{"names": [...], "values":
    [[...]]}``), reindexed to ``assays``; finite and symmetric."""
    if isinstance(task_affinity, dict) and set(task_affinity) == {"names", "values"}:
        names = [str(n) for n in task_affinity["names"]]
        task_affinity = pd.DataFrame(
            np.asarray(task_affinity["values"], dtype=float), index=names, columns=names
        )
    if not isinstance(task_affinity, pd.DataFrame):
        raise TypeError(
            "`task_affinity` must be a square DataFrame (rows and columns = assay names), got "
            f"{type(task_affinity).__name__}."
        )
    frame = task_affinity.copy()
    frame.index, frame.columns = frame.index.astype(str), frame.columns.astype(str)
    if frame.index.duplicated().any() or frame.columns.duplicated().any():
        raise ValueError("`task_affinity` names an assay more than once in its rows or columns.")
    if set(frame.index) != set(frame.columns):
        raise ValueError("`task_affinity` must have the same assay names as rows and as columns.")
    missing = [a for a in assays if a not in frame.index]
    if missing:
        raise ValueError(
            f"`task_affinity` lacks the model's assays {_preview(missing)}; it needs a row and a column per assay."
        )
    try:
        values = frame.loc[assays, assays].to_numpy(dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`task_affinity` must hold numbers: {err}") from err
    if not np.isfinite(values).all():
        raise ValueError("`task_affinity` holds NaN or infinite values among the model's assays.")
    if not np.allclose(values, values.T):
        raise ValueError("`task_affinity` must be symmetric (c_ij = c_ji).")
    return values


def _check_strategy(trainer) -> None:
    """Single-device and data-parallel (DDP) training only: the training plan gathers validation outputs and
    :class:`~hcitools.train.RestoreBestWeights` copies whole state dicts, which sharded strategies do not have."""
    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, SingleDeviceStrategy, XLAStrategy

    strategy = trainer.strategy
    if isinstance(strategy, SingleDeviceStrategy):
        return
    if isinstance(strategy, DDPStrategy) and not isinstance(strategy, DeepSpeedStrategy | XLAStrategy):
        return
    raise ValueError(
        f"MIL models train on a single device or with Lightning's DDP strategies ('ddp', 'ddp_spawn', "
        f"'ddp_notebook', or a DDPStrategy); got {type(strategy).__name__} (argument `strategy`)."
    )


def _best_epoch_from_history(
    history: dict | None, n_before: int, monitor: str = VAL_MEAN_AUROC, mode: str = "max"
) -> int | None:
    """Epoch (of the last training run) with the best value of ``monitor``; the first one on ties, like
    :class:`~hcitools.train.RestoreBestWeights`."""
    if not isinstance(history, dict) or monitor not in history:
        return None
    values = history[monitor][monitor].to_numpy(dtype=float)[n_before:]
    if not len(values):
        return None
    return int(np.nanargmax(values) if mode == "max" else np.nanargmin(values))


def _check_train_args(
    *, validation_key, validation_values, validation_size, max_instances, monitor, **numbers
) -> list | None:
    """Check the arguments of ``train`` before anything runs; return ``validation_values`` as a list."""
    bounds = {"max_epochs": 1, "warmup_epochs": 0, "patience": 1, "batch_size": 1, "lr_warmup_steps": 0}
    for name, value in numbers.items():
        if name in bounds:  # None: derived from the data (see `train`)
            check_int(value, name, min=bounds[name], allow_none=True)
        elif name == "lr":
            check_real(value, name, min=0, min_inclusive=False)
        else:
            check_real(value, name, min=0)
    if monitor not in MONITORS:
        raise ValueError(f"`monitor` must be one of {list(MONITORS)}, got {monitor!r}.")
    check_int(max_instances, "max_instances", min=1, allow_none=True)
    if validation_key is None:
        if validation_values is not None:
            raise ValueError(
                "`validation_values` needs `validation_key`, the obs column they are values of "
                "(e.g. validation_key='fold', validation_values=[3])."
            )
        check_real(validation_size, "validation_size", min=0, max=1, max_inclusive=False)
        return None
    if validation_values is None:
        raise ValueError("`validation_key` needs `validation_values`, the values that mark validation bags.")
    if isinstance(validation_values, str | bytes) or np.ndim(validation_values) == 0:
        return [validation_values]  # a single value
    return list(validation_values)


def _check_batch_size(batch_size) -> None:
    if not (_is_int(batch_size) and batch_size >= 1):
        raise ValueError(f"`batch_size` must be an integer ≥ 1 (bags per forward pass), got {batch_size!r}.")


def _per_bag_instances(value: torch.Tensor, mask: torch.Tensor, kind: str) -> list[np.ndarray]:
    """A batch's per-instance module output, one array per bag holding its real instances' rows:
    ``"bag_task_instance"`` (B × T × N, e.g. attention) gives N_b × T, ``"bag_instance"`` (B × N × …, e.g. instance
    embeddings) gives N_b × …."""
    if kind == "bag_task_instance":
        return [a[:, m].T.float().cpu().numpy() for a, m in zip(value, mask, strict=True)]
    return [e[m].float().cpu().numpy() for e, m in zip(value, mask, strict=True)]


def _check_out_shape(out: Any, shape: tuple[int, ...], columns: str) -> None:
    """``out`` (argument of the per-instance queries) must be an array of ``shape``: instances × ``columns``."""
    given = getattr(out, "shape", None)
    if given is None or tuple(given) != shape:
        what = f"shape {tuple(given)}" if given is not None else f"a {type(out).__name__} without a shape"
        raise ValueError(
            f"`out` must be an array of shape {shape} (instances × {columns}), got {what}. Create one of that "
            f"shape, e.g. `h5py.File(path, 'w').create_dataset('x', shape={shape}, dtype='float32')` or "
            f"`np.lib.format.open_memmap(path, mode='w+', dtype='float32', shape={shape})`, or pass `out=None`."
        )


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and np.isfinite(value)
    )


class MILModelBase(PersistenceMixin, BaseModelClass):
    """Base of the MIL models: bags of instances in, per-assay probabilities out.

    Subclasses set ``_module_cls`` and pass the keyword arguments of their module to :meth:`_init_mil`. The
    training slots (:meth:`_make_data_splitter`, :meth:`_make_training_plan`, :meth:`_make_callbacks`) are what
    a subclass overrides to change how it trains, rather than :meth:`train` itself.
    """

    _module_cls = None
    _data_splitter_cls = BagDataSplitter
    _training_plan_cls = MILTrainingPlan
    _train_runner_cls = TrainRunner

    # ------------------------------------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        *,
        bag_key: str = HCI_KEYS.WELL,
        labels_key: str = HCI_KEYS.ASSAYS,
        rep_key: str | None = None,
        layer: str | None = None,
        batch_key: str | None = None,
        group_key: str | None = None,
        aux_keys: str | Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        """Validate and register an instance AnnData for MIL models.

        Parameters
        ----------
        adata
            One row per instance (crop or cell).
        bag_key
            obs column with the bag (well) id, unique across plates (see :func:`hcitools.pp.make_bag_key`).
        labels_key
            obsm key of the labels: DataFrame n_obs × n_assays of 1 / 0 / NaN (not measured), constant
            within a bag (and within a group, with ``group_key``). Every assay needs observed positives and
            negatives.
        rep_key
            obsm key of the instance embeddings; ``None`` uses ``X`` (or ``layer``).
        layer
            Layer with the embeddings, instead of ``X``.
        batch_key
            obs column with the plate (batch); bags must be unique across it.
        group_key
            obs column grouping bags, e.g. ``"compound"``: enables ``predict(level="compound")`` and
            compound-level validation AUROC. Must be constant within each bag.
        aux_keys
            Numeric obs columns constant within bags (e.g. the cell count of each well): auxiliary concepts that
            the model regresses linearly from its shared bag representation (MSE on targets standardised with
            the training bags' mean and standard deviation), weighted like the assays by ``train(weighting=...)``
            as tasks ``aux_<key>``. Only training reads them.

        Notes
        -----
        Registers with scvi-tools' :class:`~scvi.data.AnnDataManager`: the embeddings (``LayerField`` or
        ``ObsmField``), the labels (:class:`~hcitools.model.base.LabelsField`, NaN = not measured) and the bag,
        group and batch ids (:class:`~hcitools.model.base.BagIdField`). The user's columns are read as they are
        (nothing is recast); like every scvi-tools model, registration writes the integer codes of the ids into
        ``adata.obs["_scvi_bag"]`` (``"_scvi_group"``, ``"_scvi_batch"``) and the registration ids into
        ``adata.uns["_scvi_uuid"]`` and ``adata.uns["_scvi_manager_uuid"]``. Only these documented arguments are
        stored in the registry (and in a saved model).
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        # a subclass's own setup arguments (checked by it), stored with the others and read by `_extra_fields`
        setup_method_args["setup_args"].update(kwargs.pop("extra_setup_args", None) or {})
        if isinstance(
            aux_keys, str | tuple
        ):  # saved as a primitive list (a saved model from before has none)
            setup_method_args["setup_args"]["aux_keys"] = (
                [aux_keys] if isinstance(aux_keys, str) else list(aux_keys)
            )
        # A model loaded onto query data (``load(..., adata=query)``) or given new data only predicts: the query
        # needs no labels (a test set may even hold a single observed class), plates or groups.
        query = kwargs.get("source_registry") is not None
        _check_obs_in_memory(adata)
        validate_hci(
            adata,
            plate_key=batch_key if not query or (batch_key in adata.obs) else None,
            bag_key=bag_key,
            compound_key=None if query else group_key,
            rep_key=rep_key,
            layer=layer,
            labels_key=None,
            arg_names={"plate_key": "batch_key", "compound_key": "group_key"},
        )
        bags = adata.obs[bag_key].to_numpy()
        aux_keys = _check_aux_keys(adata, aux_keys, bag_key, query=query)
        if not query:
            labels = check_labels(adata, labels_key, bag_key)
            _check_assays_learnable(labels, bags)
        if group_key is not None and group_key in adata.obs:
            check_constant_within(
                adata.obs[group_key],
                bags,
                what=f"adata.obs[{group_key!r}] (argument `group_key`)",
                group_what=f"bags of adata.obs[{bag_key!r}]",
                fix="A bag (well) belongs to one group (compound).",
            )
            if not query:
                check_constant_within(
                    labels,
                    adata.obs[group_key].to_numpy(),
                    what=f"adata.obsm[{labels_key!r}] (argument `labels_key`)",
                    group_what=f"groups of adata.obs[{group_key!r}] (argument `group_key`)",
                    fix="Labels belong to compounds: assign them per compound with `ht.pp.assign_labels`.",
                )
        x_field = (
            ObsmField(REGISTRY_KEYS.X_KEY, rep_key, correct_data_format=False)
            if rep_key is not None
            else LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False, correct_data_format=False)
        )
        fields = [
            x_field,
            LabelsField(MIL_KEYS.LABELS_REGISTRY, labels_key, correct_data_format=False),
            BagIdField(MIL_KEYS.BAG_REGISTRY, bag_key),
        ]
        if group_key is not None:
            fields.append(BagIdField(MIL_KEYS.GROUP_REGISTRY, group_key))
        if batch_key is not None:
            fields.append(BagIdField(MIL_KEYS.BATCH_REGISTRY, batch_key))
        if aux_keys is not None:
            fields.append(AuxField(MIL_KEYS.AUX_REGISTRY, aux_keys))
        fields.extend(cls._extra_fields(adata, **setup_method_args["setup_args"]))
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        with quiet_loggers("scvi"):  # its "Using column names" note would print on every setup
            adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    @classmethod
    def _extra_fields(cls, adata: AnnData, **setup_args) -> list:
        """Setup slot: the fields a subclass registers beyond the shared ones (e.g. M4's grid positions), from
        the stored setup arguments (those a subclass passes as ``extra_setup_args`` included). From
        :meth:`setup_mudata` it also gets ``instance_mod`` (wrap the fields for that modality)."""
        return []

    @classmethod
    def setup_mudata(
        cls,
        mdata,
        *,
        instance_mod: str = "crops",
        label_mod: str = "compounds",
        bag_key: str = HCI_KEYS.WELL,
        group_key: str | None = HCI_KEYS.COMPOUND,
        label_key: str | None = None,
        rep_key: str | None = None,
        layer: str | None = None,
        batch_key: str | None = None,
        aux_keys: str | Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        """Validate and register a screen in the MuData layout: instances in one modality, labels once per compound.

        Parameters
        ----------
        mdata
            A :class:`~mudata.MuData` with an instance modality (one row per crop or cell; the embeddings and the
            obs columns ``bag_key``, ``group_key``, ...) and a label modality (one row per compound, or per well
            for dose-level labels; ``X`` = 1 / 0 / NaN, columns = assays). :func:`hcitools.pp.to_mudata` builds
            one from the ``obsm["assays"]`` layout. The instance modality may be backed (on disk).
        instance_mod
            Name of the instance modality.
        label_mod
            Name of the label modality.
        bag_key, group_key, rep_key, layer, batch_key, aux_keys
            As in :meth:`setup_anndata`, for the instance modality.
        label_key
            obs column of the instance modality whose values are the ``obs_names`` of the label modality (default
            ``group_key``: labels per compound; a well column for dose-level labels). Constant within bags.
            Instances whose value has no row there are unlabelled (e.g. DMSO wells).

        Notes
        -----
        Registers with scvi-tools' MuData fields: the embeddings (``MuDataLayerField`` / ``MuDataObsmField`` of the
        instance modality), the labels (:class:`~hcitools.model.base.MuDataLabelsField`: the label
        modality's ``X``), the bag, group and batch ids, and the row of each instance's labels
        (``mdata.mod[instance_mod].obs["_scvi_label_index"]``). Training reads one label row per bag, never one
        per instance. Queries (``predict``, ``get_attention``, ...) take this MuData, another MuData with the same
        instance modality (the label modality may be absent), or an AnnData of instances.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        if isinstance(aux_keys, str | tuple):
            setup_method_args["setup_args"]["aux_keys"] = (
                [aux_keys] if isinstance(aux_keys, str) else list(aux_keys)
            )
        # a subclass's own setup arguments (checked by it), as in `setup_anndata`; read by `_extra_fields`
        setup_method_args["setup_args"].update(kwargs.pop("extra_setup_args", None) or {})
        if not _is_mudata(mdata):
            raise TypeError(
                f"`mdata` must be a MuData, got {type(mdata).__name__}; for an AnnData use `setup_anndata` (or "
                "convert it with `ht.pp.to_mudata`)."
            )
        query = kwargs.get("source_registry") is not None
        for name, mod in (("instance_mod", instance_mod), ("label_mod", label_mod)):
            if not isinstance(mod, str):
                raise TypeError(f"`{name}` must be a modality name (str), got {mod!r}.")
        if instance_mod not in mdata.mod:
            raise KeyError(
                f"The MuData has no modality {instance_mod!r} (argument `instance_mod`); it has {list(mdata.mod)}."
            )
        crops = mdata.mod[instance_mod]
        _check_obs_in_memory(crops, f"mdata.mod[{instance_mod!r}]")
        validate_hci(
            crops,
            plate_key=batch_key if not query or (batch_key in crops.obs) else None,
            bag_key=bag_key,
            compound_key=None if query else group_key,
            rep_key=rep_key,
            layer=layer,
            labels_key=None,
            arg_names={"plate_key": "batch_key", "compound_key": "group_key"},
        )
        bags = crops.obs[bag_key].to_numpy()
        aux_keys = _check_aux_keys(crops, aux_keys, bag_key, query=query)
        label_key = group_key if label_key is None else label_key
        if label_key is None:
            raise ValueError(
                "`label_key` (or `group_key`) must name the obs column of the instances that indexes the label "
                "modality, e.g. group_key='compound'."
            )
        if group_key is not None and group_key in crops.obs:
            check_constant_within(
                crops.obs[group_key],
                bags,
                what=f"mdata.mod[{instance_mod!r}].obs[{group_key!r}] (argument `group_key`)",
                group_what=f"bags of obs[{bag_key!r}]",
                fix="A bag (well) belongs to one group (compound).",
            )
        if not query:
            if label_mod not in mdata.mod:
                raise KeyError(
                    f"The MuData has no modality {label_mod!r} (argument `label_mod`); it has {list(mdata.mod)}."
                )
            if label_key not in crops.obs:
                raise KeyError(
                    f"mdata.mod[{instance_mod!r}].obs has no column {label_key!r} (argument `label_key`/`group_key`)."
                )
            check_constant_within(
                crops.obs[label_key],
                bags,
                what=f"mdata.mod[{instance_mod!r}].obs[{label_key!r}] (argument `label_key`)",
                group_what=f"bags of obs[{bag_key!r}]",
                fix="Labels are per bag (well) at the finest: give every instance of a bag the same label row.",
            )
            table = _check_label_table(mdata.mod[label_mod], label_mod)
            rows = LabelIndexField.rows(crops, mdata.mod[label_mod], label_key)
            if not (rows >= 0).any():
                raise ValueError(
                    f"No value of mdata.mod[{instance_mod!r}].obs[{label_key!r}] is a row of "
                    f"mdata.mod[{label_mod!r}] (its obs_names, e.g. {_preview(table.index, 3)}): no instance has labels."
                )
            bag_rows = pd.Series(rows, index=None).groupby(pd.factorize(bags)[0]).first().to_numpy()
            used = table.iloc[bag_rows[bag_rows >= 0]]
            _check_assays_learnable(used.reset_index(drop=True), np.arange(len(used)))
        wrap = {"mod_key": instance_mod, "mod_required": True}
        x_field = (
            MuDataObsmField(REGISTRY_KEYS.X_KEY, rep_key, correct_data_format=False, **wrap)
            if rep_key is not None
            else MuDataLayerField(
                REGISTRY_KEYS.X_KEY, layer, is_count_data=False, correct_data_format=False, **wrap
            )
        )
        fields = [
            x_field,
            MuDataLabelsField(
                MIL_KEYS.LABELS_REGISTRY,
                None,
                is_count_data=False,
                correct_data_format=False,
                mod_key=label_mod,
            ),
            MuDataBagIdField(MIL_KEYS.BAG_REGISTRY, bag_key, **wrap),
            LabelIndexField(
                MIL_KEYS.LABEL_INDEX_REGISTRY, label_key, instance_mod=instance_mod, label_mod=label_mod
            ),
        ]
        if group_key is not None:
            fields.append(MuDataBagIdField(MIL_KEYS.GROUP_REGISTRY, group_key, **wrap))
        if batch_key is not None:
            fields.append(MuDataBagIdField(MIL_KEYS.BATCH_REGISTRY, batch_key, **wrap))
        if aux_keys is not None:
            fields.append(MuDataAuxField(MIL_KEYS.AUX_REGISTRY, aux_keys, **wrap))
        fields.extend(cls._extra_fields(mdata, **setup_method_args["setup_args"]))  # with `instance_mod`
        adata_manager = AnnDataManager(
            fields=fields,
            setup_method_args=setup_method_args,
            validation_checks=AnnDataManagerValidationCheck(check_fully_paired_mudata=False),
        )
        with quiet_loggers("scvi"):
            adata_manager.register_fields(mdata, **kwargs)
        cls.register_manager(adata_manager)

    # ------------------------------------------------------------------------------------------------ init
    def _init_mil(
        self,
        primary_assays: Sequence[str] | None,
        module_kwargs: dict[str, Any],
        *,
        adversarial: bool = False,
        prior: dict[str, Any] | None = None,
    ) -> dict | None:
        """Check the model's arguments and build its module from the registry (works with or without data).

        ``adversarial`` adds the gradient-reversal branch of the registered ``batch_key``; registered
        ``aux_keys`` add the auxiliary branches; ``prior`` (``task_affinity``, ``prior_weight``, ``key_assays``)
        the task-prior loss (modules that have one). Returns ``task_affinity`` in its primitive, saved form
        (``{"names": assays, "values": nested lists}``) or None.
        """
        for name in ("n_hidden", "n_head_hidden"):
            if name in module_kwargs and not (_is_int(module_kwargs[name]) and module_kwargs[name] >= 1):
                raise ValueError(f"`{name}` must be an integer ≥ 1, got {module_kwargs[name]!r}.")
        dropout = module_kwargs.get("dropout", 0.0)
        if not (_is_real(dropout) and 0 <= dropout < 1):
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}.")
        fields = self.registry_["field_registries"]
        self.assays = [str(c) for c in fields[MIL_KEYS.LABELS_REGISTRY]["state_registry"]["column_names"]]
        if primary_assays is not None:
            if isinstance(primary_assays, str):
                primary_assays = [primary_assays]
            primary_assays = [str(a) for a in primary_assays]
            unknown = [a for a in primary_assays if a not in self.assays]
            if unknown or not primary_assays:
                raise ValueError(
                    f"`primary_assays` {unknown or '(empty)'} are not assays of the labels; assays are "
                    f"{_preview(self.assays)}."
                )
        adversarial = check_bool(adversarial, "adversarial")
        module_kwargs = dict(module_kwargs)
        if adversarial:
            if MIL_KEYS.BATCH_REGISTRY not in fields:
                raise ValueError(
                    "`adversarial=True` predicts the batch (plate) of each bag: register it with "
                    "`setup_anndata(..., batch_key='plate')`."
                )
            n_batches = int(fields[MIL_KEYS.BATCH_REGISTRY]["state_registry"][BagIdField.N_CATEGORIES_KEY])
            if n_batches < 2:
                raise ValueError(
                    f"`adversarial=True` needs at least 2 batches in `batch_key`, the data has {n_batches}."
                )
            module_kwargs["n_batches"] = n_batches
        self.aux_keys = (
            [str(k) for k in fields[MIL_KEYS.AUX_REGISTRY]["state_registry"][AuxField.COLUMNS_KEY]]
            if MIL_KEYS.AUX_REGISTRY in fields
            else []
        )
        if self.aux_keys:
            module_kwargs["n_aux"] = len(self.aux_keys)
        saved_affinity = None
        if prior is not None:
            saved_affinity = self._prior_kwargs(module_kwargs, **prior)
        self.primary_assays = primary_assays
        self.n_input = len(fields[REGISTRY_KEYS.X_KEY]["state_registry"]["column_names"])
        self.module = self._module_cls(self.n_input, len(self.assays), **module_kwargs)
        self._model_summary_string = (
            f"{type(self).__name__}: {len(self.assays)} assays, {self.n_input}-d instances, "
            + ", ".join(
                f"{k}={v}"
                for k, v in module_kwargs.items()
                if k not in ("task_affinity", "prior_task_weight")
            )
        )
        return saved_affinity

    def _prior_kwargs(self, module_kwargs: dict, *, task_affinity, prior_weight, key_assays) -> dict | None:
        """Check the task-prior options; add the module's ``task_affinity``, ``prior_weight`` and
        ``prior_task_weight`` (v = 0.9 for ``key_assays``, 0.1 otherwise) to ``module_kwargs``."""
        prior_weight = check_real(prior_weight, "prior_weight", min=0)
        if key_assays is not None:
            key_assays = [key_assays] if isinstance(key_assays, str) else [str(a) for a in key_assays]
            unknown = [a for a in key_assays if a not in self.assays]
            if unknown:
                raise ValueError(
                    f"`key_assays` {_preview(unknown)} are not assays of the labels; assays are "
                    f"{_preview(self.assays)}."
                )
        if task_affinity is None:
            if prior_weight > 0:
                raise ValueError("`prior_weight > 0` needs `task_affinity`, a T × T DataFrame by assay name.")
            return None
        values = _check_task_affinity(task_affinity, self.assays)
        v = [0.9 if key_assays is not None and a in key_assays else 0.1 for a in self.assays]
        module_kwargs.update(task_affinity=values.tolist(), prior_weight=prior_weight, prior_task_weight=v)
        return {"names": list(self.assays), "values": values.tolist()}

    @property
    def _setup(self) -> dict:
        return self.registry_["setup_args"]

    @property
    def best_epoch(self) -> int | None:
        """Epoch (of the last ``train``) whose weights were kept; ``None`` without model selection."""
        return getattr(self, "best_epoch_", None)

    @property
    def split_bags(self) -> dict[str, list[str]] | None:
        """Bag names of the last ``train`` in this session: ``"train"`` (all training bags, unlabelled ones
        included), ``"train_unlabelled"`` and ``"validation"``; None before training (and after ``load``)."""
        return getattr(self, "_split_bags", None)

    @property
    def use_pos_weight(self) -> bool:
        """Whether the last ``train`` weighted positives by ``n_neg / n_pos`` (``train(pos_weight=True)``)."""
        return bool((getattr(self, "train_params_", None) or {}).get("pos_weight", False))

    # ------------------------------------------------------------------------------------------------ data
    @property
    def features(self) -> list[str] | None:
        """Names of the features the model was trained on (``var_names``, or the columns of a DataFrame in
        ``obsm[rep_key]``); ``None`` for unnamed array embeddings."""
        names = [
            str(v)
            for v in self.registry_["field_registries"][REGISTRY_KEYS.X_KEY]["state_registry"]["column_names"]
        ]
        unnamed = self._setup["rep_key"] is not None and names == [str(i) for i in range(len(names))]
        return None if unnamed else names

    @property
    def _instance_mod(self) -> str | None:
        """The instance modality of a model set up with :meth:`setup_mudata` (else None)."""
        return (
            self._setup.get("instance_mod")
            if self.registry_.get("setup_method_name") == "setup_mudata"
            else None
        )

    def _instances(self, adata):
        """The AnnData of the instances of ``adata`` (its instance modality for a MuData)."""
        if _is_mudata(adata):
            mod = self._instance_mod
            if mod is None or mod not in adata.mod:
                raise ValueError(
                    f"The MuData has no instance modality {mod!r} of the model (modalities: {list(adata.mod)})"
                    if mod is not None
                    else "This model was set up with `setup_anndata`: pass an AnnData of instances, not a MuData."
                )
            return adata.mod[mod]
        return adata

    def _query_features(self, adata: AnnData) -> tuple[list[str] | None, str]:
        adata = self._instances(adata)
        rep_key = self._setup["rep_key"]
        if rep_key is None:
            return [str(v) for v in adata.var_names], "adata.var_names"
        rep = adata.obsm[rep_key] if rep_key in adata.obsm else None
        names = [str(c) for c in rep.columns] if isinstance(rep, pd.DataFrame) else None
        return names, f"adata.obsm[{rep_key!r}].columns"

    def _check_features(self, adata: AnnData) -> None:
        """Refuse query data whose features differ from the model's by name or order (not only by width)."""
        expected = self.features
        given, where = self._query_features(adata)
        if expected is None or given is None or given == expected:
            return  # unnamed embeddings: the width is checked on transfer
        if len(given) == len(expected) and set(given) == set(expected):
            fix = "they hold the model's features in another order: reorder them by name with `adata = model.align_features(adata)`"
        else:
            missing = [f for f in expected if f not in set(given)]
            fix = (
                f"the model's features {_preview(missing)} are missing"
                if missing
                else "they hold other features"
            )
        raise ValueError(
            f"{where} do not match the features the model was trained on ({len(expected)}, e.g. "
            f"{_preview(expected, 3)}): {fix}. Predictions on other features would be silently wrong."
        )

    def align_features(self, adata: AnnData) -> AnnData:
        """``adata`` with its features reordered by name to the model's (``model.features``).

        Parameters
        ----------
        adata
            Instances holding every feature of the model (by name), in any order; extra features are dropped.

        Returns
        -------
        A view of ``adata`` with the model's ``var_names`` in order, or (embeddings in ``obsm[rep_key]``) a copy
        whose ``obsm[rep_key]`` DataFrame has the model's columns in order. ``adata`` is not modified.
        """
        expected = self.features
        given, where = self._query_features(adata)
        if expected is None or given is None:
            raise ValueError(f"{where} or the model's features are unnamed: nothing to align by name.")
        missing = [f for f in expected if f not in set(given)]
        if missing:
            raise ValueError(
                f"{where} lack the model's features {_preview(missing)}; they cannot be aligned."
            )
        if self._setup["rep_key"] is None:
            return adata[:, expected]
        out = adata.copy()
        out.obsm[self._setup["rep_key"]] = adata.obsm[self._setup["rep_key"]][expected]
        return out

    def _manager_for(self, adata: AnnData | None):
        """The AnnDataManager of ``adata`` (default: the model's data), transferring the fields onto new data."""
        if adata is None or adata is self.adata:
            if self.adata is None:
                raise ValueError(
                    "The model has no data attached (it was loaded without `adata`); pass `adata=` the instances."
                )
            return self.adata_manager
        if not isinstance(adata, AnnData) and not _is_mudata(adata):
            raise TypeError(f"`adata` must be an AnnData (or a MuData), got {type(adata).__name__}.")
        if isinstance(adata, AnnData) and self._instance_mod is not None:
            import mudata

            # a model set up with `setup_mudata` queries an AnnData of instances as a one-modality MuData
            adata = mudata.MuData({self._instance_mod: adata})
        _check_obs_in_memory(self._instances(adata))
        self._check_features(adata)
        with quiet_loggers("scvi"):  # its "attempting to transfer AnnData setup" note on every query
            adata = self._validate_anndata(adata)
        return self.get_anndata_manager(adata, required=True)

    def _bag_data(self, adata: AnnData | None = None, *, labels: bool = False) -> BagData:
        """Bags of ``adata`` (default: the training AnnData) from its registered fields."""
        return BagData.from_manager(self._manager_for(adata), labels=labels)

    # ------------------------------------------------------------------------------------------------ train
    def _check_training_data(self) -> None:
        """The attached data can train the model: labels of every assay of the model, each learnable."""
        if self.adata is None:
            raise ValueError(
                "The model has no data attached (loaded without `adata`): load it with labelled data to train."
            )
        s = self._setup
        if self._instance_mod is not None:  # MuData layout: labels once per row of the label modality
            crops, label_mod = self._instances(self.adata), s["label_mod"]
            if label_mod not in self.adata.mod:
                raise ValueError(f"The MuData has no label modality {label_mod!r}: training needs labels.")
            table = _check_label_table(self.adata.mod[label_mod], label_mod)
            missing = [a for a in self.assays if a not in table.columns]
            if missing:
                raise ValueError(
                    f"mdata.mod[{label_mod!r}] lacks the assays {_preview(missing)} of the model; training needs "
                    "labels of every assay the model predicts."
                )
            rows = LabelIndexField.rows(crops, self.adata.mod[label_mod], s["label_key"] or s["group_key"])
            bag_rows = pd.Series(rows).groupby(pd.factorize(crops.obs[s["bag_key"]])[0]).first().to_numpy()
            used = table[self.assays].iloc[bag_rows[bag_rows >= 0]].reset_index(drop=True)
            _check_assays_learnable(used, np.arange(len(used)))
            return
        labels = check_labels(self.adata, s["labels_key"], s["bag_key"])
        missing = [a for a in self.assays if a not in labels.columns]
        if missing:
            raise ValueError(
                f"adata.obsm[{s['labels_key']!r}] lacks the assays {_preview(missing)} of the model; training "
                "needs labels of every assay the model predicts."
            )
        _check_assays_learnable(labels[self.assays], self.adata.obs[s["bag_key"]].to_numpy())

    def _make_data_splitter(self, **kwargs) -> BagDataSplitter:
        """Training slot: the bag-level splitter, built from the model's AnnDataManager."""
        return self._data_splitter_cls(self.adata_manager, **kwargs)

    def _make_training_plan(
        self, splitter: BagDataSplitter, *, pos_weight: bool, **kwargs
    ) -> MILTrainingPlan:
        """Training slot: the plan; ``pos_weight=True`` gives it ``n_neg / n_pos`` of the training bags. With aux
        branches, the module's aux targets are standardised with the mean and standard deviation over the
        training bags."""
        aux_keys = getattr(self, "aux_keys", [])
        if aux_keys:
            if splitter.data.aux is None:
                raise ValueError(
                    f"The model regresses `aux_keys` {aux_keys} but the data holds none of them."
                )
            aux = splitter.data.aux[splitter.train_idx]
            kwargs["aux_scale"] = (aux.mean(0), aux.std(0, unbiased=False))  # set on the module at fit start
        n_batches = getattr(self.module, "n_batches", 0)
        if n_batches > 0:
            if splitter.data.batch is None:
                raise ValueError(
                    "The model's adversarial branch needs the `batch_key` of setup_anndata in the data."
                )
            if int(splitter.data.batch.max()) >= n_batches:
                raise ValueError(
                    f"The data hold {int(splitter.data.batch.max()) + 1} batches (`batch_key`); the model's "
                    f"adversarial branch was built for {n_batches}."
                )
        return self._training_plan_cls(
            self.module,
            assays=self.assays,
            primary_assays=self.primary_assays,
            bag_groups=splitter.data.groups,
            pos_weight=splitter.pos_weight() if pos_weight else None,
            aux_names=aux_keys,
            **kwargs,
        )

    def _make_callbacks(
        self,
        splitter: BagDataSplitter,
        plan: MILTrainingPlan,
        *,
        patience: int,
        warmup_epochs: int,
        monitor: str = "auroc",
    ) -> tuple[list, RestoreBestWeights | None]:
        """Training slot: early stopping and best-weight restoring on the validation ``monitor`` (a key of
        ``MONITORS`` other than ``"auto"``), when the validation bags can measure the AUROC (a primary assay with
        both classes); else none (and a warning)."""
        if not self._validation_class_counts(splitter, plan):
            return [], None
        metric, mode = MONITORS[monitor]
        best = RestoreBestWeights(metric, mode)
        # our own callback rather than scvi-tools' `early_stopping=True`, which it turns off under DDP
        stop = EarlyStopping(
            monitor=metric, min_delta=0.0, patience=patience, mode=mode, warmup_epochs=warmup_epochs
        )
        return [best, stop], best

    @staticmethod
    def _validation_class_counts(splitter: BagDataSplitter, plan: MILTrainingPlan) -> list[int]:
        """``min(n_pos, n_neg)`` of every primary assay with both classes in the validation bags (compounds, with
        ``group_key``); empty when the validation set cannot measure any primary AUROC."""
        if splitter.n_val == 0:
            return []
        labels = splitter.data.labels[splitter.val_idx].numpy()[:, plan.primary_index]
        if splitter.data.groups is not None:
            labels = pd.DataFrame(labels).groupby(splitter.data.groups[splitter.val_idx]).first().to_numpy()
        n_pos, n_neg = (labels == 1).sum(0), (labels == 0).sum(0)
        return [int(min(p, n)) for p, n in zip(n_pos, n_neg, strict=True) if p > 0 and n > 0]

    def _resolve_monitor(self, monitor: str, splitter: BagDataSplitter, plan: MILTrainingPlan) -> str:
        """``"auto"``: the mean AUROC when the validation set holds at least ``MIN_VALIDATION_CLASS`` bags of the
        minority class summed over the primary assays, else the validation loss."""
        if monitor != "auto":
            return monitor
        return (
            "auroc" if sum(self._validation_class_counts(splitter, plan)) >= MIN_VALIDATION_CLASS else "loss"
        )

    def train(
        self,
        max_epochs: int | None = None,
        *,
        warmup_epochs: int | None = None,
        patience: int | None = None,
        lr: float = 1e-3,
        lr_warmup_steps: int | None = None,
        weight_decay: float = 5e-4,
        batch_size: int | None = None,
        validation_size: float = 0.2,
        validation_key: str | None = None,
        validation_values: Sequence[Any] | None = None,
        monitor: Literal["auto", "auroc", "loss"] = "auto",
        seed: int = 0,
        accelerator: str = "auto",
        devices: int | str = "auto",
        pos_weight: bool = False,
        weighting: str | TaskWeighting = "equal",
        weighting_kwargs: dict | None = None,
        adversarial_weight: float | Literal["schedule"] = ADVERSARIAL_SCHEDULE,
        n_discriminator_steps: int = N_DISCRIMINATOR_STEPS,
        discriminator_lr: float | None = None,
        max_instances: int | None = None,
        group_by_size: bool = False,
        enable_progress_bar: bool | None = None,
        pseudo_labels: dict[str, Any] | None = None,
        **trainer_kwargs,
    ) -> None:
        """Train with AdamW (linear warm-up, then cosine decay by step); early stopping; best weights restored.

        Every argument is checked before anything changes: a call that raises leaves the model (weights, seed,
        history) as it was.

        **Defaults that scale with the data.** Arguments left at ``None`` are derived from the number of labelled
        training bags ``n`` (after the validation split) by :func:`hcitools.train._mil_plan.scaled_defaults`;
        a value given is used exactly as given (and the others are derived from it):

        ======================  ==================================================  ===========  ==========  ============
        argument                rule                                                n = 100      n = 1,000   n = 100,000
        ======================  ==================================================  ===========  ==========  ============
        ``batch_size``          ``min(256, max(8, n // 16))``: ~16 steps/epoch      8            62          256
        steps per epoch         ``ceil(n / batch_size)``                            13           17          391
        ``max_epochs``          ``clip(ceil(2000 / steps per epoch), 20, 300)``     154          118         20
        ``lr_warmup_steps``     ``ceil(0.05 · steps per epoch · max_epochs)``       101          101         391
        ``warmup_epochs``       ``ceil(0.2 · max_epochs)``                          31           24          4
        ``patience``            ``max(10, ceil(0.1 · max_epochs))``                 16           12          10
        ======================  ==================================================  ===========  ==========  ============

        The old fixed defaults (256 bags per batch, 100 epochs, lr 1e-4) gave a 100-bag data set one optimiser
        step per epoch, 100 in all. Measured with ``benchmarks/mil_real.py --seeds 0`` (5 stratified bag folds,
        inner validation only; pooled test AUROC): with no training arguments MoMIL reaches 0.904 on corel_dogs and
        0.794 on protein, against 0.858 / 0.681 for a pooled logistic regression tuned on the inner validation split
        and 0.562 / 0.496 (chance) for the old defaults (``--seeds 1``: 0.907 / 0.707 against 0.859 / 0.662 and
        0.586 / 0.482). ``n // 8`` bags per batch gave 0.914 / 0.862 there, but half
        as many steps per epoch: on a simulated screen trained for a fixed 40 epochs it fell to 0.455 mean primary
        AUROC against 0.693 with ``n // 16``, hence ``n // 16``. ``lr=1e-3`` with the warm-up is the value measured;
        the paper's 1e-4 … 1e-5 suit 256-bag batches of ~100,000 wells over many more steps (pass ``lr`` there).

        **Early stopping with few validation bags.** ``monitor="auto"`` selects the model (and stops early) on
        the validation mean AUROC over ``primary_assays`` when the validation set holds at least 10 bags
        (compounds, with ``group_key``) of the minority class, summed over the primary assays; below that the AUROC
        rests on a handful of positives and is noise, and the validation loss (all validation bags count) is
        monitored instead (protein: ~5 positive validation bags). The loss is not the default everywhere because it
        can disagree with the ranking: on a simulated 12-assay screen the validation loss rose from epoch 4 while
        the validation AUROC rose from 0.53 to 0.80 until epoch 20. ``"auroc"`` and ``"loss"`` force one.

        Parameters
        ----------
        max_epochs
            Maximum number of epochs; None: derived (above).
        warmup_epochs
            Epochs before early stopping may trigger; None: derived.
        patience
            Validation epochs without improvement of the monitor before stopping; None: derived.
        lr, weight_decay
            AdamW parameters; ``lr`` is the peak learning rate, reached at the end of the warm-up.
        lr_warmup_steps
            Optimiser steps of linear learning-rate warm-up from ``lr / lr_warmup_steps`` to ``lr``, after which the
            learning rate decays as a cosine to 0 at the last step of ``max_epochs``
            (:meth:`hcitools.train.MILTrainingPlan.lr_factor`); 0: no warm-up; None: derived.
        batch_size
            Bags per batch; None: derived.
        validation_size
            Fraction of bags held out at random for validation (ignored with ``validation_key``). With
            ``group_key`` registered, whole groups are held out (that fraction of the compounds, with all their
            bags), so replicate wells of a compound are never on both sides.
        validation_key, validation_values
            Take the validation bags from a user column instead (e.g. ``validation_key="fold"``,
            ``validation_values=[3]``, or a single value ``3``); constant within bags. Bags with other values are
            trained on.
        monitor
            ``"auto"`` (see above), ``"auroc"`` (``validation_mean_auroc``, maximised) or ``"loss"``
            (``validation_loss``, minimised): what early stopping and the restored best weights follow.
        seed
            Seeds the initial weights (before the first training), the split, the batch order, subsampling and
            dropout.
        accelerator, devices
            Lightning's; ``"auto"`` uses a GPU when present.
        pos_weight
            Weight positives by ``n_neg / n_pos`` per assay in the BCE, from the observed training labels (held
            by the training plan, not the module).
        weighting
            How per-assay losses are combined: a name of ``hcitools.train.WEIGHTINGS`` — ``"equal"`` (their sum
            over the assays observed in the batch), ``"uncertainty"`` (Kendall et al., learned log σ² per assay),
            ``"amtl"`` (thesis 000's modified AMTL from validation AUROC and task potentials), ``"amtl_geometric"``
            (the original weighted geometric mean), ``"dwa"`` (dynamic weight averaging) — or a
            :class:`~hcitools.train.TaskWeighting` instance. Assays without a label in a batch contribute nothing.
        weighting_kwargs
            Keyword arguments of the strategy named by ``weighting``. With ``aux_keys`` registered, the
            weighting holds T + K tasks (the assays, then ``aux_<key>``): a :class:`~hcitools.train.TaskWeighting`
            instance must be built for T + K tasks; ``"uncertainty"`` uses the regression form for the aux tasks.
        adversarial_weight
            Models built with ``adversarial=True``: the weight λ of the adversarial branch, the scale of its
            gradient reversal (the domain classifier learns unscaled, see ``n_discriminator_steps``; its
            cross-entropy is added outside the task weighting, so no weighting learns it away). A float ≥ 0, or ``"schedule"`` (default): Ganin &
            Lempitsky's ramp ``2 / (1 + exp(−10 · progress)) − 1``, progress = optimiser step / total steps
            (:func:`hcitools.train._mil_plan.adversarial_schedule`). Ignored without the branch.
        n_discriminator_steps
            Models built with ``adversarial=True``: updates of the domain classifier per training batch (default
            5), by its own Adam optimiser on the batch's detached bag representation, so that the classifier the
            encoder fights stays near its optimum (GAN practice; with a single joint step the encoder fools a stale
            classifier while a fresh linear probe still reads the plate). Logged as ``discriminator_loss``.
        discriminator_lr
            Learning rate of the domain classifier (constant, no weight decay); None (default): 10 × ``lr``.
        max_instances
            Randomly subsample training bags larger than this (off by default; never in validation or queries).
        group_by_size
            Batch training bags of similar size together (shuffled, then sorted by size within windows of 50
            batches; ``hcitools.dataloaders.SizeGroupedSampler``). Cuts the padding of very ragged bags
            (e.g. cells per well); off by default because batches then correlate with bag size, which can carry
            label information (toxic compounds leave fewer cells).
        pseudo_labels
            Thesis 000's pseudo-label schedule (Algorithms 1–4; :class:`hcitools.train.PseudoLabels`), or None
            (off): a dict with ``warmup`` (epochs trained on the observed labels only), ``every`` (epochs between
            refreshes), ``percentile`` (0.9: thresholds at the 90th percentile of the validation probabilities of
            correctly classified positives and the 10th of correctly classified negatives), ``emphasis``
            (``(α_pos, α_neg)``, default ``(1.0, 1.0)``: the thresholds of assays outside ``key_assays`` are
            scaled by α_pos > 1 and α_neg < 1, giving them fewer pseudo-labels) and ``key_assays`` (default the
            ``primary_assays``). The unlabelled entries of the training bags, including bags without any observed
            label, get pseudo-labels; validation labels are never changed. Per-epoch counts go to
            ``model.history`` (``pseudo_labels_pos``, ``pseudo_labels_neg``, ``pseudo_pos_<assay>``,
            ``pseudo_neg_<assay>``).
        enable_progress_bar
            Show Lightning's progress bar; ``None`` follows ``ht.settings.verbosity`` (shown unless ``"error"``).
            Lightning's device banners and tips show only at verbosity ``"info"`` and above.
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` (e.g. ``strategy="ddp"``, see Notes). Early stopping is set
            up here (``patience``, ``warmup_epochs``, ``monitor``); scvi-tools' ``early_stopping*`` arguments are
            refused.

        Notes
        -----
        ``model.history`` holds per-epoch ``train_loss``, ``task_loss_<assay>``, ``task_weight_<assay>`` (also
        ``task_loss_aux_<key>`` / ``task_weight_aux_<key>`` for aux concepts), ``adversarial_loss`` and ``adversarial_weight`` (adversarial branch),
        ``prior_loss`` (λ · the prior loss),
        ``validation_loss``, ``validation_auroc_<assay>`` and ``validation_mean_auroc``; ``model.best_epoch`` the
        epoch whose weights were kept; ``model.train_params_`` the settings used (derived ones included, and the
        resolved ``monitor``). All are saved with the model.

        **Multi-GPU / multi-node.** Lightning's data-parallel strategies are supported, e.g.
        ``accelerator="gpu", devices=4, strategy="ddp"`` (``accelerator="cpu"`` with the gloo backend works too).
        Each process trains on its shard of the training bags (``batch_size`` counts bags per process) and
        validates a shard of the validation bags; the validation outputs of all processes are gathered and the
        AUROC is computed on the whole validation set (bags repeated by the distributed sampler are counted
        once, groups are matched by bag), so early stopping and the restored best weights agree across
        processes. The derived defaults count the training bags of all processes (per-process steps are fewer). The losses in the history are averaged across processes.

        - ``strategy="ddp"`` (recommended; multi-node with ``num_nodes``, or processes started by ``torchrun`` or
          SLURM): unless a cluster launcher started the processes, Lightning re-runs the calling *script*
          (``sys.argv``) once per additional process, so call ``train`` from a script under
          ``if __name__ == "__main__":``, not from Jupyter (Lightning refuses) or from a test runner such as
          pytest (which would be re-run). Every process continues the script after ``train`` with the restored
          best weights and the same ``model.history`` and ``model.best_epoch``, so write outputs from one
          process only (e.g. ``if model.trainer.is_global_zero:``).
        - ``strategy="ddp_spawn"`` (scripts, under ``if __name__ == "__main__":``; the model and its AnnData are
          pickled to each child process) and ``"ddp_fork"`` / ``"ddp_notebook"`` (Jupyter; CPU, or CUDA not yet
          initialised): training runs in child processes; the calling process gets the restored best weights of
          process 0, the history (through the history file of scvi-tools' logger, written here into a temporary
          directory, hence lost with a custom ``logger``) and ``best_epoch`` (read off the history).

        Sharded strategies (FSDP, DeepSpeed) and multi-device XLA are not supported and raise a ValueError.
        """
        # 1. validate everything (nothing changes before this block has passed)
        _check_train_args(
            max_epochs=max_epochs,
            warmup_epochs=warmup_epochs,
            patience=patience,
            lr=lr,
            lr_warmup_steps=lr_warmup_steps,
            weight_decay=weight_decay,
            batch_size=batch_size,
            validation_size=validation_size,
            validation_key=validation_key,
            validation_values=validation_values,
            max_instances=max_instances,
            monitor=monitor,
        )
        refused = sorted(k for k in trainer_kwargs if k.startswith("early_stopping"))
        if refused:
            raise TypeError(
                f"`train` sets up early stopping itself; use `monitor`, `patience` and `warmup_epochs` "
                f"(patience=max_epochs never stops) instead of {refused}."
            )
        if not isinstance(pos_weight, bool | np.bool_):
            raise TypeError(f"`pos_weight` must be True or False, got {pos_weight!r}.")
        # checks the name, instance, kwargs and assay names (e.g. AMTL's potentials)
        make_task_weighting(weighting, weighting_kwargs, self.assays, getattr(self, "aux_keys", []))
        adversarial_weight = check_adversarial_weight(adversarial_weight)
        n_discriminator_steps, _ = check_discriminator_args(n_discriminator_steps, discriminator_lr, lr)
        enable_progress_bar = progress_bar_default(enable_progress_bar)
        if pseudo_labels is not None:
            from ..train._pseudo import check_pseudo_labels

            pseudo_labels = check_pseudo_labels(pseudo_labels, self.assays, self.primary_assays)
        self._check_training_data()
        splitter = self._make_data_splitter(
            validation_size=validation_size,
            validation_key=validation_key,
            validation_values=validation_values,
            batch_size=batch_size or 1,  # set below, once the number of training bags is known
            seed=seed,
            max_instances=max_instances,
            group_by_size=group_by_size,
        )
        d = self._training_defaults(
            splitter.n_train,
            batch_size=batch_size,
            max_epochs=max_epochs,
            lr_warmup_steps=lr_warmup_steps,
            warmup_epochs=warmup_epochs,
            patience=patience,
        )
        splitter.batch_size = d.batch_size
        plan = self._make_training_plan(
            splitter,
            pos_weight=bool(pos_weight),
            lr=lr,
            weight_decay=weight_decay,
            max_epochs=d.max_epochs,
            lr_warmup_steps=d.lr_warmup_steps,
            weighting=weighting,
            weighting_kwargs=weighting_kwargs,
            adversarial_weight=adversarial_weight,
            n_discriminator_steps=n_discriminator_steps,
            discriminator_lr=discriminator_lr,
        )
        monitor = self._resolve_monitor(monitor, splitter, plan)
        callbacks, best = self._make_callbacks(
            splitter, plan, patience=d.patience, warmup_epochs=d.warmup_epochs, monitor=monitor
        )
        callbacks = list(trainer_kwargs.pop("callbacks", [])) + callbacks
        if pseudo_labels is not None:
            from ..train._pseudo import PseudoLabels

            if not splitter.n_val:
                raise ValueError(
                    "`pseudo_labels` needs validation bags (its thresholds come from correctly classified "
                    "validation bags), but this split has none; give `validation_size` > 0 or "
                    "`validation_key` / `validation_values`, or train without `pseudo_labels`."
                )
            if pseudo_labels["warmup"] >= d.max_epochs:
                warn(
                    f"`pseudo_labels` warmup={pseudo_labels['warmup']} is not below max_epochs={d.max_epochs}: "
                    "no pseudo-label will be assigned in this training.",
                    UserWarning,
                )
            splitter.include_unlabelled = True  # unlabelled training bags get pseudo-labels
            callbacks = [PseudoLabels(splitter, **pseudo_labels), *callbacks]
        trainer_kwargs.setdefault("log_every_n_steps", 1)
        if best is not None:
            trainer_kwargs["check_val_every_n_epoch"] = 1
        elif splitter.n_val:
            trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
        logger.info(
            f"training on {splitter.n_train} bags ({splitter.n_val} validation): batch_size={d.batch_size}, "
            f"max_epochs={d.max_epochs} ({d.total_steps} steps), lr={lr:g} with {d.lr_warmup_steps} warm-up "
            f"steps, early stopping on {MONITORS[monitor][0]} (warmup_epochs={d.warmup_epochs}, "
            f"patience={d.patience})"
        )
        # 2. train
        if best is None:
            warn(
                "The validation bags hold no primary assay with both classes observed: training runs all "
                f"{d.max_epochs} epochs without early stopping or model selection."
            )
        history = self.history  # DataFrames (saved models hold lists), which scvi-tools appends to
        metric, mode = MONITORS[monitor]
        n_before = len(history[metric]) if isinstance(history, dict) and metric in history else 0
        with (
            history_file_dir(trainer_kwargs) as trainer_kwargs,
            warnings.catch_warnings(),
            third_party_quiet(),
        ):
            # scvi-tools turns off its own early stopping under DDP; ours is a plain callback and stays on
            warnings.filterwarnings("ignore", message="early_stopping was automatically disabled")
            runner = self._train_runner_cls(
                self,
                training_plan=plan,
                data_splitter=splitter,
                max_epochs=d.max_epochs,
                accelerator=accelerator,
                devices=devices,
                callbacks=callbacks,
                enable_progress_bar=enable_progress_bar,
                **trainer_kwargs,
            )
            _check_strategy(runner.trainer)
            seed_and_reset(self, seed)
            self.module.train()  # queries and `load` leave it in eval mode, which Lightning would keep
            run_training(self, runner)
        # with a spawn-based strategy the callback ran in child processes: read the best epoch off the history
        self.best_epoch_ = best.best_epoch if best is not None else None
        if self.best_epoch_ is None and best is not None:
            self.best_epoch_ = _best_epoch_from_history(self.history_, n_before, metric, mode)
            if self.best_epoch_ is None:
                warn(
                    "Training ran in child processes and left no history in this process (a custom `logger` "
                    "replaces the history file of scvi-tools' logger): `model.history` and `model.best_epoch` "
                    "are unavailable; the model holds the restored best weights. Use strategy='ddp' or no "
                    "`logger` to get them."
                )
        # the bags of the split (by name): what ``ht.tl.impute_labels`` reads thresholds from and imputes into;
        # not saved with the model (it grows with the data)
        self._split_bags = {
            "train": [
                str(b)
                for b in splitter.data.bag_names[
                    np.sort(np.concatenate([splitter.train_idx, splitter.unlabelled_train_idx]))
                ]
            ],
            "train_unlabelled": [str(b) for b in splitter.data.bag_names[splitter.unlabelled_train_idx]],
            "validation": [str(b) for b in splitter.data.bag_names[splitter.val_idx]],
        }
        self.train_params_ = {
            "max_epochs": d.max_epochs,
            "warmup_epochs": d.warmup_epochs,
            "patience": d.patience,
            "lr": float(lr),
            "lr_warmup_steps": d.lr_warmup_steps,
            "weight_decay": float(weight_decay),
            "batch_size": d.batch_size,
            "monitor": monitor,
            "seed": int(seed),
            "pos_weight": bool(pos_weight),
            "weighting": weighting if isinstance(weighting, str) else type(weighting).__name__,
            "adversarial_weight": adversarial_weight,
            "pseudo_labels": None
            if pseudo_labels is None
            else {k: (list(v) if isinstance(v, tuple | list) else v) for k, v in pseudo_labels.items()},
            "n_discriminator_steps": n_discriminator_steps,
            "discriminator_lr": None if discriminator_lr is None else float(discriminator_lr),
        }

    def _training_defaults(self, n_train: int, **given) -> TrainingDefaults:
        """Training slot: the settings of one ``train`` call from the number of training bags and the values
        given (None = derive); :func:`hcitools.train._mil_plan.scaled_defaults`."""
        return scaled_defaults(n_train, **given)

    # ------------------------------------------------------------------------------------------------ queries
    @torch.inference_mode()
    def _run(
        self, adata: AnnData | None, batch_size: int, keys: Sequence[str]
    ) -> tuple[BagData, dict[str, Any]]:
        """Run the module over every bag; collect the outputs ``keys`` by their kind (``module.output_kinds``)."""
        _check_batch_size(batch_size)
        kinds = self.module.output_kinds
        unknown = [k for k in keys if k not in kinds]
        if unknown:
            raise ValueError(f"The module has no outputs {unknown}; it declares {sorted(kinds)}.")
        self._check_if_trained(warn=True)
        data = self._bag_data(adata)
        self.module.eval()
        out: dict[str, list] = {k: [] for k in keys}
        for batch in bag_loader(data, np.arange(data.n_bags), batch_size=batch_size):
            res = self.module.inference(**self.module._get_inference_input(batch))
            for key in keys:
                if kinds[key] == "bag":
                    out[key].append(res[key].float().cpu().numpy())
                else:
                    out[key].extend(_per_bag_instances(res[key], batch[MIL_KEYS.MASK], kinds[key]))
        return data, {k: np.concatenate(v) if kinds[k] == "bag" else v for k, v in out.items()}

    @torch.inference_mode()
    def _write_instance_output(self, adata, key: str, batch_size: int, out: Any, *, columns: str) -> Any:
        """Write the per-instance output ``key`` (kind ``"bag_task_instance"`` or ``"bag_instance"``) into ``out``
        batch by batch, rows following ``adata.obs_names``; ``columns`` names its columns in the shape error.

        ``out``'s shape is checked against the first batch's output (its width is the module's), before anything
        is written.
        """
        _check_batch_size(batch_size)
        kind = self.module.output_kinds[key]
        self._check_if_trained(warn=True)
        data = self._bag_data(adata)
        self.module.eval()
        checked = False
        for batch in bag_loader(data, np.arange(data.n_bags), batch_size=batch_size):
            value = self.module.inference(**self.module._get_inference_input(batch))[key]  # M4: positions too
            per_bag = _per_bag_instances(value, batch[MIL_KEYS.MASK], kind)
            if not checked:
                _check_out_shape(out, (len(data.order), *per_bag[0].shape[1:]), columns)
                checked = True
            for per_row, b in zip(per_bag, batch[MIL_KEYS.BAG_INDEX].tolist(), strict=True):
                rows = data.order[data.starts[b] : data.starts[b] + data.sizes[b]]
                if rows[-1] - rows[0] + 1 == len(rows) and (np.diff(rows) == 1).all():
                    out[int(rows[0]) : int(rows[-1]) + 1] = per_row  # one slice (h5py, memmap)
                else:
                    sort = np.argsort(rows)
                    out[rows[sort]] = per_row[sort]  # h5py needs increasing indices
        return out

    @staticmethod
    def _unsort(data: BagData, per_bag_rows: list[np.ndarray]) -> np.ndarray:
        stacked = np.concatenate(per_bag_rows)
        out = np.empty_like(stacked)
        out[data.order] = stacked
        return out

    def get_module_outputs(
        self, adata: AnnData | None = None, *, keys: Sequence[str] | None = None, batch_size: int = 256
    ) -> dict[str, np.ndarray]:
        """Any output the module declares (``model.module.output_kinds``), e.g. gates or several attention maps.

        Parameters
        ----------
        adata
            Instances (same representation as at setup); default the training AnnData. Labels are not needed.
        keys
            Output names (default: all); see :data:`hcitools._constants.MODULE_KEYS`.
        batch_size
            Bags per forward pass.

        Returns
        -------
        dict name → ndarray: per-bag outputs with one row per bag (in the order of :meth:`predict`), per-instance
        outputs with one row per instance (following ``adata.obs_names``). Nothing is written into ``adata``.
        """
        keys = (
            list(self.module.output_kinds)
            if keys is None
            else [keys]
            if isinstance(keys, str)
            else list(keys)
        )
        data, out = self._run(adata, batch_size, keys)
        return {
            k: v if self.module.output_kinds[k] == "bag" else self._unsort(data, v) for k, v in out.items()
        }

    def predict(
        self,
        adata: AnnData | None = None,
        *,
        level: Literal["bag", "compound"] = "bag",
        batch_size: int = 256,
    ) -> pd.DataFrame:
        """Activity probabilities per bag, or per compound (mean over its bags; needs ``group_key``).

        Parameters
        ----------
        adata
            Instances to predict (same representation and feature names as at setup); default the training
            AnnData. Labels are not needed.
        level
            ``"bag"`` or ``"compound"``.
        batch_size
            Bags per forward pass.

        Returns
        -------
        DataFrame, rows = bags (sorted by id) or groups, columns = assays. Nothing is written into ``adata``
        (scvi-tools' registration of new data adds ``obs["_scvi_*"]`` codes and ``uns["_scvi_*"]`` ids).
        """
        if level not in ("bag", "compound"):
            raise ValueError(f"`level` must be 'bag' or 'compound', got {level!r}.")
        group_key = self._setup["group_key"]
        if level == "compound":
            if group_key is None:
                raise ValueError(
                    "`level='compound'` needs `group_key` at setup_anndata (e.g. group_key='compound')."
                )
            if adata is not None and group_key not in self._instances(adata).obs:
                raise KeyError(
                    f"`level='compound'` averages bags per adata.obs[{group_key!r}] (the `group_key` of "
                    "setup_anndata), which `adata` lacks."
                )
        data, out = self._run(adata, batch_size, [MODULE_KEYS.LOGITS])
        prob = expit(out[MODULE_KEYS.LOGITS])
        pred = pd.DataFrame(prob, index=pd.Index(data.bag_names, name=None), columns=self.assays)
        if level == "compound":
            pred = pred.groupby(data.groups, sort=False).mean()
        return pred

    def get_attention(
        self, adata: AnnData | None = None, *, batch_size: int = 256, out: Any = None
    ) -> np.ndarray:
        """Attention of every instance for every assay; within each bag, each assay's attention sums to 1.

        Parameters
        ----------
        adata
            Instances (same representation as at setup); default the training AnnData. Labels are not needed.
        batch_size
            Bags per forward pass.
        out
            An n_obs × n_assays array to write into batch by batch instead of building the result in memory, e.g.
            an ``h5py`` dataset or a ``numpy.memmap`` (for screens whose attention does not fit in memory).

        Returns
        -------
        ndarray n_obs × n_assays (or ``out``), rows following ``adata.obs_names``, columns ``model.assays``.
        Nothing is written into ``adata`` (:func:`hcitools.tl.momil` stores it in ``obsm``).
        """
        if out is not None:
            return self._write_instance_output(
                adata, MODULE_KEYS.ATTENTION, batch_size, out, columns="assays"
            )
        return self.get_module_outputs(adata, keys=[MODULE_KEYS.ATTENTION], batch_size=batch_size)[
            MODULE_KEYS.ATTENTION
        ]

    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        *,
        level: Literal["bag", "instance", "assay"] = "bag",
        batch_size: int = 256,
        out: Any = None,
    ) -> np.ndarray:
        """Learned representations.

        Parameters
        ----------
        adata
            Instances (default: the training AnnData).
        level
            ``"instance"``: the shared projection of every instance (n_obs × d, rows follow ``adata``);
            ``"bag"``: the mean of the projected instances of each bag (n_bags × d, rows in the order of
            ``predict``); ``"assay"``: each assay's attention-pooled bag embedding (n_bags × T × h). Baselines
            without a projector (:class:`~hcitools.model.MeanMLP`) return their inputs at ``"instance"``.
        batch_size
            Bags per forward pass.
        out
            With ``level="instance"`` only: an n_obs × d array to write into batch by batch instead of building the
            result in memory, e.g. an ``h5py`` dataset or a ``numpy.memmap`` (for screens whose instance
            representations do not fit in memory).

        Returns
        -------
        ndarray as above (or ``out``, rows following ``adata.obs_names``). Nothing is written into ``adata``.
        """
        if level not in ("bag", "instance", "assay"):
            raise ValueError(f"`level` must be 'bag', 'instance' or 'assay', got {level!r}.")
        if out is not None:
            if level != "instance":
                raise ValueError(
                    f"`out` receives one row per instance and needs `level='instance'`, got level={level!r}; the "
                    f"{level}-level result has one row per bag: call without `out`."
                )
            return self._write_instance_output(
                adata, MODULE_KEYS.INSTANCE_EMBEDDING, batch_size, out, columns="latent dimensions"
            )
        if level == "assay":
            return self.get_module_outputs(adata, keys=[MODULE_KEYS.BAG_EMBEDDING], batch_size=batch_size)[
                MODULE_KEYS.BAG_EMBEDDING
            ]
        data, out = self._run(adata, batch_size, [MODULE_KEYS.INSTANCE_EMBEDDING])
        per_bag = out[MODULE_KEYS.INSTANCE_EMBEDDING]
        if level == "instance":
            return self._unsort(data, per_bag)
        return np.stack([e.mean(axis=0) for e in per_bag])
