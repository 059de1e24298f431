"""Plate-wise batch correction against negative controls (DMSO).

The statistics are fitted on control instances only, per plate, by :class:`PlateNormalizer`;
:func:`normalize_plates` applies it to an AnnData.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy.stats import median_abs_deviation

from .._constants import HCI_KEYS
from .._utils import check_free_keys, log_written, logger, to_dense, warn
from .._validate import (
    check_anndata,
    check_bool,
    check_choice,
    check_controls,
    check_real,
    check_str,
    check_writable,
    get_rep,
)

Method = Literal["mad_robustize", "standardize", "spherize"]
_METHODS = ("mad_robustize", "standardize", "spherize")


class PlateNormalizer:
    """Per-plate normalisation fitted on control instances, applied to any instance of a fitted plate.

    Methods (all per plate, fitted on that plate's control instances only):

    ``"mad_robustize"``
        ``(x − median_ctrl) / (mad_scale · MAD_ctrl)`` per feature. ``mad_scale=1.4826`` (default) makes the
        MAD a consistent estimator of the SD for normal data and reproduces pycytominer; ``mad_scale=1``
        reproduces the JUMP recipe.
    ``"standardize"``
        ``(x − mean_ctrl) / SD_ctrl`` per feature (SD with ``ddof=1``).
    ``"spherize"``
        ZCA whitening: ``(x − mean_ctrl) · W`` with ``W = U diag(1 / sqrt(λ + epsilon)) Uᵀ`` from the
        eigendecomposition ``U diag(λ) Uᵀ`` of the d × d control covariance (never an n × n SVD).
        ``epsilon`` regularises small eigenvalues; it matters when a plate has fewer controls than features,
        where the covariance is rank-deficient.

    Degenerate features: when a feature's control scale (MAD or SD) on a plate is 0 or not finite, dividing
    by it would explode (pycytominer adds 1e-18 and returns values of order 1e18). Here that plate's scale is
    replaced by the median of the same feature's valid scales on the other plates; when no plate has a valid
    scale, the feature is set to 0 on that plate. The (plate, feature) pairs are recorded in
    :attr:`degenerate_` and a single warning gives their count.

    Parameters
    ----------
    method
        ``"mad_robustize"``, ``"standardize"`` or ``"spherize"``.
    mad_scale
        Factor multiplying the MAD (``"mad_robustize"`` only).
    epsilon
        Added to the covariance eigenvalues (``"spherize"`` only).

    Attributes
    ----------
    center_
        DataFrame plates × features: the subtracted location.
    scale_
        DataFrame plates × features: the divisor after degenerate features were handled (not for spherize).
    whitening_
        Dict plate → d × d ZCA matrix (spherize only).
    degenerate_
        DataFrame plates × features of booleans: where the control scale was 0 or not finite.
    n_controls_
        Series: number of control instances per plate.

    Examples
    --------
    Fit on the DMSO crops of each plate, then normalise any crop of those plates:

    >>> import hcitools as ht
    >>> adata = ht.datasets.synthetic_hci(n_compounds=20, seed=0)
    >>> dmso = (adata.obs["compound"] == "DMSO").to_numpy()
    >>> norm = ht.pp.PlateNormalizer("mad_robustize").fit(adata.X, adata.obs["plate"], is_control=dmso)
    >>> norm.transform(adata.X[:5], adata.obs["plate"][:5]).shape
    (5, 64)
    """

    def __init__(self, method: Method = "mad_robustize", *, mad_scale: float = 1.4826, epsilon: float = 1e-6):
        check_choice(method, "method", _METHODS)
        self.method = method
        self.mad_scale = check_real(mad_scale, "mad_scale", min=0, min_inclusive=False)
        self.epsilon = check_real(epsilon, "epsilon", min=0)

    # -- fitting -------------------------------------------------------------------------------------------
    def fit(self, X: Any, plates: Any, *, is_control: Any) -> PlateNormalizer:
        """Fit per-plate statistics on the control rows of ``X``.

        Parameters
        ----------
        X
            n × d array (dense or sparse), finite.
        plates
            Length-n plate ids.
        is_control
            Length-n booleans: the rows used to fit.

        Returns
        -------
        self
        """
        X = _dense(X)
        plates = np.asarray(plates)
        is_control = np.asarray(is_control, dtype=bool)
        if not (len(plates) == len(is_control) == X.shape[0]):
            raise ValueError("`X`, `plates` and `is_control` must have the same number of rows.")
        if not np.isfinite(X).all():
            raise ValueError("`X` contains NaN or infinite values; drop or impute them before normalising.")
        if plates.ndim != 1 or is_control.ndim != 1:
            raise ValueError("`plates` and `is_control` must be one-dimensional (one entry per row of `X`).")
        uniq = pd.unique(plates)
        counts = pd.Series(is_control).groupby(plates).sum().reindex(uniq)
        missing = counts.index[counts.to_numpy() == 0]
        if len(missing):
            raise ValueError(
                f"Plates without any control instance: {list(missing)[:10]}. Each plate needs controls."
            )
        d = X.shape[1]
        center = np.empty((len(uniq), d))
        scale = np.ones((len(uniq), d))
        self.whitening_ = {}
        for i, plate in enumerate(uniq):
            ctrl = X[(plates == plate) & is_control]
            if self.method == "mad_robustize":
                center[i] = np.median(ctrl, axis=0)
                # scipy's MAD around the median, unscaled (scale=1.0); `mad_scale` multiplies it
                scale[i] = self.mad_scale * median_abs_deviation(ctrl, axis=0, center=np.median, scale=1.0)
            elif self.method == "standardize":
                center[i] = ctrl.mean(axis=0)
                scale[i] = ctrl.std(axis=0, ddof=1) if len(ctrl) > 1 else np.nan
            else:
                center[i] = ctrl.mean(axis=0)
                cov = np.cov(ctrl, rowvar=False, ddof=1) if len(ctrl) > 1 else np.zeros((d, d))
                evals, evecs = np.linalg.eigh(np.atleast_2d(cov))
                evals = np.clip(evals, 0.0, None)
                self._check_whitenable(plate, evals, len(ctrl))
                self.whitening_[plate] = (evecs / np.sqrt(evals + self.epsilon)) @ evecs.T
                scale[i] = np.sqrt(np.clip(np.diag(np.atleast_2d(cov)), 0, None))
        degenerate = ~(np.isfinite(scale) & (scale > 0))
        if self.method != "spherize" and degenerate.any():
            masked = np.where(degenerate, np.nan, scale)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                fallback = np.nanmedian(masked, axis=0)  # per feature, over plates
            rows, cols = np.nonzero(degenerate)
            scale[rows, cols] = fallback[cols]  # NaN where no plate has a valid scale -> output 0
        self.center_ = pd.DataFrame(center, index=uniq)
        self.scale_ = pd.DataFrame(scale, index=uniq)
        self.degenerate_ = pd.DataFrame(degenerate, index=uniq)
        self.n_controls_ = counts.astype(int)
        n_deg = int(degenerate.sum())
        if n_deg and self.method != "spherize":
            warn(
                f"{n_deg} (plate, feature) pairs have a control {'MAD' if self.method == 'mad_robustize' else 'SD'}"
                f" of 0 or not finite ({int(degenerate.any(axis=0).sum())} features); they were scaled by the "
                "feature's median scale on the other plates, or set to 0 where no plate had one. See "
                "`degenerate_`.",
                UserWarning,
            )
        return self

    def _check_whitenable(self, plate: Any, evals: np.ndarray, n_controls: int) -> None:
        """Refuse ZCA whitening that would divide by a zero eigenvalue (``epsilon=0``, singular covariance).

        With ``d`` features and ``n`` controls the covariance has rank at most ``n − 1``: for ``n ≤ d`` it is
        singular, and ``1 / sqrt(λ + 0)`` fills the output with inf / NaN (or values of order 1e8).
        """
        d = len(evals)
        tol = max(float(evals.max(initial=0.0)), 1.0) * d * np.finfo(np.float64).eps
        n_null = int((evals + self.epsilon <= tol).sum())
        if n_null:
            raise ValueError(
                f"Plate {plate!r} cannot be spherized with `epsilon={self.epsilon!r}`: its {n_controls} control "
                f"instances give a singular {d} × {d} covariance ({n_null} eigenvalues are 0; with {d} features "
                f"whitening needs more than {d} controls), and dividing by sqrt(0) would fill X with inf / NaN. "
                "Pass `epsilon > 0` (e.g. the default 1e-6, or larger), reduce the features first (e.g. PCA), or "
                "use `method='mad_robustize'`."
            )

    # -- applying ------------------------------------------------------------------------------------------
    def transform(self, X: Any, plates: Any, *, out: Any = None, chunk_rows: int = 8192) -> np.ndarray:
        """Normalise the rows of ``X`` with the statistics of their plates.

        Parameters
        ----------
        X
            n × d array with the features seen in :meth:`fit`; may be on disk (an ``h5py.Dataset`` such as the
            ``X`` of a backed AnnData, a zarr or dask array).
        plates
            Length-n plate ids; every plate must have been fitted.
        out
            An n × d array to write into (e.g. an ``h5py.Dataset`` of a new file): rows are then read,
            normalised and written ``chunk_rows`` at a time, so memory stays O(``chunk_rows`` × d). Required
            for an on-disk ``X``.
        chunk_rows
            Rows per block with ``out``.

        Returns
        -------
        A new float array n × d, or ``out``.
        """
        if not hasattr(self, "center_"):
            raise RuntimeError("This PlateNormalizer is not fitted yet; call `fit` first.")
        if out is not None or type(X).__module__.startswith(("h5py", "zarr", "dask")):
            return self._transform_blocks(X, plates, out, chunk_rows)
        X = _dense(X)
        plates = np.asarray(plates)
        if X.shape[1] != self.center_.shape[1]:
            raise ValueError(
                f"`X` has {X.shape[1]} features; the normalizer was fitted on {self.center_.shape[1]}."
            )
        unknown = sorted(set(pd.unique(plates)) - set(self.center_.index), key=str)
        if unknown:
            raise ValueError(
                f"Plates {unknown[:10]} were not fitted: plate-wise statistics need each plate's own controls. "
                "Fit on data that includes those plates' control instances."
            )
        out = np.empty(X.shape, dtype=np.float64)
        row = self.center_.index.get_indexer(plates)
        if self.method == "spherize":
            for plate in pd.unique(plates):
                m = plates == plate
                out[m] = (X[m] - self.center_.loc[plate].to_numpy()) @ self.whitening_[plate]
            return out
        center = self.center_.to_numpy()[row]
        scale = self.scale_.to_numpy()[row]
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (X - center) / scale
        out[~np.isfinite(scale)] = 0.0
        return out

    def _transform_blocks(self, X: Any, plates: Any, out: Any, chunk_rows: int) -> Any:
        """:meth:`transform` of ``chunk_rows`` rows at a time, written into ``out``."""
        plates = np.asarray(plates)
        if out is None:
            raise ValueError(
                "`X` is on disk: pass `out=` an array to write the normalised rows into (e.g. a dataset of a new "
                "h5py file), or use `ht.pp.normalize_plates(adata, path=...)` on the backed AnnData."
            )
        if tuple(out.shape) != tuple(X.shape) or len(plates) != X.shape[0]:
            raise ValueError(
                f"`out` must have the shape of `X` {tuple(X.shape)} (got {tuple(out.shape)}) and `plates` one "
                f"entry per row (got {len(plates)})."
            )
        for start, block in _row_blocks(X, chunk_rows):
            res = self.transform(block, plates[start : start + chunk_rows])
            _check_finite_result(res, start)
            out[start : start + len(res)] = res.astype(out.dtype, copy=False)
        return out

    def fit_transform(self, X: Any, plates: Any, *, is_control: Any) -> np.ndarray:
        """Fit on the control rows, then transform all rows."""
        return self.fit(X, plates, is_control=is_control).transform(X, plates)


def _row_blocks(X: Any, chunk_rows: int = 8192):
    """``(start, block)`` of consecutive rows of ``X`` (in memory, h5py, zarr or dask)."""
    for start in range(0, X.shape[0], chunk_rows):
        block = X[start : start + chunk_rows]
        yield start, (block.compute() if hasattr(block, "compute") else block)


def _check_finite_result(res: np.ndarray, start: int) -> None:
    if not np.isfinite(res).all():
        raise ValueError(
            f"Normalisation produced NaN or infinite values in rows {start}…{start + len(res) - 1}; nothing more "
            "was written. Check for features with extreme values or near-constant controls, or pass a larger "
            "`epsilon` (spherize)."
        )


def _dense(X: Any) -> np.ndarray:
    X = to_dense(X, np.float64)
    if X.ndim != 2:
        raise ValueError(f"`X` must be a 2-d matrix (instances × features), got shape {X.shape}.")
    return X


def normalize_plates(
    adata: AnnData,
    *,
    plate_key: str = HCI_KEYS.PLATE,
    control_key: str = HCI_KEYS.COMPOUND,
    control_value: Any = HCI_KEYS.CONTROL_VALUE,
    method: Method = "mad_robustize",
    mad_scale: float = 1.4826,
    epsilon: float = 1e-6,
    rep_key: str | None = None,
    key_added: str | None = None,
    overwrite: bool = False,
    copy: bool = False,
    path: str | None = None,
) -> AnnData | None:
    """Normalise every plate against its own negative-control instances (DMSO).

    Per plate and feature, the statistics come from the control instances (``obs[control_key] ==
    control_value``) only, then every instance of the plate is transformed. See :class:`PlateNormalizer` for the
    formulas, the handling of features whose control MAD/SD is 0, and the ``epsilon`` of ZCA whitening.

    Parameters
    ----------
    adata
        One row per instance or well; features in ``X`` or ``obsm[rep_key]``.
    plate_key
        obs column with plate ids.
    control_key
        obs column that identifies controls.
    control_value
        Value of ``obs[control_key]`` marking control instances.
    method
        ``"mad_robustize"`` (robust z-score), ``"standardize"`` (z-score) or ``"spherize"`` (ZCA).
    mad_scale
        Multiplier of the MAD: 1.4826 (pycytominer, mantispy) or 1.0 (JUMP recipe).
    epsilon
        Eigenvalue regulariser of ``"spherize"``.
    rep_key
        obsm key of the features; ``None`` uses ``X``.
    key_added
        As in :func:`scanpy.pp.pca`: ``None`` (default) replaces the input features (``X`` or ``obsm[rep_key]``)
        by their normalised values and records the parameters in ``uns["normalize_plates"]``; a name writes the
        normalised features to ``obsm[key_added]`` and the parameters to ``uns[key_added]``, and leaves the input
        untouched.
    overwrite
        Allow replacing existing result fields (``obsm[key_added]``, the ``uns`` entry,
        ``var["normalize_plates_degenerate"]``); without it an existing field raises an error, so normalising twice
        by accident is caught.
    copy
        Return a normalised copy instead of modifying ``adata``.
    path
        Out of core: write the normalised screen to this new ``.h5ad`` file instead of modifying ``adata``, for an
        AnnData opened with ``backed="r"`` (required then) or in memory. The statistics are fitted on the control
        rows only (read from the file: memory O(controls × features)); then ``X`` is normalised and written in
        blocks of rows, never held whole. ``key_added`` and ``rep_key`` must be None and ``copy`` False; the
        file holds ``obs``, ``var``, ``obsm`` and ``uns`` of ``adata``, the normalised ``X`` and the fields below.
        ``overwrite=True`` also replaces an existing file.

    Returns
    -------
    ``None``, a copy when ``copy=True``, or with ``path`` the new file opened with ``backed="r"``. Writes:

    - ``X`` or ``obsm[rep_key]`` (``key_added=None``), or ``obsm[key_added]``: the normalised features (float64 if
      the input was float64, float32 otherwise);
    - ``uns["normalize_plates"]`` (``key_added=None``) or ``uns[key_added]``: method, parameters, number of
      controls per plate, and the number of degenerate (plate, feature) pairs;
    - ``var["normalize_plates_degenerate"]`` (features in ``X`` only): number of plates on which the feature's
      control scale was 0 or not finite.

    Raises
    ------
    ValueError
        If a plate has no control instance (the message names it), or the features hold NaN or inf.

    Examples
    --------
    >>> import hcitools as ht
    >>> adata = ht.datasets.synthetic_hci(n_compounds=20, seed=0)
    >>> ht.pp.normalize_plates(adata, control_value="DMSO")
    >>> adata.uns["normalize_plates"]["method"]
    'mad_robustize'
    """
    check_anndata(adata)
    for name, value in (("plate_key", plate_key), ("control_key", control_key)):
        check_str(value, name)
    check_str(rep_key, "rep_key", allow_none=True)
    check_str(key_added, "key_added", allow_none=True)
    check_bool(overwrite, "overwrite")
    check_bool(copy, "copy")
    normalizer = PlateNormalizer(method, mad_scale=mad_scale, epsilon=epsilon)  # checks the three options
    params = {
        "method": method,
        "mad_scale": mad_scale,
        "epsilon": epsilon,
        "plate_key": plate_key,
        "control_key": control_key,
        "control_value": str(control_value),
        "rep_key": rep_key,
        "key_added": key_added,
    }
    read_only = getattr(adata, "isbacked", False) and getattr(adata.file, "_filemode", None) == "r"
    if path is not None or (read_only and not copy):
        return _normalize_to_file(adata, normalizer, params, path=path, overwrite=overwrite, copy=copy)
    X = get_rep(adata, rep_key=rep_key)
    is_control = check_controls(adata, control_key, control_value, plate_key)
    out_key = key_added if key_added is not None else rep_key
    uns_key = key_added if key_added is not None else "normalize_plates"
    check_free_keys(adata, {"obsm": key_added, "uns": uns_key}, overwrite=overwrite)
    if out_key is None:
        check_free_keys(adata, {"var": "normalize_plates_degenerate"}, overwrite=overwrite)
    check_writable(adata, "a copy" if copy else ("X" if out_key is None else "obsm"))
    plates = adata.obs[plate_key].to_numpy()
    dtype = np.float64 if X.dtype == np.float64 else np.float32
    Xn = normalizer.fit_transform(X, plates, is_control=is_control).astype(dtype)
    if not np.isfinite(Xn).all():  # never write inf / NaN (e.g. values beyond float32)
        raise ValueError(
            f"Normalisation produced {int((~np.isfinite(Xn)).sum())} NaN or infinite values (method={method!r}); "
            "nothing was written. Check for features with extreme values or near-constant controls, or pass a "
            "larger `epsilon` (spherize)."
        )

    target = adata.copy() if copy else adata
    written = []
    if out_key is None:
        target.X = Xn
        target.var["normalize_plates_degenerate"] = normalizer.degenerate_.sum(axis=0).to_numpy()
        written += ["X", "var['normalize_plates_degenerate']"]
    else:
        target.obsm[out_key] = Xn
        written.append(f"obsm[{out_key!r}]")
    target.uns[uns_key] = {
        **params,
        "n_controls": {str(k): int(v) for k, v in normalizer.n_controls_.items()},
        "n_degenerate": int(normalizer.degenerate_.to_numpy().sum()),
    }
    written.append(f"uns[{uns_key!r}]")
    logger.info(
        f"normalised {len(normalizer.center_)} plates against {int(is_control.sum())} control instances"
    )
    log_written("adata", written)
    return target if copy else None


def _normalize_to_file(
    adata: AnnData, normalizer: PlateNormalizer, params: dict, *, path, overwrite: bool, copy: bool
) -> AnnData:
    """:func:`normalize_plates` out of core: fit on the control rows read from disk, write ``X`` block by block."""
    from ._disk import check_out_path, write_h5ad_blocks

    if path is None:
        raise ValueError(
            f"`adata` is backed by {str(adata.filename)!r}: pass `path=` a new .h5ad file to write the normalised "
            "screen to (normalised out of core, block by block), load it into memory (`adata.to_memory()`), or "
            "open the file with `anndata.read_h5ad(path, backed='r+')` to normalise X in place."
        )
    for name in ("rep_key", "key_added"):
        if params[name] is not None:
            raise ValueError(
                f"With `path`, the normalised features go to X of the new file: `{name}` must be None."
            )
    if copy:
        raise ValueError("`copy=True` and `path` exclude each other: with `path` the new file is returned.")
    path = check_out_path(path, overwrite=overwrite)
    if adata.isbacked and str(adata.filename) == str(path):
        raise ValueError("`path` is the file `adata` is backed by; write to a new file.")
    check_free_keys(
        adata, {"uns": "normalize_plates", "var": "normalize_plates_degenerate"}, overwrite=overwrite
    )
    X = get_rep(adata)  # backed: the finite check scans the file in row blocks
    is_control = check_controls(adata, params["control_key"], params["control_value"], params["plate_key"])
    plates = adata.obs[params["plate_key"]].to_numpy()
    ctrl = np.flatnonzero(is_control)
    ctrl_X = np.concatenate([to_dense(X[ctrl[i : i + 8192]], np.float64) for i in range(0, len(ctrl), 8192)])
    normalizer.fit(ctrl_X, plates[ctrl], is_control=np.ones(len(ctrl), bool))
    dtype = np.float64 if X.dtype == np.float64 else np.float32
    obsm = {k: v for k, v in adata.obsm.items()}
    var = adata.var.copy()
    var["normalize_plates_degenerate"] = normalizer.degenerate_.sum(axis=0).to_numpy()
    uns = dict(adata.uns)
    uns["normalize_plates"] = {
        **params,
        "n_controls": {str(k): int(v) for k, v in normalizer.n_controls_.items()},
        "n_degenerate": int(normalizer.degenerate_.to_numpy().sum()),
    }
    skeleton = AnnData(obs=adata.obs.copy(), var=var, uns=uns, obsm=obsm)

    def blocks():
        for start, block in _row_blocks(X):
            res = normalizer.transform(block, plates[start : start + len(block)])
            _check_finite_result(res, start)
            yield start, res.astype(dtype, copy=False)

    out = write_h5ad_blocks(path, skeleton, n_features=X.shape[1], dtype=dtype, blocks=blocks)
    logger.info(
        f"normalised {len(normalizer.center_)} plates against {len(ctrl)} control instances (out of core)"
    )
    log_written(path, ["X", "var['normalize_plates_degenerate']", "uns['normalize_plates']"])
    return out
