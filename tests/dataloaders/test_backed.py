"""Out-of-core bags: models trained and queried on an AnnData opened with backed="r", read bag by bag."""

from __future__ import annotations

import tracemalloc

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import hcitools as ht
from hcitools.dataloaders import BackedRows, bag_loader

TRAIN = {"max_epochs": 2, "batch_size": 8, "enable_progress_bar": False, "seed": 0, "accelerator": "cpu"}


def _screen(n_features=12, n_compounds=30):
    return ht.datasets.synthetic_hci(
        n_compounds=n_compounds, n_assays=4, n_plates=2, wells_per_compound=2, n_features=n_features, n_primary=2,
        seed=0,
    )  # fmt: skip


def _train_each(*datas):
    """The same seeded MoMIL set up and trained on each of ``datas`` (in memory, backed, lazy)."""
    models = []
    for data in datas:
        ht.model.MoMIL.setup_anndata(data, group_key="compound")
        model = ht.model.MoMIL(data, n_hidden=8)
        model.train(**TRAIN)
        models.append(model)
    return models


def test_backed_training_and_queries_equal_in_memory(tmp_path):
    screen = _screen()
    screen.write_h5ad(tmp_path / "s.h5ad")
    backed = ad.read_h5ad(tmp_path / "s.h5ad", backed="r")
    mem, disk = _train_each(screen, backed)
    assert isinstance(disk._bag_data().X, BackedRows)
    pd.testing.assert_frame_equal(disk.predict(), mem.predict(), atol=1e-6)
    np.testing.assert_allclose(disk.get_attention(), mem.get_attention(), atol=1e-6)
    np.testing.assert_allclose(disk.get_attention(backed), mem.get_attention(screen), atol=1e-6)
    # attention written batch by batch into an on-disk array
    import h5py

    with h5py.File(tmp_path / "att.h5", "w") as f:
        out = f.create_dataset("attention", shape=(backed.n_obs, 4), dtype="float32")
        disk.get_attention(out=out, batch_size=8)
        np.testing.assert_allclose(out[:], mem.get_attention(), atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        disk.get_attention(out=np.zeros((3, 4)))
    # subsampled training bags (max_instances) read whole bags and keep a subset
    disk.train(**{**TRAIN, "max_epochs": 1}, max_instances=3)


def test_scattered_backed_rows_are_refused_then_sorted(tmp_path):
    screen = _screen()
    shuffled = screen[np.random.default_rng(0).permutation(screen.n_obs)].copy()
    shuffled.write_h5ad(tmp_path / "shuffled.h5ad")
    backed = ad.read_h5ad(tmp_path / "shuffled.h5ad", backed="r")
    ht.model.MoMIL.setup_anndata(backed, group_key="compound")
    model = ht.model.MoMIL(backed, n_hidden=8)
    with pytest.raises(ValueError, match="sort_by_bag"):
        model.train(**TRAIN)
    with pytest.raises(FileExistsError, match="overwrite"):
        ht.pp.sort_by_bag(backed, bag_key="well", path=str(tmp_path / "shuffled.h5ad"))
    ordered = ht.pp.sort_by_bag(backed, bag_key="well", path=str(tmp_path / "sorted.h5ad"), chunk_rows=100)
    assert ordered.isbacked
    bags = ordered.obs["well"].astype(str).to_numpy()
    assert (bags[:-1] <= bags[1:]).all()
    ref = shuffled.to_df().loc[ordered.obs_names].to_numpy()
    np.testing.assert_array_equal(ordered.X[:], ref)
    pd.testing.assert_frame_equal(ordered.obsm["assays"], shuffled.obsm["assays"].loc[ordered.obs_names])
    # a model trained in memory predicts the sorted file like the original rows (by bag and by obs_name)
    ht.model.MoMIL.setup_anndata(shuffled, group_key="compound")
    mem = ht.model.MoMIL(shuffled, n_hidden=8)
    mem.train(**TRAIN)
    pd.testing.assert_frame_equal(mem.predict(ordered), mem.predict(), atol=1e-6)
    att = pd.DataFrame(mem.get_attention(), index=shuffled.obs_names)
    np.testing.assert_allclose(mem.get_attention(out=np.zeros(att.shape)), att.to_numpy(), atol=1e-6)
    np.testing.assert_allclose(mem.get_attention(ordered), att.loc[ordered.obs_names].to_numpy(), atol=1e-6)


def test_setup_and_queries_never_load_the_whole_matrix(tmp_path, monkeypatch):
    """A backed X of 4 MB is registered, predicted and queried with a peak (traced) allocation well below its size."""
    import hcitools._validate

    monkeypatch.setattr(hcitools._validate, "ON_DISK_CHUNK_BYTES", 2**18)  # the finite check's blocks
    screen = _screen(n_features=512, n_compounds=120)
    n_bytes = screen.n_obs * screen.n_vars * 4
    assert n_bytes > 4e6
    screen.X = screen.X.astype(np.float32)
    screen.write_h5ad(tmp_path / "big.h5ad")
    backed = ad.read_h5ad(tmp_path / "big.h5ad", backed="r")
    ht.model.MoMIL.setup_anndata(
        _screen(), group_key="compound"
    )  # imports (scvi-tools, ...) outside the trace
    tracemalloc.start()
    try:
        ht.model.MoMIL.setup_anndata(backed, group_key="compound")
        _, peak_setup = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_setup < n_bytes / 4, (
        f"setup: peak {peak_setup / 1e6:.1f} MB for an {n_bytes / 1e6:.1f} MB matrix"
    )
    model = ht.model.MoMIL(backed, n_hidden=8)
    model.is_trained_ = True  # untrained weights: this test is about memory, not accuracy
    data = model._bag_data(labels=True)
    budget = 16 * int(data.sizes.max()) * backed.n_vars * 4  # one batch of 16 bags
    data.X.max_batch_bytes = budget
    for batch in bag_loader(data, np.arange(data.n_bags), batch_size=16):
        assert batch["X"].shape[0] <= 16
    assert 0 < data.X.max_rows_read <= 16 * int(data.sizes.max()) < backed.n_obs
    with pytest.raises(MemoryError, match="batch_size"):
        next(iter(bag_loader(data, np.arange(data.n_bags), batch_size=64)))
    tracemalloc.start()
    try:
        pred = model.predict(batch_size=16)
        att = model.get_attention(batch_size=16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pred.shape[0] == data.n_bags and att.shape == (backed.n_obs, 4)
    assert peak < n_bytes / 4, (
        f"peak traced allocation {peak / 1e6:.1f} MB for an {n_bytes / 1e6:.1f} MB matrix"
    )


def test_backed_mudata(tmp_path):
    import mudata as mu

    screen = _screen()
    ht.pp.to_mudata(screen).write(tmp_path / "s.h5mu")
    mdata = mu.read_h5mu(tmp_path / "s.h5mu", backed=True)
    assert mdata["crops"].isbacked
    ht.model.MoMIL.setup_mudata(mdata)
    model = ht.model.MoMIL(mdata, n_hidden=8)
    model.train(**TRAIN)
    assert isinstance(model._bag_data().X, BackedRows)
    ht.model.MoMIL.setup_anndata(screen, group_key="compound")
    mem = ht.model.MoMIL(screen, n_hidden=8)
    mem.train(**TRAIN)
    pd.testing.assert_frame_equal(model.predict(), mem.predict(), atol=1e-6)


def test_backed_rows_subsample_matches_memory():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3)).astype(np.float32)
    rows = BackedRows(X, np.array([0, 5, 12]), np.array([5, 7, 8]))
    idx = torch.tensor([2, 0])
    offsets = torch.tensor([[7, 0, 3], [4, 1, 0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    out = rows.read(idx, offsets, mask).numpy()
    np.testing.assert_array_equal(out[0], X[[19, 12, 15]])
    np.testing.assert_array_equal(out[1, :2], X[[4, 1]])
    assert (out[1, 2] == 0).all()


def test_latent_representation_written_to_out(tmp_path):
    """level="instance", out=: an h5py dataset or a memmap filled batch by batch equals the in-memory result."""
    import h5py

    screen = _screen()
    # bags scattered through the rows: written with sorted fancy indices
    shuffled = screen[np.random.default_rng(1).permutation(screen.n_obs)].copy()
    for data in (screen, shuffled):
        ht.model.MoMIL.setup_anndata(data, group_key="compound")
    model = ht.model.MoMIL(shuffled, n_hidden=8)
    model.train(**TRAIN)
    for data in (shuffled, screen):  # scattered rows (fancy writes), then contiguous bags (one slice per bag)
        ref = model.get_latent_representation(data, level="instance")
        assert ref.shape == (data.n_obs, 8) and np.abs(ref).sum() > 0
        with h5py.File(tmp_path / "latent.h5", "w") as f:
            out = f.create_dataset("latent", shape=ref.shape, dtype="float32")
            assert model.get_latent_representation(data, level="instance", out=out, batch_size=8) is out
            np.testing.assert_allclose(out[:], ref, atol=1e-6)
        out = np.lib.format.open_memmap(tmp_path / "latent.npy", mode="w+", dtype="float32", shape=ref.shape)
        assert model.get_latent_representation(data, level="instance", out=out, batch_size=8) is out
        out.flush()
        np.testing.assert_allclose(np.load(tmp_path / "latent.npy"), ref, atol=1e-6)
    # a wrong shape names the argument, the shape given and the one needed, and writes nothing
    wrong = np.full((screen.n_obs, 4), 7.0, np.float32)  # the attention's shape, not the latent one
    with pytest.raises(ValueError, match=rf"`out` must be an array of shape \({screen.n_obs}, 8\).*got shape \({screen.n_obs}, 4\).*open_memmap"):  # fmt: skip
        model.get_latent_representation(level="instance", out=wrong)
    assert (wrong == 7.0).all()
    with pytest.raises(ValueError, match=r"`out`.*without a shape"):
        model.get_latent_representation(level="instance", out=[[0.0] * 8] * screen.n_obs)
    with pytest.raises(ValueError, match="level='instance'"):
        model.get_latent_representation(level="bag", out=np.zeros((screen.n_obs, 8)))
    # get_attention(out=) is the same writer
    att = np.zeros((screen.n_obs, 4), np.float32)
    np.testing.assert_allclose(model.get_attention(screen, out=att), model.get_attention(screen), atol=1e-6)
    with pytest.raises(ValueError, match=r"instances × assays\), got shape \(3, 4\)"):
        model.get_attention(out=np.zeros((3, 4)))


class _ZarrReads:
    """Rows of the zarr array ``X`` read per read of the lazy ``X``: one slice of the ``zarr.Array``, or (dask) all
    the chunk reads of one ``compute`` (``np.asarray``, ``bool`` and ``float`` of a dask array compute too)."""

    def __init__(self, monkeypatch, shape: tuple[int, int], *, dask: bool):
        import zarr

        self.per_read: list[int] = []
        self.outside_compute = 0  # chunk reads of a dask array outside a compute: none expected
        self._open: list[int] | None = None
        getitem = zarr.Array.__getitem__

        def zarr_getitem(arr, selection):
            if tuple(arr.shape) == shape:  # X, not an obs column
                rows = selection[0] if isinstance(selection, tuple) else selection
                n = len(range(*rows.indices(shape[0]))) if isinstance(rows, slice) else shape[0]
                if self._open is not None:
                    self._open.append(n)
                else:
                    self.per_read.append(n)
                    self.outside_compute += dask
            return getitem(arr, selection)

        monkeypatch.setattr(zarr.Array, "__getitem__", zarr_getitem)
        if not dask:
            return
        import dask.array as da

        compute = da.Array.compute

        def dask_compute(arr, **kwargs):
            if self._open is not None:  # nested
                return compute(arr, **kwargs)
            self._open = []
            try:
                return compute(arr, **kwargs)
            finally:
                self.per_read.append(sum(self._open))
                self._open = None

        monkeypatch.setattr(da.Array, "compute", dask_compute)


def _open_zarr_lazily(path, x: str) -> ad.AnnData:
    """The screen at ``path`` with X left in the store (a zarr.Array, or a dask array) and obs, var, obsm in memory."""
    import zarr

    g = zarr.open_group(path, mode="r")
    X = g["X"] if x == "zarr" else ad.experimental.read_elem_lazy(g["X"], chunks=(32, -1))
    return ad.AnnData(
        X=X, obs=ad.io.read_elem(g["obs"]), var=ad.io.read_elem(g["var"]), obsm=ad.io.read_elem(g["obsm"])
    )


@pytest.mark.filterwarnings("ignore:Writing zarr v2 data:UserWarning")
@pytest.mark.parametrize("x", ["dask", "zarr"])
def test_lazy_zarr_training_and_queries_equal_in_memory(tmp_path, monkeypatch, x):
    """A screen written as zarr and opened with X left in the store trains and answers queries like in memory,
    reading X batch by batch (setup's finite check block by block), never whole."""
    import hcitools._validate
    from hcitools.dataloaders._backed import is_on_disk

    screen = _screen()
    # bags in file order: queries read a batch of consecutive bags at once, shuffled training bag by bag
    screen = screen[np.argsort(screen.obs["well"].astype(str).to_numpy(), kind="stable")].copy()
    screen.write_zarr(tmp_path / "s.zarr", chunks=(32, screen.n_vars))
    lazy = _open_zarr_lazily(tmp_path / "s.zarr", x)
    assert type(lazy.X).__module__.split(".")[0] == x and is_on_disk(lazy.X)
    reads = _ZarrReads(monkeypatch, tuple(screen.shape), dask=x == "dask")
    monkeypatch.setattr(hcitools._validate, "ON_DISK_CHUNK_BYTES", 64 * screen.n_vars * 4)  # 64-row blocks
    mem, disk = _train_each(screen, lazy)
    bags = disk._bag_data()
    assert isinstance(bags.X, BackedRows)
    pd.testing.assert_frame_equal(disk.predict(batch_size=8), mem.predict(), atol=1e-5)
    np.testing.assert_allclose(disk.get_attention(batch_size=8), mem.get_attention(), atol=1e-5)
    latent = mem.get_latent_representation(level="instance")
    out = np.lib.format.open_memmap(tmp_path / "latent.npy", mode="w+", dtype="float32", shape=latent.shape)
    disk.get_latent_representation(level="instance", out=out, batch_size=8)
    np.testing.assert_allclose(out, latent, atol=1e-5)
    # a model trained in memory queries the lazy screen like the in-memory one
    pd.testing.assert_frame_equal(mem.predict(lazy, batch_size=8), mem.predict(), atol=1e-6)
    # every row was read, but never more at once than a batch of 8 bags (plus a chunk at either end)
    batch_rows = 8 * int(bags.sizes.max()) + 2 * 32
    assert sum(reads.per_read) >= 5 * screen.n_obs  # setup's finite check and the four queries read every row
    assert 0 < max(reads.per_read) <= batch_rows < screen.n_obs / 2, max(reads.per_read)
    assert reads.outside_compute == 0


@pytest.mark.filterwarnings("ignore:Writing zarr v2 data:UserWarning")
def test_fully_lazy_anndata_is_refused_clearly(tmp_path):
    """anndata.experimental.read_lazy makes obs lazy too: setup and queries name the supported way to open it."""
    screen = _screen()
    screen.write_zarr(tmp_path / "s.zarr")
    lazy = ad.experimental.read_lazy(tmp_path / "s.zarr")
    assert not isinstance(lazy.obs, pd.DataFrame)
    with pytest.raises(TypeError, match=r"adata.obs is a .*read_elem_lazy"):
        ht.model.MoMIL.setup_anndata(lazy, group_key="compound")
    ht.model.MoMIL.setup_anndata(screen, group_key="compound")
    model = ht.model.MoMIL(screen, n_hidden=8)
    model.is_trained_ = True
    with pytest.raises(TypeError, match="read_lazy"):
        model.predict(lazy)
