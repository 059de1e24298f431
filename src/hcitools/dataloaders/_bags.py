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


@dataclass
class BagData:
    """Instances grouped into bags.

    Attributes
    ----------
    X
        float32 tensor n_instances × D, rows sorted by bag.
    order
        For each row of ``X``, its row in the source AnnData.
    starts, sizes
        Per bag: first row in ``X`` and number of instances.
    labels
        float32 tensor n_bags × T (NaN = not measured).
    bag_names
        Bag ids (the values of ``obs[bag_key]``), in bag order.
    groups
        Group (e.g. compound) of each bag, or None.
    """

    X: torch.Tensor
    order: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    labels: torch.Tensor
    bag_names: np.ndarray
    groups: np.ndarray | None = None

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
        """Build from instance arrays; ``labels`` (n_instances × T) must be constant within bags."""
        codes, names = pd.factorize(np.asarray(bags), sort=False)
        order = np.argsort(codes, kind="stable")
        sizes = np.bincount(codes, minlength=len(names))
        if (sizes == 0).any():
            raise ValueError("Empty bags: every bag needs at least one instance.")
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        first = order[starts]
        lab = (
            np.full((len(names), n_tasks), np.nan, np.float32)
            if labels is None
            else np.asarray(labels, np.float32)[first]
        )
        grp = None if groups is None else np.asarray(groups)[first]
        Xs = np.ascontiguousarray(np.asarray(X, dtype=np.float32)[order])
        return cls(torch.from_numpy(Xs), order, starts, sizes, torch.from_numpy(lab), np.asarray(names), grp)


class BagCollator:
    """Turn a list of bag indices into a padded batch ``{X: B × N × D, mask: B × N, labels: B × T, bag_index: B}``.

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
        rows = (starts[:, None] + offsets).masked_fill(~mask, 0)
        X = self.data.X[rows] * mask[..., None]
        return {
            MIL_KEYS.X: X,
            MIL_KEYS.MASK: mask,
            MIL_KEYS.LABELS: self.data.labels[idx],
            MIL_KEYS.BAG_INDEX: idx,
        }


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

    Bags without any observed label carry no loss and no validation signal; they are left out of both sets.

    Parameters
    ----------
    data
        The bags.
    validation_size
        Fraction of bags held out for validation when ``validation_bags`` is None; with groups
        (``data.groups``, e.g. compounds), the fraction of groups, all of whose bags are held out together.
    validation_bags
        Boolean mask over bags: True = validation (e.g. from a fold column).
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
        data: BagData,
        *,
        validation_size: float = 0.2,
        validation_bags: np.ndarray | None = None,
        batch_size: int = 256,
        seed: int = 0,
        max_instances: int | None = None,
        group_by_size: bool = False,
    ):
        super().__init__()
        self.data = data
        self.group_by_size = group_by_size
        self.batch_size = batch_size
        self.seed = seed
        self.max_instances = max_instances
        all_bags = np.arange(data.n_bags)
        if validation_bags is not None:
            val = np.asarray(validation_bags, dtype=bool)
        else:
            if not 0 <= validation_size < 1:
                raise ValueError(f"`validation_size` must be in [0, 1), got {validation_size}.")
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
        self.test_idx = np.array([], dtype=np.int64)
        if len(self.train_idx) == 0:
            raise ValueError("No labelled training bags left after the validation split.")
        self.n_train, self.n_val = len(self.train_idx), len(self.val_idx)

    def train_dataloader(self) -> DataLoader:
        return bag_loader(
            self.data,
            self.train_idx,
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
