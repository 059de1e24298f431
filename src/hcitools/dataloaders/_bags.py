"""Whole-bag batching of ragged bags.

Instances are stored once, sorted by bag, so that each bag is a contiguous slice. A batch of bags is
gathered into a padded tensor B × N_max × D with a boolean mask in one indexing operation: no instance is
duplicated, dropped or interpolated (random subsampling of large bags is available for training only and is
off by default). ``batch_size`` counts bags. Splits are made by bag, never by instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Sampler

from .._constants import MIL_KEYS
from .._utils import to_dense
from .._validate import _preview, check_constant_within
from ._backed import BackedRows, contiguous_starts, is_on_disk


def instance_adata(adata_manager):
    """The AnnData of the instances registered in ``adata_manager``: its AnnData, or for a MuData (registered by
    ``setup_mudata``) the modality holding the bags."""
    adata = adata_manager.adata
    if hasattr(adata, "mod"):
        fields = {f.registry_key: f for f in adata_manager.fields}
        return adata.mod[fields[MIL_KEYS.BAG_REGISTRY].mod_key]
    return adata


@dataclass
class BagData:
    """Instances grouped into bags.

    Attributes
    ----------
    X
        float32 tensor n_instances × D, rows sorted by bag; or, for an on-disk matrix (a backed AnnData), a
        :class:`~hcitools.dataloaders.BackedRows` that reads the rows of a batch's bags from the file.
    order
        For each row of ``X``, its row in the source AnnData.
    starts, sizes
        Per bag: first row in ``X`` and number of instances.
    labels
        float32 tensor n_bags × T (NaN = not measured): one row per bag, never per instance (with the MuData
        layout, gathered from the label modality's one row per compound or well).
    bag_names
        Bag ids (the values of ``obs[bag_key]``), in bag order.
    groups
        Group (e.g. compound) of each bag, or None.
    batch
        int64 tensor n_bags: batch (plate) code of each bag (the registered ``batch_key``), or None.
    aux
        float32 tensor n_bags × K: the registered ``aux_keys`` of each bag (raw values), or None.
    positions
        int64 tensor n_instances × 2 (rows like ``X``): the (row, column) of each instance on its bag's grid (the
        registered ``grid_keys`` of :class:`~hcitools.model.M4`), or None.
    """

    X: torch.Tensor
    order: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    labels: torch.Tensor
    bag_names: np.ndarray
    groups: np.ndarray | None = None
    batch: torch.Tensor | None = None
    aux: torch.Tensor | None = None
    positions: torch.Tensor | None = None

    @property
    def n_bags(self) -> int:
        return len(self.starts)

    @classmethod
    def from_arrays(
        cls,
        X: np.ndarray,
        bags: Sequence,
        labels: np.ndarray | None,
        n_tasks: int,
        groups: Sequence | None = None,
    ) -> BagData:
        """Build from instance arrays; ``labels`` (n_instances × T) must be constant within bags.

        Bags are numbered in order of first appearance.
        """
        codes, names = pd.factorize(np.asarray(bags), sort=False)
        return cls._from_codes(X, codes, np.asarray(names), labels, n_tasks, groups)

    @classmethod
    def from_manager(cls, adata_manager, *, labels: bool) -> BagData:
        """Build from the fields registered by :meth:`hcitools.model.MoMIL.setup_anndata` (bags sorted by id).

        ``labels=False`` (queries) never reads the labels, the batch codes or the aux keys: the data may lack
        them. With ``labels=True`` (training) the batch codes (``batch_key``) and the aux columns (``aux_keys``)
        are read when registered.
        """
        from scvi import REGISTRY_KEYS

        adata = adata_manager.adata
        fields = {f.registry_key: f for f in adata_manager.fields}
        X = adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        X = X if is_on_disk(X) else to_dense(X, np.float32)  # an on-disk X is read per batch (BackedRows)
        codes = np.asarray(adata_manager.get_from_registry(MIL_KEYS.BAG_REGISTRY)).reshape(-1)
        names = fields[MIL_KEYS.BAG_REGISTRY].names(adata)
        n_tasks = len(adata_manager.get_state_registry(MIL_KEYS.LABELS_REGISTRY).column_names)
        lab = label_index = None
        if labels and MIL_KEYS.LABEL_INDEX_REGISTRY in fields:
            # MuData layout: one label row per compound (or well) in the label modality, a row index per instance
            assays = list(adata_manager.get_state_registry(MIL_KEYS.LABELS_REGISTRY).column_names)
            lab_mod = adata.mod[fields[MIL_KEYS.LABELS_REGISTRY].mod_key]
            if [str(v) for v in lab_mod.var_names] != assays:
                missing = [a for a in assays if a not in set(map(str, lab_mod.var_names))]
                if missing:
                    raise ValueError(f"The label modality lacks the model's assays {_preview(missing)}.")
                lab_mod = lab_mod[:, assays]
            lab = to_dense(lab_mod.X, np.float32)
            label_index = np.asarray(adata_manager.get_from_registry(MIL_KEYS.LABEL_INDEX_REGISTRY)).reshape(
                -1
            )
        elif labels:
            # by assay name: the registry holds the model's assays, the frame may order (or hold) others
            assays = list(adata_manager.get_state_registry(MIL_KEYS.LABELS_REGISTRY).column_names)
            frame = adata_manager.get_from_registry(MIL_KEYS.LABELS_REGISTRY)
            missing = [a for a in assays if a not in frame.columns]
            if missing:
                raise ValueError(f"The labels lack the model's assays {_preview(missing)}.")
            lab = frame[assays].to_numpy(dtype=np.float32)
        groups = None
        if MIL_KEYS.GROUP_REGISTRY in fields:
            group_codes = np.asarray(adata_manager.get_from_registry(MIL_KEYS.GROUP_REGISTRY)).reshape(-1)
            groups = fields[MIL_KEYS.GROUP_REGISTRY].names(adata)[group_codes]
        data = cls._from_codes(X, codes, names, lab, n_tasks, groups, label_index=label_index)
        if MIL_KEYS.GRID_REGISTRY in fields:  # instance positions: read by queries too
            grid = np.asarray(adata_manager.get_from_registry(MIL_KEYS.GRID_REGISTRY), dtype=np.int64)
            data.positions = torch.from_numpy(np.ascontiguousarray(grid.reshape(len(codes), 2)[data.order]))
        if labels:
            first = data.order[data.starts]
            if MIL_KEYS.BATCH_REGISTRY in fields:
                batch = np.asarray(adata_manager.get_from_registry(MIL_KEYS.BATCH_REGISTRY)).reshape(-1)
                data.batch = torch.from_numpy(batch[first].astype(np.int64))
            if MIL_KEYS.AUX_REGISTRY in fields:
                aux = np.asarray(adata_manager.get_from_registry(MIL_KEYS.AUX_REGISTRY), dtype=np.float32)
                data.aux = torch.from_numpy(np.ascontiguousarray(aux.reshape(len(codes), -1)[first]))
        return data

    @classmethod
    def _from_codes(cls, X, codes, names, labels, n_tasks, groups, label_index=None) -> BagData:
        """``label_index`` (per instance; -1 = no label row): ``labels`` is then a table of label rows (MuData)."""
        order = np.argsort(codes, kind="stable")
        sizes = np.bincount(codes, minlength=len(names))
        if (sizes == 0).any():
            raise ValueError("Empty bags: every bag needs at least one instance.")
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        first = order[starts]
        if labels is None:
            lab = np.full((len(names), n_tasks), np.nan, np.float32)
        elif label_index is not None:
            rows = np.asarray(label_index)[first]
            table = np.vstack([np.asarray(labels, np.float32), np.full((1, n_tasks), np.nan, np.float32)])
            lab = table[np.where(rows >= 0, rows, len(table) - 1)]
        else:
            lab = np.asarray(labels, np.float32)[first]
        grp = None if groups is None else np.asarray(groups)[first]
        if is_on_disk(X):
            file_starts = contiguous_starts(order, starts, sizes)
            if file_starts is None:
                raise ValueError(
                    "The instances of an on-disk (backed) AnnData are read bag by bag as contiguous row blocks, "
                    "but the rows of some bags are scattered through the file. Write a bag-sorted copy with "
                    "`adata = ht.pp.sort_by_bag(adata, bag_key=..., path='sorted.h5ad')`, or load the data into "
                    "memory (`adata = adata.to_memory()`)."
                )
            Xs = BackedRows(X, file_starts, sizes)
            return cls(Xs, order, starts, sizes, torch.from_numpy(lab), np.asarray(names), grp)
        Xs = np.ascontiguousarray(to_dense(X, np.float32)[order])
        return cls(torch.from_numpy(Xs), order, starts, sizes, torch.from_numpy(lab), np.asarray(names), grp)


class BagCollator:
    """Turn a list of bag indices into a padded batch ``{X: B × N × D, mask: B × N, labels: B × T, bag_index: B}``,
    plus ``batch`` (B batch codes), ``aux`` (B × K aux values) and ``positions`` (B × N × 2 grid positions, 0 on
    padding) when the data holds them.

    Parameters
    ----------
    data
        The bags.
    max_instances
        If set, bags larger than this are randomly subsampled to it (without replacement), e.g. during training.
    seed
        Seed for subsampling.
    """

    def __init__(self, data: BagData, max_instances: int | None = None, seed: int = 0):
        self.data = data
        self.max_instances = max_instances
        self.generator = torch.Generator().manual_seed(seed)
        self._starts = torch.from_numpy(data.starts)
        self._sizes = torch.from_numpy(data.sizes)

    def __call__(self, bag_indices: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(np.asarray(bag_indices), dtype=torch.long)
        starts, sizes = self._starts[idx], self._sizes[idx]
        if self.max_instances is not None and int(sizes.max()) > self.max_instances:
            n = sizes.clamp(max=self.max_instances)
            n_max = int(n.max())
            # random ranks within each bag, keep the n smallest: a uniform subset without replacement
            noise = torch.rand((len(idx), int(sizes.max())), generator=self.generator)
            noise = noise.masked_fill(torch.arange(noise.shape[1])[None] >= sizes[:, None], 2.0)
            offsets = noise.argsort(dim=1)[:, :n_max]
            mask = torch.arange(n_max)[None] < n[:, None]
        else:
            n_max = int(sizes.max())
            offsets = torch.arange(n_max)[None].expand(len(idx), -1)
            mask = offsets < sizes[:, None]
        rows = (starts[:, None] + offsets).masked_fill(~mask, 0)  # bag-sorted rows (X in memory, positions)
        if isinstance(self.data.X, BackedRows):  # on disk: one contiguous read per bag
            X = self.data.X.read(idx, offsets, mask)
        else:
            X = self.data.X[rows] * mask[..., None]
        out = {
            MIL_KEYS.X: X,
            MIL_KEYS.MASK: mask,
            MIL_KEYS.LABELS: self.data.labels[idx],
            MIL_KEYS.BAG_INDEX: idx,
        }
        if self.data.batch is not None:
            out[MIL_KEYS.BATCH] = self.data.batch[idx]
        if self.data.aux is not None:
            out[MIL_KEYS.AUX] = self.data.aux[idx]
        if self.data.positions is not None:
            out[MIL_KEYS.POSITIONS] = self.data.positions[rows] * mask[..., None]
        return out


class SizeGroupedSampler(Sampler[int]):
    """Random order of bags in which neighbours have similar sizes, to cut padding in ragged batches.

    Each epoch the bags are shuffled, cut into windows of ``window`` batches, and each window is sorted by bag
    size (stably), so a batch holds bags of similar size while every window remains a random sample (the
    "group by length" of sequence models). With equal bag sizes the order is the plain shuffle.

    Parameters
    ----------
    sizes
        Instances per bag, one entry per item of the dataset (the sampler yields positions into it).
    batch_size
        Bags per batch.
    window
        Batches per sorting window.
    generator
        Random generator of the shuffle.
    """

    def __init__(
        self, sizes: np.ndarray, batch_size: int, window: int = 50, generator: torch.Generator | None = None
    ):
        self.sizes = torch.as_tensor(np.asarray(sizes))
        self.span = max(1, int(batch_size) * int(window))
        self.generator = generator

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self):
        order = torch.randperm(len(self.sizes), generator=self.generator)
        for start in range(0, len(order), self.span):
            chunk = order[start : start + self.span]
            yield from chunk[torch.argsort(self.sizes[chunk], stable=True)].tolist()


def bag_loader(
    data: BagData,
    bags: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    max_instances: int | None = None,
    group_by_size: bool = False,
) -> DataLoader:
    """A DataLoader yielding padded batches of whole bags (``batch_size`` bags each).

    ``group_by_size`` (with ``shuffle``) batches bags of similar size together (:class:`SizeGroupedSampler`).
    """
    bags = np.asarray(bags, dtype=np.int64)
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    collate = BagCollator(data, max_instances=max_instances, seed=seed)
    if shuffle and group_by_size:
        sampler = SizeGroupedSampler(data.sizes[bags], batch_size, generator=generator)
        return DataLoader(bags, batch_size=batch_size, sampler=sampler, collate_fn=collate)
    return DataLoader(bags, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=collate)


class BagDataSplitter(pl.LightningDataModule):
    """Split bags (never instances) into training and validation sets and serve them as whole-bag batches.

    Built from a model's :class:`~scvi.data.AnnDataManager` (its registered fields), like scvi-tools'
    :class:`~scvi.dataloaders.DataSplitter`; scvi-tools' splitter draws instances (rows), which would put one
    well on both sides, hence this bag-level one. Bags without any observed label carry no loss and no
    validation signal; they are left out of both sets (the unlabelled training bags are kept in
    ``unlabelled_train_idx``, and served for training with ``include_unlabelled = True``, which the
    pseudo-label schedule of ``model.train(pseudo_labels=...)`` sets). Every argument is checked when it is built, before a
    model changes any state.

    Parameters
    ----------
    adata_manager
        The manager of the training data (or a :class:`BagData`, for use without a model).
    validation_size
        Fraction of bags held out for validation when ``validation_key`` is None; with groups (``group_key``,
        e.g. compounds), the fraction of groups, all of whose bags are held out together.
    validation_key, validation_values
        Validation bags from an obs column instead: the bags whose ``obs[validation_key]`` is in
        ``validation_values`` (constant within bags).
    batch_size
        Bags per batch.
    seed
        Seed of the random split, the batch order and subsampling.
    max_instances
        Random instance subsampling of training bags (None = off).
    group_by_size
        Batch training bags of similar size together (:class:`SizeGroupedSampler`); off by default.
    """

    def __init__(
        self,
        adata_manager,
        *,
        validation_size: float = 0.2,
        validation_key: str | None = None,
        validation_values: Sequence | None = None,
        batch_size: int = 256,
        seed: int = 0,
        max_instances: int | None = None,
        group_by_size: bool = False,
    ):
        super().__init__()
        data = (
            adata_manager
            if isinstance(adata_manager, BagData)
            else BagData.from_manager(adata_manager, labels=True)
        )
        self.data = data
        self.group_by_size = group_by_size
        self.batch_size = batch_size
        self.seed = seed
        self.max_instances = max_instances
        all_bags = np.arange(data.n_bags)
        if validation_key is not None:
            val = self._validation_from_column(adata_manager, validation_key, validation_values)
        else:
            if not 0 <= validation_size < 1:
                raise ValueError(f"`validation_size` must be in [0, 1), got {validation_size!r}.")
            rng = np.random.default_rng(seed)
            if data.groups is not None:
                # whole groups (compounds): replicate wells of one compound never sit on both sides
                names = np.unique(data.groups)
                chosen = rng.choice(
                    len(names), size=round(float(validation_size) * len(names)), replace=False
                )
                val = np.isin(data.groups, names[chosen])
            else:
                n_val = round(float(validation_size) * data.n_bags)
                val = np.zeros(data.n_bags, bool)
                val[rng.choice(data.n_bags, size=n_val, replace=False)] = True
        # Bags without any observed label add nothing to the loss or to AUROC: leave them out of the batches.
        labelled = ~torch.isnan(data.labels).all(dim=1).numpy()
        self.train_idx = all_bags[~val & labelled]
        self.val_idx = all_bags[val & labelled]
        # kept for what can use them (pseudo-labels: ``include_unlabelled``); plain training skips them
        self.unlabelled_train_idx = all_bags[~val & ~labelled]
        self.include_unlabelled = False
        self.test_idx = np.array([], dtype=np.int64)
        if len(self.train_idx) == 0:
            raise ValueError(
                "No labelled training bags are left after the validation split; lower `validation_size` or "
                "choose other `validation_values`."
            )
        self.n_train, self.n_val = len(self.train_idx), len(self.val_idx)

    def _validation_from_column(self, adata_manager, key: str, values) -> np.ndarray:
        if isinstance(adata_manager, BagData):
            raise TypeError("`validation_key` needs the AnnDataManager of the data, not BagData.")
        adata = instance_adata(adata_manager)
        if key not in adata.obs:
            raise KeyError(
                f"adata.obs has no column {key!r} (argument `validation_key`). Available columns: "
                f"{_preview(adata.obs.columns, 12)}."
            )
        if values is None:
            raise ValueError(
                "`validation_key` needs `validation_values`, the values that mark validation bags."
            )
        values = [values] if isinstance(values, str | bytes) or np.ndim(values) == 0 else list(values)
        bag_key = adata_manager.get_state_registry(MIL_KEYS.BAG_REGISTRY).original_key
        col = adata.obs[key]
        check_constant_within(
            col,
            adata.obs[bag_key].to_numpy(),
            what=f"adata.obs[{key!r}] (argument `validation_key`)",
            group_what=f"bags of adata.obs[{bag_key!r}]",
            fix="Validation is split by bag: give every instance of a bag the same value.",
        )
        val = np.isin(col.to_numpy()[self.data.order[self.data.starts]], values)
        if not val.any():
            raise ValueError(
                f"No bag has adata.obs[{key!r}] in {values} (argument `validation_values`); its values are "
                f"{_preview(pd.unique(col))}."
            )
        return val

    def pos_weight(self) -> torch.Tensor:
        """Per-task ``n_neg / n_pos`` of the observed training labels (1 for a task without positives)."""
        labels = self.data.labels[self.train_idx]
        n_pos = (labels == 1).sum(0).to(torch.float32)
        n_neg = (labels == 0).sum(0).to(torch.float32)
        return torch.where(n_pos > 0, n_neg / n_pos.clamp_min(1), torch.ones_like(n_pos))

    @property
    def loader_train_idx(self) -> np.ndarray:
        """The training bags the loader serves: the labelled ones, plus the unlabelled ones with
        ``include_unlabelled`` (pseudo-labels give them labels during training)."""
        if not self.include_unlabelled:
            return self.train_idx
        return np.sort(np.concatenate([self.train_idx, self.unlabelled_train_idx]))

    def train_dataloader(self) -> DataLoader:
        return bag_loader(
            self.data,
            self.loader_train_idx,
            batch_size=self.batch_size,
            shuffle=True,
            seed=self.seed,
            max_instances=self.max_instances,
            group_by_size=self.group_by_size,
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.n_val == 0:
            return []
        return bag_loader(self.data, self.val_idx, batch_size=self.batch_size)
