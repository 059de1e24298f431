"""Validators of the hcitools data model.

Every public function that reads an AnnData calls these first, so that bad input fails early, with a
message naming the argument and the fix, and before anything is written into the user's object.
The data model itself is documented on the "Data model" docs page (``docs/data_model.md``).
"""

from __future__ import annotations

import numbers
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from ._constants import HCI_KEYS, PERTURBATION_KEYS
from ._utils import warn

__all__ = [
    "case_variants",
    "check_anndata",
    "check_bag_key",
    "check_binary_frame",
    "check_bool",
    "check_choice",
    "check_columns",
    "check_constant_within",
    "check_controls",
    "check_frame",
    "check_int",
    "check_labels",
    "check_obs_keys",
    "check_real",
    "check_str",
    "check_values_present",
    "check_writable",
    "get_rep",
    "validate_hci",
    "validate_perturbation",
]


def _preview(values: Iterable[Any], n: int = 5) -> str:
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:n])
    return shown + (f", … ({len(values)} in all)" if len(values) > n else "")


def _number_hint(name: str, value: Any) -> str:
    """For a number given as a string: pass the number itself (with the call to write)."""
    if not isinstance(value, str):
        return ""
    try:
        number = float(value)
    except ValueError:
        return " Pass a number, not a string."
    shown = int(number) if number.is_integer() else number
    return f" Pass a number, not a string: `{name}={shown!r}`."


def _given(value: Any) -> str:
    """How a message shows what the user passed: its repr and, when that could mislead, its type."""
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{shown} ({type(value).__name__})" if isinstance(value, str | bool | np.bool_) else shown


def _bound_text(min: Any, max: Any, min_inclusive: bool = True, max_inclusive: bool = True) -> str:
    parts = []
    if min is not None:
        parts.append(f"{'≥' if min_inclusive else '>'} {min}")
    if max is not None:
        parts.append(f"{'≤' if max_inclusive else '<'} {max}")
    return " and ".join(parts)


# ---------------------------------------------------------------------------------------------- arguments
# Small checks of one argument each. They raise TypeError for a wrong type and ValueError for a value out of
# range; the message names the argument, shows what was given and says what to pass. They return the value
# (as a plain Python int / float / bool), so a caller can write ``n = check_int(n, "n_folds", min=2)``.


def check_bool(value: Any, name: str, *, allow_none: bool = False) -> bool | None:
    """Return ``value`` as a Python bool; raise a TypeError unless it is True or False (or None if allowed).

    Integers such as 0 / 1 and strings such as ``"False"`` are refused: ``bool("False")`` is True.
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, bool | np.bool_):
        options = "True, False or None" if allow_none else "True or False"
        raise TypeError(
            f"`{name}` must be {options}, got {_given(value)}. Pass `{name}=True` or `{name}=False`."
        )
    return bool(value)


def check_int(
    value: Any, name: str, *, min: int | None = None, max: int | None = None, allow_none: bool = False
) -> int | None:
    """Return ``value`` as a Python int; raise unless it is an integer within [``min``, ``max``].

    Booleans, floats (even ``5.0``) and strings (``"5"``) raise a TypeError; out-of-range values a ValueError.
    ``allow_none`` lets ``None`` through (an option that is off).
    """
    if value is None and allow_none:
        return None
    bounds = _bound_text(min, max)
    what = "an integer" + (f" {bounds}" if bounds else "") + (" or None" if allow_none else "")
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be {what}, got {_given(value)}.{_number_hint(name, value)}")
    if (min is not None and value < min) or (max is not None and value > max):
        raise ValueError(f"`{name}` must be {what}, got {value!r}.")
    return int(value)


def check_real(
    value: Any,
    name: str,
    *,
    min: float | None = None,
    max: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
    allow_none: bool = False,
) -> float | None:
    """Return ``value`` as a Python float; raise unless it is a finite real number within the bounds.

    Booleans and strings raise a TypeError; NaN, infinities and out-of-range values a ValueError. Bounds are
    inclusive unless ``min_inclusive`` / ``max_inclusive`` is False.
    """
    if value is None and allow_none:
        return None
    bounds = _bound_text(min, max, min_inclusive, max_inclusive)
    what = "a finite number" + (f" {bounds}" if bounds else "") + (" or None" if allow_none else "")
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be {what}, got {_given(value)}.{_number_hint(name, value)}")
    v = float(value)
    below = min is not None and (v < min if min_inclusive else v <= min)
    above = max is not None and (v > max if max_inclusive else v >= max)
    if not np.isfinite(v) or below or above:
        raise ValueError(f"`{name}` must be {what}, got {value!r}.")
    return v


def check_str(value: Any, name: str, *, allow_none: bool = False) -> str | None:
    """Raise a TypeError unless ``value`` is a string (a column name, a key); return it."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        what = "a string or None" if allow_none else "a string"
        raise TypeError(f"`{name}` must be {what} (a name), got {_given(value)}.")
    return value


def check_choice(value: Any, name: str, choices: Collection[Any]) -> Any:
    """Raise a ValueError unless ``value`` is one of ``choices``; the message lists them (and a near miss)."""
    try:
        ok = value in choices
    except TypeError:  # an unhashable value given for a set of choices
        ok = False
    if not ok:
        options = ", ".join(repr(c) for c in choices)
        variants = case_variants(value, choices)
        hint = f" Did you mean {variants[0]!r}?" if variants else ""
        raise ValueError(f"`{name}` must be one of {options}; got {_given(value)}.{hint}")
    return value


def check_frame(value: Any, name: str, *, what: str = "rows = compounds, columns = assays") -> pd.DataFrame:
    """Raise a TypeError unless ``value`` is a pandas DataFrame (``what`` says what its rows and columns are)."""
    if not isinstance(value, pd.DataFrame):
        raise TypeError(
            f"`{name}` must be a pandas DataFrame ({what}), got {type(value).__name__}. Wrap an array: "
            "`pd.DataFrame(values, index=ids, columns=names)`."
        )
    return value


def check_columns(frame: pd.DataFrame, name: str, columns: Iterable[str], *, arg: str | None = None) -> None:
    """Raise a KeyError unless ``frame`` (described by ``name``, e.g. ``"`results`"``) has every column.

    ``arg`` is the argument that chose the columns (e.g. ``"metric"``), named in the message when given.
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        via = f" (argument `{arg}`)" if arg else ""
        raise KeyError(
            f"{name} has no column {_preview(missing)}{via}. Its columns are {_preview(frame.columns, 12)}."
        )


def case_variants(value: Any, values: Iterable[Any]) -> list[Any]:
    """The entries of ``values`` that equal the string ``value`` up to case (but not exactly); [] otherwise."""
    if not isinstance(value, str):
        return []
    low = value.casefold()
    return [v for v in values if isinstance(v, str) and v != value and v.casefold() == low]


def check_values_present(
    series: pd.Series, value: Any, *, arg: str, column: str, fix: str = ""
) -> np.ndarray:
    """The mask of ``series == value``; raise a ValueError when no row matches.

    The message names the argument (``arg``) and the column, lists values the column holds, and names a value
    that differs only in case (``"dmso"`` for ``"DMSO"``), the usual cause.
    """
    mask = (series == value).to_numpy()
    if not mask.any():
        uniques = pd.unique(series.dropna())
        variants = case_variants(value, uniques)
        hint = f" Did you mean {variants[0]!r} (it differs only in case)?" if variants else ""
        raise ValueError(
            f"No row has adata.obs[{column!r}] == {value!r} (argument `{arg}`).{hint} Values include "
            f"{_preview(uniques)}." + (f" {fix}" if fix else "")
        )
    return mask


def check_binary_frame(frame: Any, name: str) -> pd.DataFrame:
    """Check a table of labels (``name``, e.g. ``"labels"``): a DataFrame of numbers 1 / 0 / NaN; return it.

    Raises a TypeError for a non-numeric table and a ValueError naming the columns that hold other values.
    """
    check_frame(frame, name)
    try:
        values = frame.to_numpy(dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"`{name}` must hold numbers 1 / 0 / NaN; could not convert it to float ({err})."
        ) from err
    bad = ~(np.isnan(values) | (values == 0) | (values == 1))
    if bad.any():
        raise ValueError(
            f"`{name}` must hold 1 (active), 0 (inactive) or NaN (not measured); columns "
            f"{_preview(frame.columns[bad.any(axis=0)])} hold other values, e.g. {values[bad][:3].tolist()}. "
            "Binarise them first (e.g. `(labels > threshold).astype(float).where(labels.notna())`)."
        )
    return frame


def check_writable(adata: AnnData, what: str = "X") -> None:
    """Raise a ValueError if ``adata`` is backed read-only (``read_h5ad(path, backed="r")``) and ``what`` must be written.

    h5py would fail half-way with "no write intent on file" (anndata's copy of a backed object needs a file
    name); this names the fix instead. ``what`` is the field written (only ``"X"`` stays on disk in backed mode;
    other fields pass) or ``"a copy"`` (``copy=True``).
    """
    if not getattr(adata, "isbacked", False):
        return
    mode = getattr(getattr(adata, "file", None), "_filemode", None)
    if what != "a copy" and (what != "X" or mode != "r"):
        return  # other fields of a backed AnnData live in memory
    raise ValueError(
        f"`adata` is backed by {str(adata.filename)!r} (opened with backed={mode!r}) and this call writes {what}"
        + (" into it" if what == "X" else "")
        + ". Load it into memory first (`adata = adata.to_memory()`)"
        + (", or open the file with `anndata.read_h5ad(path, backed='r+')`." if what == "X" else ".")
    )


def check_anndata(adata: Any, arg: str = "adata") -> None:
    """Raise a TypeError unless ``adata`` is an AnnData with at least one row and one column."""
    if not isinstance(adata, AnnData):
        raise TypeError(f"`{arg}` must be an AnnData, got {type(adata).__name__}.")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(
            f"`{arg}` is empty (shape {adata.shape}); it needs at least one instance and one feature."
        )


def check_constant_within(
    values: Any,
    groups: Any,
    *,
    what: str,
    group_what: str,
    fix: str = "",
    dropna: bool = False,
) -> None:
    """Raise a ValueError if ``values`` are not constant within each group of ``groups``.

    The one check behind "labels constant within a bag", "a bag belongs to one compound", "a fold is constant
    within a compound" and the like.

    Parameters
    ----------
    values
        One value per row (array-like or Series), or a DataFrame (every column checked).
    groups
        Group of each row.
    what, group_what
        How the message names the values and the groups, e.g. ``"adata.obs['compound'] (argument `group_key`)"``
        and ``"bags of adata.obs['well']"``.
    fix
        A sentence telling the user how to fix it.
    dropna
        Ignore missing values (otherwise a mix of NaN and a value counts as varying).
    """
    frame = values if isinstance(values, pd.DataFrame) else pd.DataFrame({"v": np.asarray(values)})
    # Vectorised (no groupby over columns): codes per column, rows sorted by group, neighbours compared. This
    # runs on n_obs × n_assays label tables of millions of rows.
    numeric = all(
        pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt) for dt in frame.dtypes
    )
    if numeric:  # compare the values themselves (NaN equal to NaN)
        codes = frame.to_numpy(dtype=float)
    else:
        codes = np.column_stack([pd.factorize(frame.iloc[:, j])[0] for j in range(frame.shape[1])]).astype(
            float
        )
        codes[codes < 0] = np.nan  # pandas' code of a missing value
    group_codes = pd.factorize(np.asarray(groups))[0]
    order = np.argsort(group_codes, kind="stable")
    g, c = group_codes[order], codes[order]
    same_group = (g[1:] == g[:-1])[:, None]
    if dropna:
        # ignore NaN: compare each value with the last non-NaN value of its group (forward fill within groups)
        c = pd.DataFrame(c).groupby(g).ffill().to_numpy()
        prev, cur = c[:-1], c[1:]
        differs = same_group & (prev != cur) & ~np.isnan(prev) & ~np.isnan(cur)
    else:
        prev, cur = c[:-1], c[1:]
        differs = same_group & (prev != cur) & ~(np.isnan(prev) & np.isnan(cur))
    if differs.any():
        bad_groups = pd.unique(np.asarray(groups)[order][1:][differs.any(axis=1)]).tolist()
        cols = (
            ""
            if list(frame.columns) == ["v"] and not isinstance(values, pd.DataFrame)
            else (f" (columns {_preview(frame.columns[differs.any(axis=0)])})")
        )
        raise ValueError(
            f"{what} varies within {group_what}{cols}, e.g. in {_preview(bad_groups)}"
            + (f" ({len(bad_groups)} in all)." if len(bad_groups) <= 5 else ".")
            + (f" {fix}" if fix else "")
        )


def check_obs_keys(adata: AnnData, keys: Mapping[str, str | None]) -> None:
    """Check that the obs columns named by keyword arguments exist and hold no missing values.

    Parameters
    ----------
    adata
        The AnnData to check.
    keys
        Mapping from the argument name (e.g. ``"plate_key"``) to the column it names; ``None`` values are skipped.
    """
    for arg, key in keys.items():
        if key is None:
            continue
        if key not in adata.obs.columns:
            raise KeyError(
                f"adata.obs has no column {key!r} (argument `{arg}`). Available columns: "
                f"{_preview(adata.obs.columns, 12)}. Pass `{arg}=` the name of the column that holds it."
            )
        missing = adata.obs[key].isna().to_numpy()
        if missing.any():
            raise ValueError(
                f"adata.obs[{key!r}] (argument `{arg}`) has {int(missing.sum())} missing values, e.g. in rows "
                f"{_preview(adata.obs_names[missing])}. Fill them or drop those rows first."
            )


def get_rep(
    adata: AnnData, rep_key: str | None = None, layer: str | None = None, *, check_finite: bool = True
) -> np.ndarray | sparse.spmatrix:
    """Return the representation used as features: ``X``, ``layers[layer]`` or ``obsm[rep_key]``.

    Parameters
    ----------
    adata
        The AnnData.
    rep_key
        Key in ``adata.obsm`` holding the embeddings; ``None`` uses ``X`` (or ``layer``).
    layer
        Key in ``adata.layers``; cannot be combined with ``rep_key``.
    check_finite
        Raise a ValueError if the representation holds NaN or infinite values.

    Returns
    -------
    The matrix (dense array or scipy sparse matrix), not copied.
    """
    if rep_key is not None and layer is not None:
        raise ValueError("Pass either `rep_key` (an obsm key) or `layer` (a layers key), not both.")
    if rep_key is not None:
        if rep_key not in adata.obsm:
            raise KeyError(
                f"adata.obsm has no key {rep_key!r} (argument `rep_key`). Available keys: "
                f"{_preview(adata.obsm.keys(), 12)}. Pass `rep_key=None` to use adata.X."
            )
        X, where = adata.obsm[rep_key], f"adata.obsm[{rep_key!r}]"
        if isinstance(X, pd.DataFrame):
            X = X.to_numpy()
    elif layer is not None:
        if layer not in adata.layers:
            raise KeyError(
                f"adata.layers has no key {layer!r} (argument `layer`). Available layers: "
                f"{_preview(adata.layers.keys(), 12)}."
            )
        X, where = adata.layers[layer], f"adata.layers[{layer!r}]"
    else:
        X, where = adata.X, "adata.X"
    if X is None:
        raise ValueError(f"{where} is empty (None). Store the embeddings there or pass `rep_key=`.")
    if check_finite and type(X).__module__.startswith(("h5py", "zarr", "dask")):
        _check_finite_on_disk(X, where, adata)  # backed / lazy: scanned in row blocks, never loaded whole
    elif check_finite:
        data = X.data if sparse.issparse(X) else np.asarray(X)
        if not np.issubdtype(data.dtype, np.number):
            raise TypeError(f"{where} must be numeric, got dtype {data.dtype}.")
        bad = ~np.isfinite(data)
        if bad.any():
            if sparse.issparse(X):
                rows = np.unique(sparse.coo_matrix(X).row[~np.isfinite(sparse.coo_matrix(X).data)])
            else:
                rows = np.flatnonzero(bad.reshape(len(data), -1).any(axis=1))
            raise ValueError(
                f"{where} contains {int(bad.sum())} NaN or infinite values in {len(rows)} instances "
                f"(e.g. {_preview(adata.obs_names[rows])}). Drop or impute those instances before calling "
                "this function, e.g. `adata = adata[np.isfinite(adata.X).all(axis=1)].copy()`."
            )
    return X


#: Bytes per block when an on-disk matrix is scanned (finite check of a backed AnnData).
ON_DISK_CHUNK_BYTES = 2**25


def _check_finite_on_disk(X, where: str, adata: AnnData) -> None:
    """The finite check of :func:`get_rep` for an on-disk (backed) or lazy matrix, one row block at a time."""
    if not np.issubdtype(np.dtype(X.dtype), np.number):
        raise TypeError(f"{where} must be numeric, got dtype {X.dtype}.")
    chunk_rows = max(1, ON_DISK_CHUNK_BYTES // max(1, int(np.prod(X.shape[1:])) * np.dtype(X.dtype).itemsize))
    for start in range(0, X.shape[0], chunk_rows):
        block = X[start : start + chunk_rows]
        block = np.asarray(block.compute() if hasattr(block, "compute") else block)
        bad = ~np.isfinite(block)
        if bad.any():
            rows = start + np.flatnonzero(bad.any(axis=1))
            raise ValueError(
                f"{where} contains NaN or infinite values (e.g. in instances {_preview(adata.obs_names[rows])}). "
                "Drop or impute those instances before calling this function."
            )


def check_bag_key(
    adata: AnnData, bag_key: str = HCI_KEYS.WELL, plate_key: str | None = HCI_KEYS.PLATE
) -> None:
    """Check that bag ids (wells) are present and unique across plates.

    A well id such as ``"A01"`` repeats on every plate; bags must be keyed by a plate-qualified id.
    :func:`hcitools.pp.make_bag_key` builds one.
    """
    check_obs_keys(adata, {"bag_key": bag_key, "plate_key": plate_key})
    if plate_key is None or plate_key == bag_key:
        return
    check_constant_within(
        adata.obs[plate_key],
        adata.obs[bag_key].to_numpy(),
        what=f"The plate (adata.obs[{plate_key!r}])",
        group_what=f"bag ids of adata.obs[{bag_key!r}]: bag ids repeat across plates",
        fix=(
            "A bag must be one well of one plate. Build a unique key with "
            f"`ht.pp.make_bag_key(adata, plate_key={plate_key!r}, well_key={bag_key!r}, key_added='bag')` and pass "
            "`bag_key='bag'`."
        ),
    )


def check_labels(
    adata: AnnData,
    labels_key: str = HCI_KEYS.ASSAYS,
    bag_key: str | None = HCI_KEYS.WELL,
    *,
    labels: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Check the assay labels in ``adata.obsm[labels_key]`` (or a frame about to be stored there) and return them.

    Labels are a pandas DataFrame (n_obs × n_assays) whose index equals ``adata.obs_names`` and whose columns are
    assay names (strings), holding float 1 (active), 0 (inactive) or NaN (not measured), constant within each bag.

    Parameters
    ----------
    adata
        The AnnData the labels belong to.
    labels_key
        obsm key of the labels.
    bag_key
        obs column of bag ids; ``None`` skips the within-bag check.
    labels
        A frame to check instead of ``adata.obsm[labels_key]``, e.g. before assigning it.
    """
    if labels is not None:
        adata_labels = labels
    elif labels_key not in adata.obsm:
        raise KeyError(
            f"adata.obsm has no key {labels_key!r} (argument `labels_key`). Available keys: "
            f"{_preview(adata.obsm.keys(), 12)}. Attach compound × assay labels with `ht.pp.assign_labels`."
        )
    else:
        adata_labels = adata.obsm[labels_key]
    labels = adata_labels
    if not isinstance(labels, pd.DataFrame):
        raise TypeError(
            f"adata.obsm[{labels_key!r}] must be a pandas DataFrame with one column per assay, got "
            f"{type(labels).__name__}. Wrap it: `pd.DataFrame(array, index=adata.obs_names, columns=assay_names)`."
        )
    if not labels.index.equals(adata.obs_names):
        n_diff = (
            int((labels.index.astype(str) != adata.obs_names).sum()) if len(labels) == adata.n_obs else -1
        )
        detail = f"{n_diff} of {adata.n_obs} positions differ" if n_diff >= 0 else "lengths differ"
        raise ValueError(
            f"The index of adata.obsm[{labels_key!r}] does not match adata.obs_names ({detail}). Reindex it: "
            f"`adata.obsm[{labels_key!r}] = labels.reindex(adata.obs_names)`."
        )
    if labels.shape[1] == 0:
        raise ValueError(f"adata.obsm[{labels_key!r}] has no assay columns.")
    not_str = [c for c in labels.columns if not isinstance(c, str)]
    if not_str:
        raise TypeError(
            f"Assay names (the columns of adata.obsm[{labels_key!r}]) must be strings; got {_preview(not_str)}. "
            f"Rename them: `adata.obsm[{labels_key!r}].columns = adata.obsm[{labels_key!r}].columns.astype(str)`."
        )
    if labels.columns.duplicated().any():
        raise ValueError(
            f"adata.obsm[{labels_key!r}] has duplicated assay names: {_preview(labels.columns[labels.columns.duplicated()])}."
        )
    check_binary_frame(labels, f"adata.obsm[{labels_key!r}]")
    if bag_key is not None:
        check_obs_keys(adata, {"bag_key": bag_key})
        what = f"adata.obsm[{labels_key!r}] (the labels)"
        group_what = f"a bag of adata.obs[{bag_key!r}] (argument `bag_key`)"
        try:
            check_constant_within(
                labels,
                adata.obs[bag_key].to_numpy(),
                what=what,
                group_what=group_what,
                fix=(
                    "Labels belong to compounds and must be constant within a well (measured or not); assign them "
                    "per compound with `ht.pp.assign_labels`."
                ),
            )
        except ValueError:
            per_plate = _bags_span_plates(adata, bag_key)  # computed only on failure: it changes the advice
            if not per_plate:
                raise
            check_constant_within(
                labels,
                adata.obs[bag_key].to_numpy(),
                what=what,
                group_what=group_what,
                fix=(
                    f"The bag ids of adata.obs[{bag_key!r}] repeat across plates (e.g. {_preview(per_plate, 3)} "
                    f"occur on several plates of adata.obs[{HCI_KEYS.PLATE!r}]): they look like per-plate well "
                    "positions, so one bag pools wells of different compounds. Build plate-qualified bag ids with "
                    f"`ht.pp.make_bag_key(adata, plate_key={HCI_KEYS.PLATE!r}, well_key={bag_key!r}, "
                    "key_added='bag')` and pass `bag_key='bag'` (or pass the plate column as `batch_key`)."
                ),
            )
    return labels


def _bags_span_plates(adata: AnnData, bag_key: str, plate_key: str = HCI_KEYS.PLATE) -> list[Any]:
    """Bag ids that occur on several plates of ``obs[plate_key]`` (per-plate well positions); [] when none.

    Only run where the answer changes advice (it needs a plate column, which holds no missing values).
    """
    if plate_key == bag_key or plate_key not in adata.obs.columns or adata.obs[plate_key].isna().any():
        return []
    pairs = pd.DataFrame(
        {"b": adata.obs[bag_key].to_numpy(), "p": adata.obs[plate_key].to_numpy()}
    ).drop_duplicates()
    dup = pairs["b"][pairs["b"].duplicated()]
    return pd.unique(dup).tolist()


def check_controls(
    adata: AnnData,
    control_key: str = HCI_KEYS.COMPOUND,
    control_value: Any = HCI_KEYS.CONTROL_VALUE,
    plate_key: str | None = HCI_KEYS.PLATE,
) -> np.ndarray:
    """Check that control instances exist (on every plate when ``plate_key`` is given); return the control mask."""
    check_obs_keys(adata, {"control_key": control_key, "plate_key": plate_key})
    is_control = check_values_present(
        adata.obs[control_key],
        control_value,
        arg="control_value",
        column=control_key,
        fix="No control instances: pass `control_value=` the label of your negative control.",
    )
    if plate_key is not None:
        has = pd.Series(is_control).groupby(adata.obs[plate_key].to_numpy()).any()
        without = has.index[~has.to_numpy()]
        if len(without):
            raise ValueError(
                f"Plates without any control instance ({control_key} == {control_value!r}): {_preview(without)}. "
                "Every plate needs its own controls for plate-wise correction; drop those plates or choose "
                "another `control_value`."
            )
    return is_control


def validate_hci(
    adata: AnnData,
    *,
    plate_key: str | None = HCI_KEYS.PLATE,
    bag_key: str | None = HCI_KEYS.WELL,
    compound_key: str | None = HCI_KEYS.COMPOUND,
    control_key: str | None = None,
    control_value: Any = None,
    rep_key: str | None = None,
    layer: str | None = None,
    labels_key: str | None = None,
    arg_names: Mapping[str, str] | None = None,
) -> None:
    """Validate an HCI screen against the hcitools data model.

    Checks, in order: the obs columns exist and are complete; the representation (``X``, ``layer`` or
    ``obsm[rep_key]``) is finite; bag ids are unique across plates; controls exist on every plate (when
    ``control_key`` is given); labels (when ``labels_key`` is given) are a 1 / 0 / NaN DataFrame aligned to
    ``obs_names`` and constant within bags. Raises on the first problem; never modifies ``adata``.

    Parameters
    ----------
    adata
        One row per instance (crop or cell).
    plate_key, bag_key, compound_key
        obs columns holding plate, bag (well) and compound ids; ``None`` skips a check.
    control_key, control_value
        Controls are the rows with ``obs[control_key] == control_value``; ``control_key=None`` skips the check.
    rep_key, layer
        Where the embeddings are (``obsm[rep_key]``, ``layers[layer]`` or ``X``).
    labels_key
        obsm key of the assay labels; ``None`` skips the check.
    arg_names
        How the caller names these arguments, when it differs, e.g. ``{"plate_key": "batch_key", "compound_key":
        "group_key"}``: messages about a missing column then name the caller's argument.
    """
    check_anndata(adata)
    names = {
        "plate_key": "plate_key",
        "bag_key": "bag_key",
        "compound_key": "compound_key",
        **(arg_names or {}),
    }
    check_obs_keys(
        adata,
        {names["plate_key"]: plate_key, names["bag_key"]: bag_key, names["compound_key"]: compound_key},
    )
    get_rep(adata, rep_key=rep_key, layer=layer)
    if bag_key is not None:
        check_bag_key(adata, bag_key, plate_key)
    if control_key is not None:
        check_controls(adata, control_key, control_value, plate_key)
    if labels_key is not None:
        check_labels(adata, labels_key, bag_key)


def validate_perturbation(
    adata: AnnData,
    *,
    condition_key: str = PERTURBATION_KEYS.CONDITION,
    cell_type_key: str | None = PERTURBATION_KEYS.CELL_TYPE,
    control_value: Any = PERTURBATION_KEYS.CONTROL_VALUE,
    layer: str | None = None,
) -> None:
    """Validate a single-cell perturbation AnnData (cells × genes, log-normalised).

    Checks that ``obs[condition_key]`` holds ``control_value`` and at least one other condition, that
    ``obs[cell_type_key]`` exists, and that the expression is finite and non-negative. Warns when the values
    look like raw counts (integers with a large maximum) rather than log-normalised expression.
    """
    check_anndata(adata)
    check_obs_keys(adata, {"condition_key": condition_key, "cell_type_key": cell_type_key})
    X = get_rep(adata, layer=layer)
    conditions = pd.unique(adata.obs[condition_key])
    if control_value not in set(conditions):
        raise ValueError(
            f"adata.obs[{condition_key!r}] has no control cells labelled {control_value!r} (argument "
            f"`control_value`); its values are {_preview(conditions)}."
        )
    if len(conditions) < 2:
        raise ValueError(
            f"adata.obs[{condition_key!r}] holds only the control condition; add perturbed cells."
        )
    data = X.data if sparse.issparse(X) else np.asarray(X)
    if data.size and data.min() < 0:
        raise ValueError(
            "Expression values are negative: hcitools expects log-normalised expression (e.g. "
            "`sc.pp.normalize_total(adata); sc.pp.log1p(adata)`), not scaled or centred data."
        )
    if data.size and data.max() > 50 and np.allclose(data[:1000], np.round(data[:1000])):
        warn(
            "Expression looks like raw counts (integer values, maximum > 50); hcitools expects log-normalised "
            "expression. Run `sc.pp.normalize_total(adata); sc.pp.log1p(adata)` first.",
            UserWarning,
        )
