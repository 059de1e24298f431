"""Pairs of registered cells (a control cell and its optimal-transport partner) for the MTAe OT variants.

scvi-tools' :class:`~scvi.dataloaders.AnnDataLoader` serves rows of the registered AnnData; the OT variants train
on *pairs* of rows (input = a control cell, target = its partner), which it does not serve. This splitter is the
smallest piece that does: it reads both cells of each pair through the same registered fields
(:meth:`~scvi.data.AnnDataManager.create_torch_dataset`) and leaves everything else to scvi-tools.
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from scvi import REGISTRY_KEYS
from scvi.dataloaders import BatchDistributedSampler
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from .._constants import PERTURBATION_REGISTRY_KEYS

#: keys of the target cell in a batch of pairs
TARGET_X_KEY = "target_X"
TARGET_CONDITION_KEY = "target_condition"


class _PairDataset(Dataset):
    """Batches of pairs: the registered tensors of ``src`` rows, plus ``target_X`` / ``target_condition`` of ``dst``."""

    def __init__(self, dataset, src: np.ndarray, dst: np.ndarray):
        self.dataset, self.src, self.dst = dataset, np.asarray(src), np.asarray(dst)

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, idx):
        idx = np.asarray(idx)
        out = dict(self.dataset[self.src[idx].tolist()])
        target = self.dataset[self.dst[idx].tolist()]
        out[TARGET_X_KEY] = target[REGISTRY_KEYS.X_KEY]
        out[TARGET_CONDITION_KEY] = target[PERTURBATION_REGISTRY_KEYS.CONDITION]
        return out


class PairedDataSplitter(pl.LightningDataModule):
    """Training and validation batches of (input row, target row) pairs of a registered AnnData.

    The pairs of each set are built from that set's cells only (the caller splits cells first), so no cell is
    on both sides.

    Parameters
    ----------
    adata_manager
        The model's :class:`~scvi.data.AnnDataManager`.
    train_pairs, val_pairs
        ``(input rows, target rows)`` of the training and validation pairs.
    batch_size
        Pairs per batch.
    seed
        Seed of the shuffling of training pairs.
    distributed_sampler
        Under DDP: each process loads its share of the pairs (scvi-tools' :class:`~scvi.dataloaders.BatchDistributedSampler`,
        as scvi-tools' ``AnnDataLoader`` with ``distributed_sampler=True``).
    """

    def __init__(
        self,
        adata_manager,
        train_pairs: tuple[np.ndarray, np.ndarray],
        val_pairs: tuple[np.ndarray, np.ndarray],
        *,
        batch_size: int = 128,
        seed: int = 0,
        distributed_sampler: bool = False,
    ):
        super().__init__()
        self.adata_manager, self.batch_size, self.seed = adata_manager, batch_size, seed
        self.distributed_sampler = distributed_sampler
        self.train_pairs = tuple(np.asarray(p, dtype=np.int64) for p in train_pairs)
        self.val_pairs = tuple(np.asarray(p, dtype=np.int64) for p in val_pairs)
        # what scvi-tools' TrainRunner records on the model: the cells on each side
        self.train_idx = np.unique(np.concatenate(self.train_pairs))
        self.val_idx = np.unique(np.concatenate(self.val_pairs))
        self.test_idx = np.array([], dtype=np.int64)
        self.n_train, self.n_val = len(self.train_pairs[0]), len(self.val_pairs[0])

    def _loader(self, pairs: tuple[np.ndarray, np.ndarray], shuffle: bool) -> DataLoader:
        data = _PairDataset(self.adata_manager.create_torch_dataset(), *pairs)
        if self.distributed_sampler:
            sampler = BatchDistributedSampler(
                data, batch_size=self.batch_size, shuffle=shuffle, seed=self.seed
            )
        else:
            base = (
                RandomSampler(data, generator=torch.Generator().manual_seed(self.seed)) if shuffle else None
            )
            sampler = BatchSampler(base or SequentialSampler(data), self.batch_size, drop_last=False)
        # the dataset returns whole batches: automatic batching off, as in scvi-tools' AnnDataLoader
        return DataLoader(data, sampler=sampler, batch_size=None)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_pairs, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_pairs, shuffle=False) if self.n_val else []
