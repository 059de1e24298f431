"""Plots of HCI screens: plate effects before / after normalisation, attention on the field of view, top crops."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import HCI_KEYS
from .._utils import to_dense
from .._validate import (
    _preview,
    check_anndata,
    check_bool,
    check_choice,
    check_int,
    check_obs_keys,
    check_str,
    get_rep,
)
from ._mil import _attention_column, _relative_attention


def _axes(ax, n: int, figsize_one: tuple[float, float], what: str):
    """``n`` Axes: a new row of panels when ``ax`` is None, else the given ones (one per panel)."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, axes = plt.subplots(1, n, figsize=(figsize_one[0] * n, figsize_one[1]), squeeze=False)
        return fig, list(axes.ravel())
    axes = list(np.atleast_1d(np.asarray(ax, dtype=object)).ravel())
    if len(axes) != n:
        raise ValueError(f"`ax` must hold {n} Axes ({what}), got {len(axes)}.")
    return axes[0].figure, axes


def _features(adata: AnnData, rep: Any, name: str) -> np.ndarray:
    """The features of one panel: ``X`` (None), ``obsm[rep]`` (a str) or the X of an AnnData with the same rows."""
    if isinstance(rep, AnnData):
        if rep.n_obs != adata.n_obs or not rep.obs_names.equals(adata.obs_names):
            raise ValueError(
                f"`{name}` must be an AnnData with the rows of `adata` (same obs_names, same order)."
            )
        return to_dense(rep.X, np.float64)
    if rep is not None and not isinstance(rep, str):
        raise TypeError(
            f"`{name}` must be None (adata.X), an obsm key (a str) or an AnnData with the same rows, got "
            f"{type(rep).__name__}."
        )
    return to_dense(get_rep(adata, rep_key=rep), np.float64)


def _plate_order(plates: pd.Series) -> list:
    cat = plates if isinstance(plates.dtype, pd.CategoricalDtype) else plates.astype("category")
    return [c for c in cat.cat.categories if (plates == c).any()]


def plate_effects(
    adata: AnnData,
    *,
    before: str | AnnData | None = None,
    after: str | AnnData | None = None,
    kind: str = "medians",
    plate_key: str = HCI_KEYS.PLATE,
    control_key: str = HCI_KEYS.COMPOUND,
    control_value: Any = HCI_KEYS.CONTROL_VALUE,
    n_features: int = 8,
    seed: int = 0,
    ax=None,
    return_fig: bool = False,
):
    """Plate effects before and after plate normalisation, side by side.

    ``kind="medians"``: per plate, the median of the control instances (e.g. DMSO) of the first ``n_features``
    features, one line per feature; after :func:`hcitools.pp.normalize_plates` (robust z-scores against the
    plate's controls) every line is flat at 0. ``kind="pca"``: the rows (e.g. wells from
    :func:`hcitools.pp.aggregate`) on the first two principal components (scikit-learn, seeded), coloured by
    plate; the title gives the silhouette of the plates in that plane (scikit-learn's ``silhouette_score``,
    near 0 when plates mix, towards 1 when they separate).

    Parameters
    ----------
    adata
        Instances or wells with plates in ``obs[plate_key]``.
    before
        The features before normalisation: ``None`` (``adata.X``), an obsm key, or an AnnData with the same rows
        (e.g. a copy taken before normalising in place).
    after
        The features after normalisation (e.g. ``obsm[key_added]`` of :func:`hcitools.pp.normalize_plates`): an
        obsm key or an AnnData with the same rows; ``None`` draws the ``before`` panel only.
    kind
        ``"medians"`` or ``"pca"``.
    plate_key, control_key, control_value
        obs columns of plates and controls, and the control value (``kind="medians"``).
    n_features
        Number of features drawn (``kind="medians"``), the first ones.
    seed
        Seed of the PCA and of the silhouette's subsample.
    ax
        One Axes per panel (two with ``after``, else one); new figure when ``None``.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The list of Axes (one per panel), or the Figure when ``return_fig=True``. Plates are drawn in the column's
    category order (sorted values otherwise); the tick labels give each plate's number of controls
    (``kind="medians"``).
    """
    check_anndata(adata)
    check_choice(kind, "kind", ("medians", "pca"))
    check_str(plate_key, "plate_key")
    check_int(n_features, "n_features", min=1)
    check_int(seed, "seed", min=0)
    check_bool(return_fig, "return_fig")
    check_obs_keys(
        adata, {"plate_key": plate_key, **({"control_key": control_key} if kind == "medians" else {})}
    )
    panels = [("before", _features(adata, before, "before"))]
    if after is not None:
        panels.append(("after", _features(adata, after, "after")))
    plates = adata.obs[plate_key]
    order = _plate_order(plates)
    codes = pd.Categorical(plates, categories=order).codes
    if kind == "medians":
        is_ctrl = (adata.obs[control_key] == control_value).to_numpy()
        n_ctrl = [int((is_ctrl & (codes == i)).sum()) for i in range(len(order))]
        if not any(n_ctrl):
            raise ValueError(
                f"No control instance (adata.obs[{control_key!r}] == {control_value!r}, arguments `control_key` / "
                f"`control_value`): per-plate control medians need them."
            )
    fig, axes = _axes(
        ax, len(panels), (4.2, 3.4), "one per panel: before and after" if after is not None else "one"
    )
    for a, (label, X) in zip(axes, panels, strict=True):
        if kind == "medians":
            k = min(n_features, X.shape[1])
            med = np.full((len(order), k), np.nan)
            for i in range(len(order)):
                rows = is_ctrl & (codes == i)
                if rows.any():
                    med[i] = np.median(X[rows, :k], axis=0)
            x = np.arange(len(order))
            for j in range(k):
                a.plot(x, med[:, j], marker="o", linewidth=1, markersize=3, color=f"C{j % 10}")
            a.set_xticks(x, [f"{p}\n(n={n})" for p, n in zip(order, n_ctrl, strict=True)], rotation=60,
                         ha="right", fontsize="small")  # fmt: skip
            a.set_ylabel(f"control median ({k} features)")
            a.axhline(0, color="grey", linewidth=0.8, linestyle="--")
            a.set_title(f"{label}: spread across plates {np.nanmean(np.nanstd(med, axis=0)):.3g}",
                        fontsize="medium")  # fmt: skip
        else:
            from sklearn.decomposition import PCA
            from sklearn.metrics import silhouette_score

            if X.shape[0] < 3 or X.shape[1] < 2:
                raise ValueError(f"A PCA needs at least 3 rows and 2 features, got {X.shape}.")
            pca = PCA(n_components=2, random_state=seed).fit(X)
            Z = pca.transform(X)
            for i, p in enumerate(order):
                rows = codes == i
                a.scatter(Z[rows, 0], Z[rows, 1], s=8, color=f"C{i % 10}", label=f"{p} (n={int(rows.sum())})")
            evr = pca.explained_variance_ratio_
            a.set_xlabel(f"PC1 ({evr[0]:.0%})")
            a.set_ylabel(f"PC2 ({evr[1]:.0%})")
            sil = (
                silhouette_score(Z, codes, sample_size=min(len(Z), 2000), random_state=seed)
                if 1 < len(order) < len(Z)
                else float("nan")
            )
            a.set_title(f"{label}: plate silhouette {sil:.2f}", fontsize="medium")
    if kind == "pca":
        axes[-1].legend(frameon=False, fontsize="x-small", bbox_to_anchor=(1.01, 1), loc="upper left",
                        title=plate_key)  # fmt: skip
    fig.tight_layout()
    return fig if return_fig else axes


# ------------------------------------------------------------------------------------------------- crops
def _crop_images(images: Any, n_obs: int) -> np.ndarray:
    arr = getattr(images, "images", images)  # a Tiles object or its array
    arr = np.asarray(arr)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or len(arr) != n_obs:
        raise ValueError(
            f"`images` must hold one crop per row of `adata` (n_obs × channels × height × width, e.g. "
            f"`ht.pp.tile_images(...).images`), got shape {arr.shape} for {n_obs} rows."
        )
    return arr


def _display(crop: np.ndarray, channels: Sequence[int] | None) -> np.ndarray:
    """A crop (C × h × w) as an RGB image (h × w × 3) in [0, 1]: three channels as RGB, else their mean in grey."""
    if channels is not None:
        crop = crop[list(channels)]
    rgb = (
        np.moveaxis(crop[:3], 0, -1) if crop.shape[0] == 3 else np.repeat(crop.mean(0)[..., None], 3, axis=-1)
    )
    lo, hi = float(rgb.min()), float(rgb.max())
    return (rgb - lo) / (hi - lo) if hi > lo else np.zeros_like(rgb)


def attention_field(
    adata: AnnData,
    *,
    assay: str,
    image: Any,
    key: str = "momil_attention",
    image_key: str = "image",
    bag_key: str = HCI_KEYS.WELL,
    assays: Sequence[str] | None = None,
    images: Any = None,
    channels: Sequence[int] | None = None,
    ax=None,
    return_fig: bool = False,
):
    """One field of view: its crops in their grid, coloured by one assay's attention (attention × bag size).

    The crops' positions are the ``tile_row`` / ``tile_col`` columns that :func:`hcitools.pp.tile_images` writes
    (kept by :func:`hcitools.pp.embed_tiles`). Without ``images`` the grid is a heatmap of attention; with them
    the crops are drawn in place, each framed in its attention's colour, the value written in its corner.

    Parameters
    ----------
    adata
        Crops with attention in ``obsm[key]`` and ``obs[image_key]``, ``tile_row``, ``tile_col``, ``obs[bag_key]``.
    assay
        The assay whose attention to show.
    image
        The field of view: a value of ``obs[image_key]``.
    key, bag_key, assays
        As in :func:`hcitools.pl.attention`.
    image_key
        obs column naming the source image of each crop.
    images
        The crops, one per row of ``adata`` (an array n_obs × C × h × w, or the :class:`~hcitools.pp.Tiles`).
    channels
        Channels drawn as RGB (three), or averaged in grey (any other number); default: all.
    ax
        Matplotlib Axes to draw on; a new figure when ``None``.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The Axes, or the Figure when ``return_fig=True``. Crops with NaN attention (not scored) are grey.
    """
    import matplotlib as mpl
    import matplotlib.pyplot as plt

    check_anndata(adata)
    for name, value in (("assay", assay), ("key", key), ("image_key", image_key), ("bag_key", bag_key)):
        check_str(value, name)
    check_bool(return_fig, "return_fig")
    check_obs_keys(adata, {"image_key": image_key, "bag_key": bag_key})
    missing = [c for c in ("tile_row", "tile_col") if c not in adata.obs.columns]
    if missing:
        raise KeyError(
            f"adata.obs lacks {missing}: the crop positions that `ht.pp.tile_images` writes (keep its obs when you "
            "build the AnnData, as `ht.pp.embed_tiles` does)."
        )
    rel = _relative_attention(adata, _attention_column(adata, assay=assay, key=key, assays=assays), bag_key)
    rows = np.flatnonzero((adata.obs[image_key] == image).to_numpy())
    if not len(rows):
        raise ValueError(
            f"`image` {image!r} is not a value of adata.obs[{image_key!r}] ({_preview(pd.unique(adata.obs[image_key]))})."
        )
    crops = _crop_images(images, adata.n_obs) if images is not None else None
    r = adata.obs["tile_row"].to_numpy()[rows].astype(int)
    c = adata.obs["tile_col"].to_numpy()[rows].astype(int)
    grid = np.full((r.max() + 1, c.max() + 1), np.nan)
    grid[r, c] = rel[rows]
    finite = rel[np.isfinite(rel)]
    norm = mpl.colors.Normalize(vmin=0, vmax=float(max(finite.max(), 1.0)) if len(finite) else 1.0)
    cmap = mpl.colormaps["magma"].with_extremes(bad="lightgrey")
    fig, ax = _new_single(ax, (1.2 + 1.1 * grid.shape[1], 0.6 + 1.1 * grid.shape[0]))
    if crops is None:
        ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm)
        for i, j, v in zip(r, c, rel[rows], strict=True):
            ax.text(j, i, "n/a" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center", fontsize="small",
                    color="white" if np.isfinite(v) and norm(v) < 0.5 else "black")  # fmt: skip
    else:
        for i, j, row in zip(r, c, rows, strict=True):
            ax.imshow(_display(crops[row], channels), extent=(j - 0.5, j + 0.5, i + 0.5, i - 0.5))
            v = rel[row]
            colour = cmap(norm(v)) if np.isfinite(v) else "lightgrey"
            ax.add_patch(mpl.patches.Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, edgecolor=colour,
                                               linewidth=3))  # fmt: skip
            ax.text(j - 0.42, i - 0.42, "n/a" if not np.isfinite(v) else f"{v:.2f}", ha="left", va="top",
                    fontsize="x-small", color="white",
                    bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})  # fmt: skip
        ax.set_xlim(-0.5, grid.shape[1] - 0.5)
        ax.set_ylim(grid.shape[0] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    bag = pd.unique(adata.obs[bag_key].to_numpy()[rows])
    ax.set_title(f"{image_key} {image} ({bag_key} {_preview(bag, 2)}): {assay}", fontsize="medium")
    plt.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.05, pad=0.02,
                 label="attention × bag size")  # fmt: skip
    fig.tight_layout()
    return fig if return_fig else ax


def _new_single(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is None:
        return plt.subplots(figsize=figsize)
    return ax.figure, ax


def top_attended(
    adata: AnnData,
    *,
    images: Any,
    assay: str,
    key: str = "momil_attention",
    n: int = 8,
    bag: Any = None,
    bag_key: str = HCI_KEYS.WELL,
    assays: Sequence[str] | None = None,
    channels: Sequence[int] | None = None,
    ax=None,
    return_fig: bool = False,
):
    """The ``n`` crops with the highest attention (× bag size) for one assay, in a row, best first.

    Parameters
    ----------
    adata
        Crops with attention in ``obsm[key]``.
    images
        The crops, one per row of ``adata`` (an array n_obs × C × h × w, or the :class:`~hcitools.pp.Tiles`).
    assay
        The assay whose attention ranks the crops.
    key, bag_key, assays
        As in :func:`hcitools.pl.attention`.
    n
        Number of crops drawn.
    bag
        Only the crops of this bag (a value of ``obs[bag_key]``); default: every scored crop.
    channels
        Channels drawn as RGB (three), or averaged in grey; default: all.
    ax
        ``n`` Axes, one per crop; new figure when ``None``.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The list of Axes, or the Figure when ``return_fig=True``; each title gives the crop's attention × bag size and
    its bag. Crops with NaN attention are never drawn.
    """
    check_anndata(adata)
    check_int(n, "n", min=1)
    check_bool(return_fig, "return_fig")
    check_obs_keys(adata, {"bag_key": bag_key})
    crops = _crop_images(images, adata.n_obs)
    rel = _relative_attention(adata, _attention_column(adata, assay=assay, key=key, assays=assays), bag_key)
    scored = np.isfinite(rel)
    if bag is not None:
        in_bag = (adata.obs[bag_key] == bag).to_numpy()
        if not in_bag.any():
            raise ValueError(f"`bag` {bag!r} is not a value of adata.obs[{bag_key!r}].")
        scored &= in_bag
    candidates = np.flatnonzero(scored)
    if not len(candidates):
        raise ValueError(
            f"No crop has attention for {assay!r}" + (f" in bag {bag!r}." if bag is not None else ".")
        )
    order = candidates[np.argsort(-rel[candidates], kind="stable")][:n]
    fig, axes = _axes(ax, len(order), (1.6, 1.9), f"one per crop, {len(order)}")
    bags = adata.obs[bag_key].astype(str).to_numpy()
    for a, row in zip(axes, order, strict=True):
        a.imshow(_display(crops[row], channels))
        a.set_xticks([])
        a.set_yticks([])
        a.set_title(f"{rel[row]:.2f}\n{bags[row]}", fontsize="x-small")
    fig.suptitle(
        f"top {len(order)} of {len(candidates)} crops by {assay} attention × bag size", fontsize="small"
    )
    fig.tight_layout()
    return fig if return_fig else axes
