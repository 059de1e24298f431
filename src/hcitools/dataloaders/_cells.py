"""Row batches of a dictionary of aligned tensors (cells, their targets and conditions)."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader


class _Gather:
    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors

    def __call__(self, idx):
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return {k: v[idx] for k, v in self.tensors.items()}


class TensorDataSplitter(pl.LightningDataModule):
    """Random training / validation split of aligned rows; batches gathered by index in one operation.

    Parameters
    ----------
    tensors
        Aligned tensors (same first dimension).
    validation_size
        Fraction of rows held out.
    batch_size
        Rows per batch.
    seed
        Seed of the split and the shuffling.
    """

    def __init__(
        self,
        tensors: dict[str, torch.Tensor],
        *,
        validation_size: float = 0.1,
        batch_size: int = 128,
        seed: int = 0,
    ):
        super().__init__()
        n = len(next(iter(tensors.values())))
        if not 0 <= validation_size < 1:
            raise ValueError(f"`validation_size` must be in [0, 1), got {validation_size}.")
        rng = np.random.default_rng(seed)
        perm = rng.permutation(n)
        n_val = round(float(validation_size) * n)
        self.val_idx, self.train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        self.test_idx = np.array([], dtype=np.int64)
        self.n_train, self.n_val = len(self.train_idx), len(self.val_idx)
        self.tensors, self.batch_size, self.seed = tensors, batch_size, seed

    def _loader(self, idx: np.ndarray, shuffle: bool) -> DataLoader:
        gen = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            idx, batch_size=self.batch_size, shuffle=shuffle, generator=gen, collate_fn=_Gather(self.tensors)
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_idx, True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_idx, False) if self.n_val else []
