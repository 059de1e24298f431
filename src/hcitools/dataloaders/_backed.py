"""Out-of-core bags: instances read from an on-disk matrix as one contiguous row block per bag.

An AnnData opened with ``anndata.read_h5ad(path, backed="r")`` keeps ``X`` in the file (an ``h5py.Dataset``); so
does one built from a zarr store (written by ``adata.write_zarr``) with ``X`` a ``zarr.Array`` (``g["X"]`` of
``g = zarr.open_group(path)``) or a dask array (``anndata.experimental.read_elem_lazy(g["X"])``), its ``obs`` and
``obsm`` read into memory with ``anndata.io.read_elem`` (``anndata.experimental.read_lazy`` makes ``obs`` lazy
too, which the models refuse). :class:`BackedRows` serves a batch of bags from such an array by reading each bag's
rows as one slice (``X[start : start + size]``, a single contiguous read per bag, which HDF5 and zarr serve from
their chunks; a dask array computes each slice on its own): peak memory is one padded batch plus the per-bag index (starts
and sizes), never the matrix. Bags must be contiguous row blocks of the file; :func:`hcitools.pp.sort_by_bag`
writes a bag-sorted copy when they are not.

h5py and zarr do the reading; what is written here is only the per-bag slicing into a padded batch, which
neither library (nor anndata's backed mode, whose fancy indexing reads row by row) provides.
"""

from __future__ import annotations

import numpy as np
import torch

#: Rows read at a time when a whole on-disk matrix must be scanned (finite checks, normalisation, sorting).
CHUNK_ROWS = 8192


def is_on_disk(X) -> bool:
    """Whether ``X`` is an on-disk (or lazy) dense array: h5py dataset, zarr array or dask array."""
    mod = type(X).__module__
    return mod.startswith(("h5py", "zarr", "dask"))


def iter_row_chunks(X, chunk_rows: int = CHUNK_ROWS):
    """Yield ``(start, block)`` of ``chunk_rows`` consecutive rows of ``X`` (in memory or on disk)."""
    for start in range(0, X.shape[0], chunk_rows):
        block = X[start : start + chunk_rows]
        yield start, np.asarray(block.compute() if hasattr(block, "compute") else block)


def contiguous_starts(order: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray | None:
    """File row of the first instance of each bag when every bag is a contiguous run of rows, else None.

    ``order`` lists, bag after bag (``starts``, ``sizes`` into it), the rows of each bag in the file.
    """
    file_starts = order[starts]
    expected = np.repeat(file_starts - starts, sizes) + np.arange(len(order))
    return file_starts if np.array_equal(order, expected) else None


class BackedRows:
    """Padded batches of bags read from an on-disk matrix, one contiguous slice per bag.

    Parameters
    ----------
    array
        n_rows × D array supporting ``array[a:b]`` (``h5py.Dataset``, ``zarr.Array``, dask array).
    file_starts, sizes
        Per bag: its first row in ``array`` and its number of rows (each bag is ``array[s : s + n]``).
    max_batch_bytes
        If set, a batch whose padded float32 block would exceed this many bytes raises a MemoryError instead of
        being read (a memory budget for the loader).

    Attributes
    ----------
    max_rows_read
        The largest number of rows read by one call of :meth:`read` so far (for checks of peak memory).
    n_reads
        Number of slices read so far.
    """

    def __init__(
        self, array, file_starts: np.ndarray, sizes: np.ndarray, *, max_batch_bytes: int | None = None
    ):
        if len(array.shape) != 2:
            raise ValueError(f"An on-disk instance matrix must be 2-d, got shape {tuple(array.shape)}.")
        self.array = array
        self.file_starts = np.asarray(file_starts, dtype=np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.max_batch_bytes = max_batch_bytes
        self.max_rows_read = 0
        self.n_reads = 0

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.array.shape[0]), int(self.array.shape[1]))

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, idx: torch.Tensor, offsets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """B × N × D float32 batch: for bag ``idx[i]``, its rows ``offsets[i, mask[i]]`` (positions within the bag)."""
        B, N = mask.shape
        D = self.shape[1]
        if self.max_batch_bytes is not None and B * N * D * 4 > self.max_batch_bytes:
            raise MemoryError(
                f"A batch of {B} bags × {N} instances × {D} features ({B * N * D * 4 / 1e6:.1f} MB) exceeds the "
                f"loader's memory budget of {self.max_batch_bytes / 1e6:.1f} MB; lower `batch_size`."
            )
        out = np.zeros((B, N, D), dtype=np.float32)
        bags = idx.numpy()
        n_real = mask.sum(1).numpy()
        starts, sizes = self.file_starts[bags], self.sizes[bags]
        span = None
        if B > 1 and (starts[1:] == starts[:-1] + sizes[:-1]).all():
            # consecutive bags (queries run through the file in order): one read for the whole batch
            span = self._slice(int(starts[0]), int(starts[-1] + sizes[-1]))
        for i in range(B):
            start, size = int(starts[i]), int(sizes[i])
            if span is None:
                block = self._slice(start, start + size)
            else:
                block = span[start - starts[0] : start - starts[0] + size]
            take = offsets[i, : n_real[i]].numpy()
            whole = len(take) == size and (take == np.arange(size)).all()
            out[i, : n_real[i]] = block if whole else block[take]
        self.n_reads += 1 if span is not None else B
        self.max_rows_read = max(self.max_rows_read, int(sizes.sum()))
        return torch.from_numpy(out)

    def _slice(self, a: int, b: int) -> np.ndarray:
        block = self.array[a:b]
        return np.asarray(block.compute() if hasattr(block, "compute") else block, dtype=np.float32)
