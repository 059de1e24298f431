"""Training plan of the MIL classifiers: AdamW, linear warm-up then cosine decay by step, per-assay validation AUROC;
the rule that scales the training defaults with the number of training bags (:func:`scaled_defaults`)."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from scvi.train import LoudEarlyStopping
from sklearn.metrics import roc_auc_score

from .._constants import MIL_KEYS, MODULE_KEYS
from .._utils import logger
from ._epoch_means import EpochMeans
from ._weighting import TaskWeighting, make_weighting

VAL_MEAN_AUROC = "validation_mean_auroc"
VAL_LOSS = "validation_loss"

#: The rule of :func:`scaled_defaults` (see its docstring and ``MILModelBase.train``).
STEPS_PER_EPOCH_TARGET = 16  # batch size ≈ n_train / 16 for small data: ~16 optimiser steps per epoch
MIN_BATCH_SIZE, MAX_BATCH_SIZE = 8, 256
STEP_BUDGET = 2000  # optimiser steps the default max_epochs aims at
MIN_EPOCHS, MAX_EPOCHS = 20, 300
LR_WARMUP_FRACTION = 0.05  # of the total optimiser steps
EARLY_STOP_WARMUP_FRACTION = 0.2  # of max_epochs: no early stop before
PATIENCE_FRACTION, MIN_PATIENCE = 0.1, 10  # of max_epochs
MIN_VALIDATION_CLASS = 10  # auto monitor: AUROC only when Σ_primary min(n_pos, n_neg) reaches this


@dataclass(frozen=True)
class TrainingDefaults:
    """Training settings for one ``train`` call, as :func:`scaled_defaults` derives them."""

    batch_size: int
    steps_per_epoch: int
    max_epochs: int
    lr_warmup_steps: int
    warmup_epochs: int
    patience: int

    @property
    def total_steps(self) -> int:
        """Optimiser steps of ``max_epochs`` epochs (single process)."""
        return self.steps_per_epoch * self.max_epochs


def scaled_defaults(
    n_train: int,
    *,
    batch_size: int | None = None,
    max_epochs: int | None = None,
    lr_warmup_steps: int | None = None,
    warmup_epochs: int | None = None,
    patience: int | None = None,
) -> TrainingDefaults:
    """The training defaults for ``n_train`` training bags; a value given (not None) is kept as it is.

    - ``batch_size = min(256, max(8, n_train // 16))``: about 16 optimiser steps per epoch on small data sets
      (a 100-bag set gets 8-bag batches, not a single 256-bag step per epoch), the paper's 256 bags from
      4,096 training bags on.
    - ``steps_per_epoch = ceil(n_train / batch_size)``.
    - ``max_epochs = clip(ceil(2000 / steps_per_epoch), 20, 300)``: a budget of about 2,000 optimiser steps,
      at least 20 epochs (every bag seen 20 times on large screens: 100,000 bags → 7,820 steps) and at most 300.
    - ``lr_warmup_steps = ceil(0.05 · steps_per_epoch · max_epochs)``: linear learning-rate warm-up over the
      first 5 % of the steps, then cosine decay to 0 at the last step (:meth:`MILTrainingPlan.lr_factor`).
    - ``warmup_epochs = ceil(0.2 · max_epochs)``: no early stop in the first 20 % of the epochs.
    - ``patience = max(10, ceil(0.1 · max_epochs))`` validation epochs without improvement.

    Parameters
    ----------
    n_train
        Number of (labelled) training bags.
    batch_size, max_epochs, lr_warmup_steps, warmup_epochs, patience
        Values given by the user (kept), or None (derived as above, from the values given).

    Returns
    -------
    The settings as a :class:`TrainingDefaults`.
    """
    n_train = int(n_train)
    if n_train < 1:
        raise ValueError(f"`n_train` must be ≥ 1 training bag, got {n_train}.")
    if batch_size is None:
        batch_size = min(MAX_BATCH_SIZE, max(MIN_BATCH_SIZE, n_train // STEPS_PER_EPOCH_TARGET))
    steps_per_epoch = math.ceil(n_train / batch_size)
    if max_epochs is None:
        max_epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(STEP_BUDGET / steps_per_epoch)))
    if lr_warmup_steps is None:
        lr_warmup_steps = math.ceil(LR_WARMUP_FRACTION * steps_per_epoch * max_epochs)
    if warmup_epochs is None:
        warmup_epochs = math.ceil(EARLY_STOP_WARMUP_FRACTION * max_epochs)
    if patience is None:
        patience = max(MIN_PATIENCE, math.ceil(PATIENCE_FRACTION * max_epochs))
    return TrainingDefaults(
        int(batch_size), int(steps_per_epoch), int(max_epochs), int(lr_warmup_steps), int(warmup_epochs),
        int(patience),
    )  # fmt: skip


def per_task_auroc(prob: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """AUROC per task over observed labels (scikit-learn); NaN where a task has a single observed class.

    With ``groups`` (e.g. compounds), bag probabilities are first averaged per group.
    """
    if groups is not None:
        prob = pd.DataFrame(prob).groupby(groups).mean().to_numpy()
        labels = pd.DataFrame(labels).groupby(groups).first().to_numpy()
    out = np.full(prob.shape[1], np.nan)
    for t in range(prob.shape[1]):
        y = labels[:, t]
        keep = ~np.isnan(y)
        if keep.any() and 0 < y[keep].sum() < keep.sum():
            out[t] = roc_auc_score(y[keep], prob[keep, t])
    return out


ADVERSARIAL_SCHEDULE = "schedule"
AUX_PREFIX = "aux_"
#: Defaults of the adversary's own optimisation (see ``MILTrainingPlan``): updates of the domain classifier per
#: batch and its learning rate as a multiple of ``lr``.
N_DISCRIMINATOR_STEPS = 5
DISCRIMINATOR_LR_FACTOR = 10.0


def adversarial_schedule(progress: float) -> float:
    """Ganin & Lempitsky's ramp of the adversarial weight: ``2 / (1 + exp(−10 · progress)) − 1``.

    0 at the start of training (``progress = 0``), ≈ 0.987 at ``progress = 0.5``, ≈ 0.99991 at the end
    (``progress = step / total steps``, clipped to [0, 1]).
    """
    progress = min(1.0, max(0.0, float(progress)))
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


def check_adversarial_weight(value) -> float | str:
    """``"schedule"`` or a finite float ≥ 0 (returned as a float)."""
    if isinstance(value, str):
        if value != ADVERSARIAL_SCHEDULE:
            raise ValueError(
                f"`adversarial_weight` must be {ADVERSARIAL_SCHEDULE!r} or a number ≥ 0, got {value!r}."
            )
        return value
    from .._validate import check_real

    return check_real(value, "adversarial_weight", min=0)


def check_discriminator_args(n_steps, lr, model_lr) -> tuple[int, float]:
    """``n_discriminator_steps`` (an int ≥ 1) and ``discriminator_lr`` (a float > 0, or None: 10 × ``lr``)."""
    from .._validate import check_int, check_real

    n_steps = check_int(n_steps, "n_discriminator_steps", min=1)
    if lr is None:
        return n_steps, DISCRIMINATOR_LR_FACTOR * float(model_lr)
    return n_steps, check_real(lr, "discriminator_lr", min=0, min_inclusive=False)


def task_names(assays: Sequence[str], aux_names: Sequence[str] = ()) -> list[str]:
    """The names of the weighted tasks: the assays, then ``aux_<key>`` for each auxiliary concept."""
    return [str(a) for a in assays] + [f"{AUX_PREFIX}{k}" for k in aux_names]


def make_task_weighting(
    weighting: str | TaskWeighting,
    kwargs: dict | None,
    assays: Sequence[str],
    aux_names: Sequence[str] = (),
) -> TaskWeighting:
    """The weighting of the T assays and the K auxiliary concepts (T + K tasks named by :func:`task_names`).

    With aux concepts and ``weighting="uncertainty"``, the aux tasks take Kendall's regression form (flags
    ``regression``) unless ``kwargs`` give ``regression``.
    """
    names = task_names(assays, aux_names)
    if aux_names and weighting == "uncertainty" and "regression" not in (kwargs or {}):
        if kwargs is None or isinstance(kwargs, dict):
            kwargs = {**(kwargs or {}), "regression": [False] * len(assays) + [True] * len(aux_names)}
    return make_weighting(weighting, len(names), kwargs, assays=names)


class MILTrainingPlan(pl.LightningModule):
    """Optimisation and metrics of MIL classifiers (a Lightning module used as scvi-tools' training plan).

    scvi-tools' :class:`~scvi.train.TrainingPlan` logs ELBO terms; a classifier needs task metrics instead. The
    module's loss returns the undetached per-task losses and the number of observed labels per task; this plan
    combines them through a task-weighting strategy (:mod:`hcitools.train._weighting`) and logs, per epoch,
    ``train_loss`` (the combined loss), ``task_loss_<assay>`` (NaN in an epoch without labels of the assay),
    ``task_weight_<assay>``, ``validation_loss``, and after each validation epoch ``validation_auroc_<assay>``
    (NaN when the validation bags hold a single observed class of the assay) and ``validation_mean_auroc`` (mean
    over the finite AUROCs of ``primary_assays``, 0.5 when there is none; the early-stopping monitor).

    Under data-parallel training (Lightning's DDP strategies) each process validates a shard of the validation
    bags. The probabilities, labels and bag indices of all shards are gathered, bags that the distributed
    sampler repeated to even out the shards are counted once, and every process computes the AUROC of the whole
    validation set, so that early stopping and model selection agree across processes. Losses are averaged
    across processes.

    Parameters
    ----------
    module
        A :class:`~hcitools.module.MILModuleBase`.
    assays
        Assay names (columns of the labels).
    primary_assays
        Assays whose mean validation AUROC selects the model (default: all).
    lr, weight_decay
        AdamW parameters; ``lr`` is the peak learning rate of the schedule.
    max_epochs
        Kept for reference; the schedule runs over the trainer's optimiser steps
        (``trainer.estimated_stepping_batches``, i.e. ``max_epochs`` × batches per epoch and process).
    lr_warmup_steps
        Optimiser steps of linear learning-rate warm-up before the cosine decay (0: none); see :meth:`lr_factor`.
    bag_groups
        Group (compound) of every bag, indexed by bag index (``batch["bag_index"]``), i.e. an array over all bags
        of the data, not only the validation bags; validation probabilities are averaged per group before AUROC.
        None evaluates bags.
    pos_weight
        T weights of the positive class in the BCE (e.g. ``n_neg / n_pos`` of the training bags), or None.
    weighting
        A name of ``hcitools.train._weighting.WEIGHTINGS`` (``"equal"``) or a
        :class:`~hcitools.train.TaskWeighting`.
    weighting_kwargs
        Keyword arguments of the strategy named by ``weighting``.
    aux_names
        The module's auxiliary concepts (``aux_keys``), in order: the weighting sees T + K tasks, the aux ones
        named ``aux_<key>`` (logged as ``task_loss_aux_<key>``, ``task_weight_aux_<key>``); they get no AUROC
        (NaN for AMTL, which keeps their weight).
    adversarial_weight
        Weight of the adversarial branch (the scale of its gradient reversal), added outside the weighting:
        a float ≥ 0, or ``"schedule"`` (:func:`adversarial_schedule` of step / total steps). Logged per epoch as
        ``adversarial_weight`` with ``adversarial_loss``; a prior loss is logged as ``prior_loss``.
    n_discriminator_steps
        Updates of the domain classifier per training batch (default 5), by its own Adam optimiser (no weight
        decay, constant learning rate) on the batch's detached bag representation, after the step of the rest of
        the model; logged as ``discriminator_loss`` (the mean over the updates). Trained jointly in one step at the
        model's learning rate, a linear classifier lags behind the encoder, which then only has to fool that
        stale classifier: its own loss sits at chance while a freshly fitted linear probe still reads the plate
        (measured: balanced accuracy 0.98 from the mean projection with the joint step, ≈ 0.5 with 5 steps at
        10 × lr, 3 plates; see ``tests/model/test_adversary.py``). GAN practice (several discriminator steps per
        generator step) and a faster discriminator keep it near its optimum.
    discriminator_lr
        Learning rate of the domain classifier; None (default): 10 × ``lr``.
    aux_scale
        ``(mean, std)`` of the aux concepts over the training bags, set on the module (``set_aux_scale``) when
        fitting starts (after every check has passed), or None.
    """

    def __init__(
        self,
        module,
        *,
        assays: Sequence[str],
        primary_assays: Sequence[str] | None = None,
        lr: float = 1e-4,
        weight_decay: float = 5e-4,
        max_epochs: int = 100,
        lr_warmup_steps: int = 0,
        bag_groups: np.ndarray | None = None,
        pos_weight: torch.Tensor | None = None,
        weighting: str | TaskWeighting = "equal",
        weighting_kwargs: dict | None = None,
        aux_names: Sequence[str] = (),
        adversarial_weight: float | str = ADVERSARIAL_SCHEDULE,
        n_discriminator_steps: int = N_DISCRIMINATOR_STEPS,
        discriminator_lr: float | None = None,
        aux_scale: tuple | None = None,
    ):
        super().__init__()
        self.module = module
        self.assays = list(assays)
        self.aux_names = [str(k) for k in aux_names]
        self.task_names = task_names(self.assays, self.aux_names)
        self.adversarial_weight = check_adversarial_weight(adversarial_weight)
        self.n_discriminator_steps, self.discriminator_lr = check_discriminator_args(
            n_discriminator_steps, discriminator_lr, lr
        )
        self._adversary_batch: tuple | None = None
        self._discriminator_optimizer = None
        self.aux_scale = aux_scale
        primary = list(primary_assays) if primary_assays is not None else self.assays
        self.primary_index = np.array([self.assays.index(a) for a in primary])
        self.lr, self.weight_decay, self.max_epochs = lr, weight_decay, max_epochs
        self.lr_warmup_steps = int(lr_warmup_steps)
        self.bag_groups = None if bag_groups is None else np.asarray(bag_groups)
        self.weighting = make_task_weighting(weighting, weighting_kwargs, self.assays, self.aux_names)
        self.register_buffer(
            "pos_weight", None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32)
        )
        #: n_bags × T training labels that replace the batch's (pseudo-labels, :class:`~hcitools.train.PseudoLabels`),
        #: on the module's device; None: the data's labels
        self.labels_override: torch.Tensor | None = None
        self._val_prob: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []
        self._val_bags: list[torch.Tensor] = []
        self._val_means = EpochMeans()
        self._reset_task_sums()

    def _reset_task_sums(self) -> None:
        self._task_sums: torch.Tensor | None = None  # 3 × T: loss sum, weight sum, batches with labels
        self._epoch_means = EpochMeans()  # training and branch terms

    def current_adversarial_weight(self) -> float:
        """The adversarial weight of the current optimiser step (fixed, or scheduled by training progress)."""
        if self.adversarial_weight != ADVERSARIAL_SCHEDULE:
            return float(self.adversarial_weight)
        if self._trainer is None:
            return 1.0
        total = self.trainer.estimated_stepping_batches
        total = int(total) if math.isfinite(total) and total > 0 else 1
        return adversarial_schedule(self.global_step / total)

    def forward(self, batch):
        kwargs = {"pos_weight": self.pos_weight}
        if getattr(self.module, "n_batches", 0) > 0:
            kwargs["adversarial_weight"] = self.current_adversarial_weight()
        return self.module(batch, loss_kwargs=kwargs)

    def on_fit_start(self):
        if self.aux_scale is not None:
            self.module.set_aux_scale(*self.aux_scale)

    def on_train_start(self):
        # queries and ``load`` leave the module in eval mode, which Lightning keeps for submodules
        self.module.train()

    def _step(self, batch) -> tuple:
        inference, _, out = self(batch)
        task_loss = out.extra_metrics[MODULE_KEYS.TASK_LOSS]
        task_count = out.extra_metrics[MODULE_KEYS.TASK_COUNT]
        loss, weights = self.weighting(task_loss, task_count)
        self._branch_losses = {
            k: out.extra_metrics[k]
            for k in (MODULE_KEYS.ADVERSARIAL_LOSS, MODULE_KEYS.PRIOR_LOSS)
            if k in out.extra_metrics
        }
        return inference, loss, task_loss, task_count, weights.detach(), out.n_obs_minibatch

    def training_step(self, batch, batch_idx):
        if self.labels_override is not None:  # one gather on the device, no per-bag loop
            batch = {**batch, MIL_KEYS.LABELS: self.labels_override[batch[MIL_KEYS.BAG_INDEX]]}
        inference, loss, task_loss, task_count, weights, n = self._step(batch)
        if MODULE_KEYS.ADVERSARIAL_LOSS in self._branch_losses:  # the domain classifier's own steps follow
            rep = inference[MODULE_KEYS.BAG_REPRESENTATION].detach()
            self._adversary_batch = (rep, batch[MIL_KEYS.BATCH], n)
        for key, term in self._branch_losses.items():  # outside the weighting: never learned away
            loss = loss + term
            self._epoch_means.add(key, term, n)
        if MODULE_KEYS.ADVERSARIAL_LOSS in self._branch_losses:
            self._epoch_means.add("adversarial_weight", self.current_adversarial_weight(), n, self.device)
        observed = (task_count > 0).to(task_loss.dtype)
        sums = torch.stack([task_loss.detach() * observed, weights * observed, observed])
        self._task_sums = sums if self._task_sums is None else self._task_sums + sums
        self._epoch_means.add("train_loss", loss, n)  # its epoch mean: one self.log per epoch
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        """``n_discriminator_steps`` updates of the domain classifier on the batch's detached representation."""
        if self._adversary_batch is None or self._discriminator_optimizer is None:
            return
        rep, codes, n = self._adversary_batch
        self._adversary_batch = None
        params = list(self.module.domain_classifier.parameters())
        optimizer = self._discriminator_optimizer
        distributed = self._trainer is not None and self.trainer.world_size > 1
        total = rep.new_zeros(())
        with torch.enable_grad():
            for _ in range(self.n_discriminator_steps):
                loss = self.module.discriminator_loss(rep, codes)
                # autograd.grad, not backward: outside the wrapped forward, DDP's gradient hooks must not fire;
                # the gradients are averaged across processes by hand so that every copy stays the same
                grads = torch.autograd.grad(loss, params)
                for p, g in zip(params, grads, strict=True):
                    p.grad = self.trainer.strategy.reduce(g, reduce_op="mean") if distributed else g
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                total = total + loss.detach()
        self._epoch_means.add("discriminator_loss", total / self.n_discriminator_steps, n)

    def _log_to_history(self, values: dict[str, float]) -> None:
        """Epoch values that no callback monitors (per-task losses, weights, AUROCs), handed straight to the loggers
        (``model.history``), as Lightning does with epoch-level ``self.log`` values at the epoch's end.

        Lightning's ``self.log`` walks its result objects on every call (we measured ~5 ms a call on CPU): one call
        per task and epoch made logging seconds per epoch with 200 assays, and a quarter of the training time of
        small screens. The values are the same in every process (reduced before); the loggers write on rank 0.
        """
        if self._trainer is None or self.trainer.sanity_checking:
            return
        for history in self.loggers:
            history.log_metrics({**values, "epoch": self.current_epoch}, step=self.global_step)

    def on_train_epoch_end(self):
        self._epoch_means.log(self, prog_bar=("train_loss",))
        sums, self._task_sums = self._task_sums, None
        if sums is None:
            return
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        n = sums[2]
        mean = torch.where(n > 0, sums[:2] / n.clamp_min(1), torch.full_like(sums[:2], float("nan")))
        mean = mean.cpu().numpy()
        self.weighting.on_train_epoch_end(mean[0])  # epoch-mean loss per task (NaN: no labels)
        values = {}
        for t, name in enumerate(self.task_names):  # reduced above: the same value in every process
            values[f"task_loss_{name}"] = float(mean[0, t])
            values[f"task_weight_{name}"] = float(mean[1, t])
        self._log_to_history(values)

    def validation_step(self, batch, batch_idx):
        # validation_loss: the weighted task (and aux) loss; the adversarial and prior terms are training-only
        inference, loss, *_, n = self._step(batch)
        self._val_means.add(VAL_LOSS, loss, n)  # its epoch mean: one self.log per epoch
        self._val_prob.append(torch.sigmoid(inference[MODULE_KEYS.LOGITS]).detach().float())
        self._val_labels.append(batch[MIL_KEYS.LABELS].detach())
        self._val_bags.append(batch[MIL_KEYS.BAG_INDEX].detach())

    def _gather_rows(self, parts: list[torch.Tensor], empty: torch.Tensor) -> torch.Tensor:
        """Concatenate this process's ``parts`` and, in distributed runs, the rows of every other process.

        ``self.all_gather`` needs equal shapes on all processes; shards are padded to the longest and cut back.
        ``empty`` (zero rows) stands in for a process without validation batches.
        """
        local = torch.cat(parts) if parts else empty
        if self.trainer.world_size == 1:
            return local
        with warnings.catch_warnings():
            # Lightning gathers through torch.distributed.nn.functional, deprecated in recent torch
            warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)
            counts = self.all_gather(torch.tensor(len(local), device=local.device)).reshape(-1).tolist()
            pad = local.new_zeros((max(counts) - len(local), *local.shape[1:]))
            gathered = self.all_gather(torch.cat([local, pad]))
        return torch.cat([rows[:n] for rows, n in zip(gathered, counts, strict=True)])

    def _validation_outputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities, labels and indices of the validation bags of the epoch, from all processes, one row
        per bag, sorted by bag index (the order of the validation loader in a single process)."""
        n_tasks = len(self.assays)
        prob = self._gather_rows(self._val_prob, torch.zeros(0, n_tasks, device=self.device))
        labels = self._gather_rows(self._val_labels, torch.zeros(0, n_tasks, device=self.device))
        bags = self._gather_rows(self._val_bags, torch.zeros(0, dtype=torch.long, device=self.device))
        self._val_prob, self._val_labels, self._val_bags = [], [], []
        # DistributedSampler repeats bags so that every process gets as many: keep each bag once
        bags, first = np.unique(bags.cpu().numpy(), return_index=True)
        return prob.cpu().numpy()[first], labels.cpu().numpy()[first], bags

    def on_validation_epoch_end(self):
        self._val_means.log(self)
        prob, labels, bags = self._validation_outputs()
        if len(bags) == 0:
            return
        groups = self.bag_groups[bags] if self.bag_groups is not None else None
        auroc = per_task_auroc(prob, labels, groups)
        if not self.trainer.sanity_checking:  # aux concepts have no AUROC: NaN keeps their weight
            self.weighting.on_validation_epoch_end(
                np.concatenate([auroc, np.full(len(self.aux_names), np.nan)])
            )
        # Every process holds the same values; syncing them with "max" is exact (a mean need not be) and tells
        # Lightning that they are valid across processes. Without distributed training it is a no-op.
        log = {"sync_dist": True, "reduce_fx": "max"}
        # NaN: a single observed class this epoch
        self._log_to_history(
            {f"validation_auroc_{n}": float(v) for n, v in zip(self.assays, auroc, strict=True)}
        )
        primary = auroc[self.primary_index]
        mean = float(np.nanmean(primary)) if np.isfinite(primary).any() else 0.5
        self.log(VAL_MEAN_AUROC, mean, prog_bar=True, **log)

    def configure_optimizers(self):
        # the domain classifier has its own optimiser (`on_train_batch_end`); the main one never updates it
        adversary = getattr(self.module, "domain_classifier", None)
        own = [] if adversary is None else list(adversary.parameters())
        if own:
            self._discriminator_optimizer = torch.optim.Adam(own, lr=self.discriminator_lr)
        own_ids = {id(p) for p in own}
        params = [p for p in self.module.parameters() if p.requires_grad and id(p) not in own_ids]
        params += [p for p in self.weighting.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else math.inf
        total = int(total) if math.isfinite(total) else self.lr_warmup_steps + 1
        warmup = self.lr_warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: self.lr_factor(step, warmup_steps=warmup, total_steps=total)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @staticmethod
    def lr_factor(step: int, *, warmup_steps: int, total_steps: int) -> float:
        """Learning rate of optimiser step ``step`` (0-based) as a fraction of ``lr``.

        ``(step + 1) / warmup_steps`` during the warm-up (``step < warmup_steps``: linear up to ``lr`` at the
        last warm-up step), then ``0.5 · (1 + cos(π · (step − warmup_steps) / (total_steps − warmup_steps)))``:
        cosine decay from ``lr`` to 0 at the end of training (``total_steps`` optimiser steps).
        """
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))


class EarlyStopping(LoudEarlyStopping):
    """scvi-tools' :class:`~scvi.train.LoudEarlyStopping` (early stopping with ``warmup_epochs``) whose reason for
    stopping goes to the ``"hcitools"`` logger (shown at ``ht.settings.verbosity = "info"``) instead of ``print``."""

    def teardown(self, trainer, pl_module, stage=None) -> None:
        if self.early_stopping_reason is not None:
            logger.info(self.early_stopping_reason)


class RestoreBestWeights(pl.Callback):
    """Keep a copy of the module's weights at the best value of ``monitor`` and restore them when training ends.

    Lightning's EarlyStopping stops but does not roll back, and scvi-tools' checkpointing writes whole models to
    disk; this keeps the best state in memory. In distributed runs the decision of process 0 is broadcast, so
    that every process keeps (and restores) the weights of the same epoch.
    """

    def __init__(self, monitor: str = VAL_MEAN_AUROC, mode: str = "max"):
        super().__init__()
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.state: dict | None = None

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if trainer.world_size > 1:
            better = trainer.strategy.broadcast(better, src=0)
        if better:
            self.best, self.best_epoch = value, trainer.current_epoch
            self.state = copy.deepcopy(
                {k: v.detach().cpu() for k, v in pl_module.module.state_dict().items()}
            )

    def on_train_end(self, trainer, pl_module):
        if self.state is not None:
            pl_module.module.load_state_dict(self.state)
