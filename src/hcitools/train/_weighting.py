"""Task-weighting strategies: how the training plan combines the per-task losses of a batch.

A strategy is a small :class:`torch.nn.Module` (it may hold learnable parameters, e.g. uncertainty weighting)
with the protocol of :class:`TaskWeighting`. Adding one = one class here plus one entry in ``WEIGHTINGS``.

Every strategy is **sparse-label safe**: a task without an observed label in the batch (``task_count == 0``)
contributes nothing to the loss or its gradient (its loss entry is masked out, whatever value it holds, so a zero
never enters a logarithm or a product and a NaN never propagates), gets weight 0 in the returned weights, and the
strategies that normalise their weights do so over the observed tasks only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._validate import check_bool, check_real


def _observed(task_loss: torch.Tensor, task_count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(observed, loss)``: the mask of tasks with labels in the batch and the losses with the other entries set
    to 0 (no gradient, and no NaN or inf from them)."""
    observed = torch.as_tensor(task_count, device=task_loss.device) > 0
    return observed, torch.where(observed, task_loss, torch.zeros_like(task_loss))


def _as_task_vector(values, n_tasks: int, name: str) -> np.ndarray:
    """Per-task values given by position (array-like of length T) as a float array."""
    try:
        out = np.asarray(values, dtype=float).reshape(-1)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`{name}` must hold numbers, got {values!r}.") from err
    if out.shape != (n_tasks,):
        raise ValueError(f"`{name}` must hold one value per task ({n_tasks}), got {out.size}.")
    return out


class TaskWeighting(nn.Module):
    """Protocol of a task-weighting strategy.

    Parameters
    ----------
    n_tasks
        Number of tasks T.

    Notes
    -----
    ``forward(task_loss, task_count)`` gets the undetached per-task losses (T) and the number of observed labels
    per task in the batch (T) and returns ``(loss, weights)``: the scalar to minimise and the T weights used
    (detached; logged per epoch into ``model.history`` as ``task_weight_<assay>``, beside ``task_loss_<assay>``).
    Tasks without an observed label in the batch must contribute nothing (and get weight 0).

    Hooks the training plan calls:

    - ``on_validation_epoch_end(auroc)``: the per-task validation AUROC (numpy, NaN where undefined) after each
      validation epoch (not during the sanity check), for strategies that adapt to it (AMTL).
    - ``on_train_epoch_end(task_loss)``: the epoch-mean training loss per task (numpy, NaN for a task without
      labels in the epoch) after each training epoch, for strategies that adapt to the losses' trend (DWA).
    - ``set_assays(assays)``: the assay names of the model's tasks, in order (set by :func:`make_weighting`),
      for strategies whose options are given by assay name (AMTL's ``potentials``). ``assays`` is None until then.
    """

    def __init__(self, n_tasks: int):
        super().__init__()
        self.n_tasks = n_tasks
        self.assays: list[str] | None = None

    def forward(
        self, task_loss: torch.Tensor, task_count: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - protocol
        raise NotImplementedError

    def on_validation_epoch_end(self, auroc) -> None:
        """Adapt to the validation AUROC per task (no-op by default)."""

    def on_train_epoch_end(self, task_loss) -> None:
        """Adapt to the epoch-mean training loss per task (no-op by default)."""

    def set_assays(self, assays: Sequence[str]) -> None:
        """Name the tasks (the model's assays, in order); checks their number."""
        assays = [str(a) for a in assays]
        if len(assays) != self.n_tasks:
            raise ValueError(
                f"`weighting` was built for {self.n_tasks} tasks; the model has {len(assays)} assays."
            )
        self.assays = assays


class EqualWeighting(TaskWeighting):
    """Every task with observed labels in the batch has weight 1: ``loss = Σ_t L_t`` over those tasks."""

    def forward(self, task_loss: torch.Tensor, task_count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        observed, loss = _observed(task_loss, task_count)
        weights = observed.to(task_loss.dtype)
        return (loss * weights).sum(), weights


class UncertaintyWeighting(TaskWeighting):
    r"""Homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018; used by Graziani et al., 003 §3.3).

    Each task has a learned ``s_t = log σ²_t`` (a parameter of this module, trained with the model by the plan's
    optimiser). The loss over the tasks observed in the batch is

    .. math::

        L = \sum_{t\ \mathrm{observed}} c_t\, e^{-s_t} L_t + \tfrac12 s_t ,
        \qquad c_t = 1 \text{ (classification)}, \; c_t = \tfrac12 \text{ (regression)}.

    Regression (Kendall et al. eq. 5, a Gaussian likelihood): ``L_t / (2σ²) + log σ``. Classification (eq. 10,
    a Boltzmann likelihood with logits scaled by ``1/σ²``, and the approximation
    ``(1/σ) Σ_c exp(f_c/σ²) ≈ (Σ_c exp f_c)^{1/σ²}``, exact at σ = 1; a sigmoid/BCE task is the two-class case
    with logits ``(f, 0)``): ``L_t / σ² + log σ``. With ``log σ = s/2`` both read as above; ``s`` rather than
    ``σ`` is learned for numerical stability (no division by zero, any real value).
    At the optimum for fixed ``L_t``, ``e^{-s_t} = 1/(2 c_t L_t)``: a task's weight falls as its loss grows, and
    the ``s_t/2`` term keeps ``σ²`` from growing without bound. A task absent from the batch adds neither its
    loss nor its ``s_t/2`` term (``s_t`` gets no gradient from that batch).

    The returned weights are the effective weights ``c_t e^{-s_t}`` (``1/σ²_t`` for classification tasks);
    :attr:`sigma2` gives ``σ²_t``.

    Parameters
    ----------
    n_tasks
        Number of tasks T.
    regression
        T booleans: which tasks are regressions (MSE losses, factor ½); default: all are classifications.
    init_log_var
        Initial ``s_t = log σ²_t`` (default 0: weight 1, as equal weighting).

    Notes
    -----
    The plan's AdamW applies its weight decay to ``s_t`` as well (a slight pull towards weight 1).
    """

    def __init__(self, n_tasks: int, *, regression: Sequence[bool] | None = None, init_log_var: float = 0.0):
        super().__init__(n_tasks)
        init_log_var = check_real(init_log_var, "init_log_var")
        if regression is None:
            scale = np.ones(n_tasks)
        else:
            flags = [check_bool(r, "regression[i]") for r in regression]
            if len(flags) != n_tasks:
                raise ValueError(
                    f"`regression` must hold one boolean per task ({n_tasks}), got {len(flags)}."
                )
            scale = np.where(flags, 0.5, 1.0)
        self.log_var = nn.Parameter(torch.full((n_tasks,), init_log_var))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    @property
    def sigma2(self) -> torch.Tensor:
        """``σ²_t = exp(s_t)`` per task (detached)."""
        return self.log_var.detach().exp()

    def forward(self, task_loss: torch.Tensor, task_count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        observed, loss = _observed(task_loss, task_count)
        log_var = self.log_var.to(task_loss.dtype)
        weights = self.scale.to(task_loss.dtype) * torch.exp(-log_var)
        terms = weights * loss + 0.5 * log_var
        total = torch.where(observed, terms, torch.zeros_like(terms)).sum()
        return total, torch.where(observed, weights, torch.zeros_like(weights)).detach()


def amtl_weights(
    auroc,
    potentials=None,
    *,
    m: float = 1.1,
    p: float = 0.85,
    gamma: float = 2.0,
    hard_cutoff: bool = True,
) -> np.ndarray:
    """AMTL task weights from the tasks' AUROC (000 §3.3.4, modified AMTL).

    ``w_t = max(0, 1 − AUC_t / max(m·p_t, p))^γ``, and with ``hard_cutoff`` ``w_t = 0`` once ``AUC_t ≥ p``. A
    task without potential (None or NaN) uses ``max(m·p_t, p) = p``. NaN where ``AUC_t`` is NaN.

    Parameters
    ----------
    auroc
        T current AUROCs (NaN where undefined).
    potentials
        T potentials ``p_t`` (single-task AUROC), or None.
    m, p, gamma, hard_cutoff
        As in :class:`AMTLWeighting`.

    Returns
    -------
    T weights in [0, 1] (NaN where the AUROC is NaN).
    """
    auc = np.asarray(auroc, dtype=float)
    pot = np.full_like(auc, np.nan) if potentials is None else np.asarray(potentials, dtype=float)
    target = np.where(np.isnan(pot), p, np.maximum(m * pot, p))
    with np.errstate(invalid="ignore"):
        w = np.maximum(0.0, 1.0 - auc / target) ** gamma
        if hard_cutoff:
            w = np.where(auc >= p, 0.0, w)
    return np.where(np.isnan(auc), np.nan, w)


class AMTLWeighting(TaskWeighting):
    r"""AMTL task weights from validation AUROC, arithmetic mean (000 §3.3.4, modified from the original AMTL).

    After each validation epoch, with the validation AUROC ``AUC_t`` and the task potential ``p_t`` (the task's
    single-task cross-validated AUROC, :func:`hcitools.tl.task_potentials`):

    .. math::

        w_t = \max\!\Big(0,\; 1 - \frac{\mathrm{AUC}_t}{\max(m\,p_t,\ p)}\Big)^{\gamma},
        \qquad w_t = 0 \text{ once } \mathrm{AUC}_t \ge p \text{ (hard cut-off)},

    and the loss of a batch is the arithmetic mean over the ``T_obs`` tasks observed in it,
    ``L = (1/T_obs) Σ_{t observed} w_t L_t`` (the thesis' ``(1/T) Σ_t w_t L_t``, renormalised to the tasks with
    labels). Tasks far below their target get large weights; a task that reached ``p`` stops training (weight 0)
    until its AUROC falls below ``p`` again. Before the first validation epoch every weight is 1. A task whose
    validation AUROC is undefined (NaN: a single observed class) keeps its previous weight.

    Parameters
    ----------
    n_tasks
        Number of tasks T.
    potentials
        ``p_t``: a :class:`pandas.Series` (or mapping) by assay name, as :func:`hcitools.tl.task_potentials`
        returns (aligned to the model's assays by :func:`make_weighting`; assays not in it, or NaN, use
        ``max(m·p_t, p) = p``; names that are not assays of the model raise), or T values by position, or None
        (every task's target is ``p``).
    m
        Margin on the potential (default 1.1).
    p
        Fixed target AUROC and hard cut-off (default 0.85).
    gamma
        Focusing exponent γ (default 2).
    hard_cutoff
        ``w_t = 0`` once ``AUC_t ≥ p`` (default True); False leaves the formula alone (zero once
        ``AUC_t ≥ max(m·p_t, p)``).

    Notes
    -----
    The weights are buffers updated by :meth:`on_validation_epoch_end`; the returned weights are ``w_t`` (0 for
    tasks absent from the batch), not divided by ``T_obs``.
    """

    def __init__(
        self,
        n_tasks: int,
        *,
        potentials=None,
        m: float = 1.1,
        p: float = 0.85,
        gamma: float = 2.0,
        hard_cutoff: bool = True,
    ):
        super().__init__(n_tasks)
        self.m = check_real(m, "m", min=0, min_inclusive=False)
        self.p = check_real(p, "p", min=0, max=1, min_inclusive=False)
        self.gamma = check_real(gamma, "gamma", min=0)
        self.hard_cutoff = check_bool(hard_cutoff, "hard_cutoff")
        self._potentials_by_name: pd.Series | None = None
        potential = np.full(n_tasks, np.nan)
        if isinstance(potentials, Mapping):
            potentials = pd.Series(dict(potentials), dtype=float)
        if isinstance(potentials, pd.Series):
            series = pd.to_numeric(potentials, errors="coerce")
            if series.isna().to_numpy().sum() > potentials.isna().to_numpy().sum():
                raise TypeError("`potentials` must hold numbers (AUROCs).")
            series.index = series.index.map(str)
            if series.index.has_duplicates:
                dup = sorted(set(series.index[series.index.duplicated()]))
                raise ValueError(f"`potentials` names assays more than once: {dup}.")
            self._check_range(series.to_numpy())
            self._potentials_by_name = series
        elif potentials is not None:
            potential = _as_task_vector(potentials, n_tasks, "potentials")
            self._check_range(potential)
        self.register_buffer("potential", torch.as_tensor(potential, dtype=torch.float32))
        self.register_buffer("weight", torch.ones(n_tasks))

    @staticmethod
    def _check_range(values: np.ndarray) -> None:
        finite = values[~np.isnan(values)]
        if np.isinf(finite).any() or (finite < 0).any() or (finite > 1).any():
            raise ValueError(f"`potentials` must be AUROCs in [0, 1] (or NaN), got {values.tolist()}.")

    def set_assays(self, assays: Sequence[str]) -> None:
        """Name the tasks and align ``potentials`` given by assay name to them."""
        names = [str(a) for a in assays]
        if self._potentials_by_name is not None:
            unknown = [a for a in self._potentials_by_name.index if a not in names]
            if unknown:
                raise ValueError(
                    f"`potentials` names assays the model does not have: {unknown[:10]}. The model's assays are "
                    f"{names[:10]}{' …' if len(names) > 10 else ''}."
                )
        super().set_assays(names)
        if self._potentials_by_name is not None:
            aligned = self._potentials_by_name.reindex(names).to_numpy(dtype=float)
            self.potential.copy_(torch.as_tensor(aligned, dtype=torch.float32))

    def _check_aligned(self) -> None:
        if self._potentials_by_name is not None and self.assays is None:
            raise RuntimeError(
                "`potentials` were given by assay name but the strategy does not know the model's assays; build it "
                "with `make_weighting(..., assays=...)` (as `model.train` does) or give the potentials by position."
            )

    def on_validation_epoch_end(self, auroc) -> None:
        """Recompute the weights from the validation AUROC (tasks with NaN AUROC keep their weight)."""
        self._check_aligned()
        auc = _as_task_vector(auroc, self.n_tasks, "auroc")
        new = amtl_weights(
            auc,
            self.potential.cpu().numpy(),
            m=self.m,
            p=self.p,
            gamma=self.gamma,
            hard_cutoff=self.hard_cutoff,
        )
        keep = self.weight.cpu().numpy()
        self.weight.copy_(torch.as_tensor(np.where(np.isnan(new), keep, new), dtype=self.weight.dtype))

    def _weights(self, task_loss: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        self._check_aligned()
        w = self.weight.to(device=task_loss.device, dtype=task_loss.dtype)
        return torch.where(observed, w, torch.zeros_like(w))

    def forward(self, task_loss: torch.Tensor, task_count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        observed, loss = _observed(task_loss, task_count)
        weights = self._weights(task_loss, observed)
        total = (weights * loss).sum() / observed.sum().clamp_min(1)
        return total, weights


class AMTLGeometricWeighting(AMTLWeighting):
    r"""The original AMTL: AMTL task weights, weighted geometric mean of the task losses (000 §3.3.4).

    The weights ``w_t`` are those of :class:`AMTLWeighting` (from validation AUROC and potentials). The loss of a
    batch is the weighted geometric mean over the tasks observed in it, computed in log space:

    .. math::

        L = \prod_{t\ \mathrm{observed}} L_t^{\,w_t / W}
          = \exp\Big(\frac{1}{W} \sum_{t\ \mathrm{observed}} w_t \log \max(L_t, \varepsilon)\Big),
        \qquad W = \sum_{t\ \mathrm{observed}} w_t \quad (\texttt{normalize=True}),

    or ``W = 1`` (``normalize=False``: the thesis' ``Π_t L_t^{w_t}``). Normalised exponents keep the loss on the
    scale of one task's loss whatever the number of tasks (``Π L_t^{w_t}`` over 12 tasks of BCE ≈ 0.69 is ≈ 0.01,
    and shrinks the gradients alike); its gradient is ``L · Σ_t (w_t/W) ∇L_t / L_t``: the ``1/L_t`` factor
    gives tasks with small losses more pull than a weighted sum would. A task absent from the batch is left out of the product (a factor 1,
    never a zero), and ``ε`` guards the logarithm of a task whose loss is 0. When every observed task has weight 0,
    the loss is 0 (no gradient).

    Parameters
    ----------
    n_tasks, potentials, m, p, gamma, hard_cutoff
        As in :class:`AMTLWeighting` (defaults m = 1.1, p = 0.85, γ = 2, hard cut-off).
    normalize
        Divide the exponents by their sum over the observed tasks (default True; see above).
    eps
        Floor of the task losses inside the logarithm (default 1e-8).
    """

    def __init__(self, n_tasks: int, *, normalize: bool = True, eps: float = 1e-8, **kwargs):
        super().__init__(n_tasks, **kwargs)
        self.normalize = check_bool(normalize, "normalize")
        self.eps = check_real(eps, "eps", min=0, min_inclusive=False)

    def forward(self, task_loss: torch.Tensor, task_count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        observed, loss = _observed(task_loss, task_count)
        weights = self._weights(task_loss, observed)
        log_loss = torch.where(observed, torch.log(loss.clamp_min(self.eps)), torch.zeros_like(loss))
        total_weight = weights.sum()
        exponent = (weights * log_loss).sum()
        if self.normalize:
            exponent = exponent / total_weight.clamp_min(torch.finfo(weights.dtype).tiny)
        total = torch.where(total_weight > 0, torch.exp(exponent), torch.zeros_like(exponent))
        return total, weights


class DWAWeighting(TaskWeighting):
    r"""Dynamic weight averaging (Liu, Johns & Davison, "End-to-end multi-task learning with attention", CVPR 2019).

    From the epoch-mean training losses of the two previous epochs, ``r_t = L_t(e−1) / L_t(e−2)`` (a task whose
    loss falls slowly has ``r_t`` near 1, one that learns fast a small ``r_t``), and during epoch ``e``

    .. math::

        w_t = T_{\mathrm{obs}}\, \frac{\exp(r_t / \tau)}{\sum_{i\ \mathrm{observed}} \exp(r_i / \tau)}, \qquad
        L = \sum_{t\ \mathrm{observed}} w_t L_t ,

    the softmax over the ``T_obs`` tasks observed in the batch (Liu et al.'s ``K exp(r_k/T)/Σ_i exp(r_i/T)``
    renormalised to the tasks with labels; weights sum to ``T_obs``, as equal weighting's). During the first two
    epochs every weight is 1. A task without labels in either of the two epochs (NaN mean), or with a zero loss,
    has ``r_t = 1``.

    Parameters
    ----------
    n_tasks
        Number of tasks T.
    temperature
        τ (default 2, as Liu et al.): larger values make the weights more equal.

    Notes
    -----
    Needs the plan to call :meth:`on_train_epoch_end` with the epoch-mean loss per task after every training
    epoch; without it the weights stay 1.
    """

    def __init__(self, n_tasks: int, *, temperature: float = 2.0):
        super().__init__(n_tasks)
        self.temperature = check_real(temperature, "temperature", min=0, min_inclusive=False)
        self.register_buffer("epoch_loss", torch.full((2, n_tasks), math.nan))  # epochs e−2, e−1
        self.register_buffer("ratio", torch.ones(n_tasks))
        self.n_epochs = 0

    def on_train_epoch_end(self, task_loss) -> None:
        """Record the epoch-mean loss per task (NaN: no labels in the epoch) and update ``r_t``."""
        current = _as_task_vector(task_loss, self.n_tasks, "task_loss")
        last = self.epoch_loss[1].cpu().numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = current / last
        ratio = np.where(np.isfinite(ratio) & (last > 0), ratio, 1.0)
        self.epoch_loss.copy_(torch.as_tensor(np.stack([last, current]), dtype=self.epoch_loss.dtype))
        self.ratio.copy_(torch.as_tensor(ratio, dtype=self.ratio.dtype))
        self.n_epochs += 1

    def forward(self, task_loss: torch.Tensor, task_count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        observed, loss = _observed(task_loss, task_count)
        if self.n_epochs < 2 or not observed.any():
            weights = observed.to(task_loss.dtype)
        else:
            logits = self.ratio.to(device=task_loss.device, dtype=task_loss.dtype) / self.temperature
            logits = torch.where(observed, logits, torch.full_like(logits, -math.inf))
            weights = observed.sum() * torch.softmax(logits, 0)
        return (weights * loss).sum(), weights


#: Strategies by name (``model.train(weighting=...)``).
WEIGHTINGS: dict[str, type[TaskWeighting]] = {
    "equal": EqualWeighting,
    "uncertainty": UncertaintyWeighting,
    "amtl": AMTLWeighting,
    "amtl_geometric": AMTLGeometricWeighting,
    "dwa": DWAWeighting,
}


def make_weighting(
    weighting: str | TaskWeighting,
    n_tasks: int,
    kwargs: dict | None = None,
    *,
    assays: Sequence[str] | None = None,
) -> TaskWeighting:
    """A strategy from its name in ``WEIGHTINGS`` (built with ``kwargs``) or an instance (checked for its number
    of tasks); with ``assays`` (the model's assay names, in order), :meth:`TaskWeighting.set_assays` names the
    tasks and aligns options given by assay name (e.g. AMTL's ``potentials``)."""
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError(f"`weighting_kwargs` must be a dict or None, got {type(kwargs).__name__}.")
    if isinstance(weighting, TaskWeighting):
        if kwargs:
            raise TypeError(
                "`weighting_kwargs` goes with a strategy name; the instance given is built already."
            )
        if weighting.n_tasks != n_tasks:
            raise ValueError(
                f"`weighting` was built for {weighting.n_tasks} tasks; the model has {n_tasks} assays."
            )
        strategy = weighting
    else:
        if not isinstance(weighting, str) or weighting not in WEIGHTINGS:
            raise ValueError(
                f"`weighting` must be one of {sorted(WEIGHTINGS)} or a TaskWeighting instance, got {weighting!r}."
            )
        cls = WEIGHTINGS[weighting]
        try:
            strategy = cls(n_tasks, **(kwargs or {}))
        except TypeError as err:
            raise TypeError(f"`weighting_kwargs` do not fit the {weighting!r} weighting: {err}") from err
    if assays is not None:
        strategy.set_assays(assays)
    return strategy
