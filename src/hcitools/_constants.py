"""Names of obs columns, obsm keys and uns keys used across hcitools (one place, one name)."""

from __future__ import annotations

from typing import NamedTuple


class _HCIKeys(NamedTuple):
    PLATE: str = "plate"
    WELL: str = "well"
    WELL_POSITION: str = "well_position"
    COMPOUND: str = "compound"
    FOV: str = "fov"
    SCAFFOLD: str = "scaffold"
    CONTROL_VALUE: str = "DMSO"
    ASSAYS: str = "assays"
    FOLD: str = "fold"


class _PerturbationKeys(NamedTuple):
    CONDITION: str = "condition"
    CELL_TYPE: str = "cell_type"
    CONTROL_VALUE: str = "control"
    DOSE: str = "dose"


class _DataEnv(NamedTuple):
    VARIABLE: str = "HCITOOLS_DATA"


HCI_KEYS = _HCIKeys()
PERTURBATION_KEYS = _PerturbationKeys()
DATA_ENV = _DataEnv()


class _MILKeys(NamedTuple):
    """Keys of a batch of bags (the collate's output) and of the MIL models' registered fields."""

    X: str = "X"
    MASK: str = "mask"
    LABELS: str = "labels"
    BAG_INDEX: str = "bag_index"
    LABELS_REGISTRY: str = "assays"
    BAG_REGISTRY: str = "bag"
    GROUP_REGISTRY: str = "group"
    BATCH_REGISTRY: str = "batch"
    BATCH: str = "batch"  # B, integer batch (plate) code of each bag (only with ``batch_key``)
    AUX_REGISTRY: str = "aux"
    AUX: str = "aux"  # B × K, the ``aux_keys`` of each bag (raw values; standardised by the module)
    GRID_REGISTRY: str = "grid"
    POSITIONS: str = (
        "positions"  # B × N × 2, (row, column) of each instance on its bag's grid (``grid_keys``)
    )
    LABEL_INDEX_REGISTRY: str = (
        "label_index"  # MuData layout: row of each instance's labels in the label modality
    )


MIL_KEYS = _MILKeys()


class _ModuleKeys(NamedTuple):
    """Names of module outputs (``inference`` dicts and loss terms); queries return what a module declares."""

    LOGITS: str = "logits"  # B × T, the prediction (DSMIL: mean of its two streams)
    INSTANCE_LOGITS: str = "instance_logits"  # B × T, DSMIL's max-instance stream
    BAG_LOGITS: str = "bag_logits"  # B × T, DSMIL's bag stream
    ATTENTION: str = "attention"  # B × T × N
    BAG_EMBEDDING: str = "bag_embedding"  # B × T × h
    INSTANCE_EMBEDDING: str = "instance_embedding"  # B × N × d
    TASK_LOSS: str = "task_loss"  # T, undetached per-task loss
    TASK_COUNT: str = "task_count"  # T, observed labels per task in the batch
    BAG_REPRESENTATION: str = (
        "bag_representation"  # B × d, shared bag representation (mean projected instance)
    )
    ADVERSARIAL_LOSS: str = "adversarial_loss"  # scalar, the domain (batch) classifier's cross-entropy
    PRIOR_LOSS: str = "prior_loss"  # scalar, λ · the task-prior loss (000 §3.3.5)
    GATE_WEIGHTS: str = "gate_weights"  # B × T × P × E, M4's gate weights per task, proxy segment and expert
    EXPERT_ATTENTION: str = "expert_attention"  # B × E × N, attention of each expert (M4)


MODULE_KEYS = _ModuleKeys()


class _PerturbationRegistryKeys(NamedTuple):
    """Registered fields of the perturbation models."""

    CONDITION: str = "condition"
    CELL_TYPE: str = "cell_type"


PERTURBATION_REGISTRY_KEYS = _PerturbationRegistryKeys()
