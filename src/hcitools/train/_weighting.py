"""Task-weighting strategies: how the training plan combines the per-task losses of a batch.

A strategy is a small :class:`torch.nn.Module` (it may hold learnable parameters, e.g. uncertainty weighting)
with the protocol of :class:`TaskWeighting`. Adding one = one class here plus one entry in ``WEIGHTINGS``.
"""

from __future__ import annotations

import torch
from torch import nn


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
    (detached; logged per epoch into ``model.history`` as ``task_weight_<assay>``, beside ``task_loss_<assay>``). Tasks without an observed label
    in the batch must contribute nothing. ``on_validation_epoch_end(auroc)`` receives the per-task validation
    AUROC (NaN where undefined) after each validation epoch, for strategies that adapt to it.
    """

    def __init__(self, n_tasks: int):
        super().__init__()
        self.n_tasks = n_tasks

    def forward(
        self, task_loss: torch.Tensor, task_count: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - protocol
        raise NotImplementedError

    def on_validation_epoch_end(self, auroc) -> None:
        """Adapt to the validation AUROC per task (no-op by default)."""


class EqualWeighting(TaskWeighting):
    """Every task with observed labels in the batch has weight 1: ``loss = Σ_t L_t`` over those tasks."""

    def forward(self, task_loss: torch.Tensor, task_count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        observed = task_count > 0
        weights = observed.to(task_loss.dtype)
        return (task_loss * weights).sum(), weights


#: Strategies by name (``model.train(weighting=...)``).
WEIGHTINGS: dict[str, type[TaskWeighting]] = {"equal": EqualWeighting}


def make_weighting(weighting: str | TaskWeighting, n_tasks: int, kwargs: dict | None = None) -> TaskWeighting:
    """A strategy from its name in ``WEIGHTINGS`` (built with ``kwargs``) or an instance (checked for its number
    of tasks)."""
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
        return weighting
    if not isinstance(weighting, str) or weighting not in WEIGHTINGS:
        raise ValueError(
            f"`weighting` must be one of {sorted(WEIGHTINGS)} or a TaskWeighting instance, got {weighting!r}."
        )
    cls = WEIGHTINGS[weighting]
    try:
        return cls(n_tasks, **(kwargs or {}))
    except TypeError as err:
        raise TypeError(f"`weighting_kwargs` do not fit the {weighting!r} weighting: {err}") from err
