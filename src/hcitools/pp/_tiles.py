"""Tiling of field-of-view images into crops, and embedding of crops with any torch module."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import HCI_KEYS
from .._utils import logger, progress_bar
from .._validate import check_bool, check_frame, check_int, check_real, check_str


@dataclass
class Tiles:
    """Crops cut from field-of-view images.

    Attributes
    ----------
    images
        float32 array n_tiles × channels × height × width, scaled to [0, 1] per image and channel.
    obs
        One row per tile: the metadata of its source image (e.g. ``plate``, ``well``, ``fov``) plus ``image``
        (index of the source image), ``tile_row``, ``tile_col``, ``y0`` and ``x0`` (top-left pixel).
    """

    images: np.ndarray
    obs: pd.DataFrame

    def __len__(self) -> int:
        return len(self.images)


def _scale_channels(image: np.ndarray, clip_percentiles: tuple[float, float] | None) -> np.ndarray:
    """Per-channel percentile clipping, then min-max scaling to [0, 1] (constant channels become 0)."""
    img = image.astype(np.float32, copy=True)
    flat = img.reshape(img.shape[0], -1)
    if clip_percentiles is not None:
        lo, hi = np.percentile(flat, clip_percentiles, axis=1)
    else:
        lo, hi = flat.min(axis=1), flat.max(axis=1)
    flat = np.clip(flat, lo[:, None], hi[:, None])
    span = (hi - lo)[:, None]
    flat = np.divide(flat - lo[:, None], span, out=np.zeros_like(flat), where=span > 0)
    return flat.reshape(img.shape)


def _windows(size: int, tile: int, stride: int) -> list[int]:
    if tile > size:
        raise ValueError(f"A tile of {tile} pixels does not fit an image of {size} pixels.")
    return list(range(0, size - tile + 1, stride))


def tile_images(
    images: np.ndarray | Sequence[np.ndarray],
    *,
    grid: int | None = None,
    tile_size: int | None = None,
    stride: int | None = None,
    obs: pd.DataFrame | None = None,
    clip_percentiles: tuple[float, float] | None = (0.01, 99.9),
) -> Tiles:
    """Cut field-of-view images into crops, after per-channel percentile clipping and min-max scaling.

    Each image is first scaled per channel: values are clipped to the ``clip_percentiles`` (0.01 and 99.9 %, as
    in the MoMIL papers) of that image and channel, then min-max scaled to [0, 1]. It is then cut either into a
    regular ``grid`` (4, 9, 16 or 25 equal crops: 2×2 … 5×5; remainder pixels at the right and bottom edges are
    dropped) or into square windows of ``tile_size`` pixels every ``stride`` pixels (e.g. 480 / 240 on 960 × 960
    images gives 3 × 3 overlapping tiles).

    Parameters
    ----------
    images
        Array n_images × channels × height × width (or n_images × height × width for one channel), or a sequence
        of channels × height × width arrays of one size.
    grid
        Number of crops per image: a square number (4, 9, 16, 25, …).
    tile_size
        Side of square tiles in pixels (instead of ``grid``).
    stride
        Step between tiles; default ``tile_size`` (no overlap).
    obs
        Metadata per image (n_images rows), e.g. ``plate``, ``well``, ``fov``; repeated for each of its tiles.
    clip_percentiles
        Lower and upper percentiles for clipping; ``None`` scales by min and max only.

    Returns
    -------
    :class:`Tiles` with ``images`` (n_tiles × C × h × w, float32) and ``obs`` (one row per tile).

    Examples
    --------
    >>> import numpy as np
    >>> from hcitools.pp import tile_images
    >>> fovs = np.random.default_rng(0).random((2, 3, 64, 64))
    >>> tiles = tile_images(fovs, grid=16)
    >>> tiles.images.shape
    (32, 3, 16, 16)
    """
    if isinstance(images, str | bytes) or not hasattr(images, "__len__"):
        raise TypeError(
            f"`images` must be an array n_images × channels × height × width (or a sequence of C × H × W arrays), "
            f"got {type(images).__name__}."
        )
    if len(images) == 0:
        raise ValueError("`images` is empty; pass at least one image.")
    grid = check_int(grid, "grid", min=1, allow_none=True)
    tile_size = check_int(tile_size, "tile_size", min=1, allow_none=True)
    stride = check_int(stride, "stride", min=1, allow_none=True)
    if obs is not None:
        check_frame(obs, "obs", what="one row per image")
    if clip_percentiles is not None:
        if not (isinstance(clip_percentiles, tuple | list) and len(clip_percentiles) == 2):
            raise TypeError(
                f"`clip_percentiles` must be a pair (low, high) or None, got {clip_percentiles!r}."
            )
        lo = check_real(clip_percentiles[0], "clip_percentiles[0]", min=0, max=100)
        hi = check_real(clip_percentiles[1], "clip_percentiles[1]", min=0, max=100)
        if lo >= hi:
            raise ValueError(
                f"`clip_percentiles` must be (low, high) with low < high, got {clip_percentiles!r}."
            )
    try:
        arr = np.stack(list(images)) if not isinstance(images, np.ndarray) else images
    except ValueError as err:
        raise ValueError(f"`images` must all have one shape (channels × height × width): {err}") from err
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"`images` must hold real numbers (pixel intensities), got dtype {arr.dtype}.")
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4:
        raise ValueError(f"`images` must be n_images × channels × height × width; got shape {arr.shape}.")
    if (grid is None) == (tile_size is None):
        raise ValueError("Pass exactly one of `grid` (e.g. 4, 9, 16, 25) or `tile_size` (pixels).")
    if not np.isfinite(arr).all():
        raise ValueError("`images` contain NaN or infinite pixels.")
    n, _, H, W = arr.shape
    if obs is not None:
        if len(obs) != n:
            raise ValueError(f"`obs` has {len(obs)} rows but there are {n} images.")
        obs = obs.reset_index(drop=True)
    if grid is not None:
        k = round(float(np.sqrt(grid)))
        if k * k != grid or k < 1:
            raise ValueError(f"`grid` must be a square number of crops (4, 9, 16, 25, …), got {grid}.")
        th, tw = H // k, W // k
        if th == 0 or tw == 0:
            raise ValueError(f"Images of {H}×{W} pixels are too small for a {k}×{k} grid.")
        ys, xs = [i * th for i in range(k)], [j * tw for j in range(k)]
    else:
        if stride is None:
            stride = tile_size
        th = tw = tile_size
        ys, xs = _windows(H, tile_size, stride), _windows(W, tile_size, stride)
    tiles, rows = [], []
    for i in range(n):
        img = _scale_channels(arr[i], clip_percentiles)
        for r, y in enumerate(ys):
            for c, x in enumerate(xs):
                tiles.append(img[:, y : y + th, x : x + tw])
                rows.append((i, r, c, y, x))
    tile_obs = pd.DataFrame(rows, columns=["image", "tile_row", "tile_col", "y0", "x0"])
    if obs is not None:
        tile_obs = pd.concat([obs.iloc[tile_obs["image"]].reset_index(drop=True), tile_obs], axis=1)
    tile_obs.index = pd.Index([f"img{i}_r{r}_c{c}" for i, r, c, _, _ in rows])
    return Tiles(np.stack(tiles).astype(np.float32), tile_obs)


def _resolve_device(device: str) -> Any:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ValueError(
            f"`device` must be 'auto' or a torch device such as 'cpu', 'cuda' or 'cuda:0', got {device!r}."
        ) from err


def embed_tiles(
    tiles: Tiles,
    model: Any,
    *,
    batch_size: int = 64,
    device: str = "auto",
    transform: Callable[[Any], Any] | None = None,
    progress: bool = True,
) -> AnnData:
    """Embed crops with any torch module (e.g. a DINOv2 backbone you loaded), batched, on GPU when present.

    Parameters
    ----------
    tiles
        Output of :func:`tile_images`.
    model
        A ``torch.nn.Module`` mapping a float tensor B × C × h × w to B × d (outputs with more dimensions are
        flattened per crop). It is put in eval mode and moved to ``device``; no gradients are computed.
    batch_size
        Crops per forward pass.
    device
        ``"auto"`` (CUDA, then Apple MPS, then CPU), or any torch device string.
    transform
        Optional callable applied to each batch tensor on the device before the model (e.g. a resize or the
        backbone's own normalisation).
    progress
        Show a progress bar.

    Returns
    -------
    AnnData with one row per crop: ``X`` = embeddings (float32), ``obs`` = ``tiles.obs`` (plate / well / fov
    metadata and tile position), ``uns["embed_tiles"]`` = model class, device and batch size.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from hcitools.pp import tile_images, embed_tiles
    >>> tiles = tile_images(np.random.default_rng(0).random((1, 3, 32, 32)), grid=4)
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    >>> embed_tiles(tiles, net, progress=False).shape
    (4, 8)
    """
    import torch

    if not isinstance(tiles, Tiles):
        raise TypeError(
            f"`tiles` must be the output of `ht.pp.tile_images` (Tiles), got {type(tiles).__name__}."
        )
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
    batch_size = check_int(batch_size, "batch_size", min=1)
    check_str(device, "device")
    check_bool(progress, "progress")
    if transform is not None and not callable(transform):
        raise TypeError(f"`transform` must be a callable or None, got {type(transform).__name__}.")
    if len(tiles) == 0:
        raise ValueError("`tiles` is empty.")
    dev = _resolve_device(device)
    was_training = model.training
    model = model.to(dev).eval()
    outs = []
    try:
        with torch.inference_mode():
            for start in progress_bar(
                range(0, len(tiles), batch_size), desc="embedding crops", disable=not progress
            ):
                batch = torch.from_numpy(tiles.images[start : start + batch_size]).to(dev, non_blocking=True)
                if transform is not None:
                    batch = transform(batch)
                out = model(batch)
                if isinstance(out, (tuple, list)):
                    out = out[0]
                outs.append(out.reshape(out.shape[0], -1).float().cpu())
    finally:
        model.train(was_training)
    X = torch.cat(outs).numpy()
    if not np.isfinite(X).all():
        raise ValueError(
            "The model produced NaN or infinite embeddings; check its weights and input scaling."
        )
    obs = tiles.obs.copy()
    for col in (HCI_KEYS.PLATE, HCI_KEYS.WELL, HCI_KEYS.FOV):
        if col in obs:
            obs[col] = obs[col].astype(str).astype("category")
    adata = AnnData(X, obs=obs, var=pd.DataFrame(index=[f"emb_{j}" for j in range(X.shape[1])]))
    adata.uns["embed_tiles"] = {"model": type(model).__name__, "device": str(dev), "batch_size": batch_size}
    logger.info(f"embedded {len(tiles)} crops into {X.shape[1]} dimensions on {dev}")
    return adata
