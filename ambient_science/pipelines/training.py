"""Training from a measurement file: the trainer (:mod:`ambient_science.training`) with the file reader of
:mod:`ambient_science.datasets.measurements` plugged in (the training layer knows no file format)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset

import ambient_science.operators  # noqa: F401  (registers the built-in operator families)
from ambient_science.datasets.measurements import MeasurementFile
from ambient_science.family import OperatorFamily
from ambient_science.pipelines.em_init import TrainedInitialPrior
from ambient_science.training import em, trainer
from ambient_science.training.config import RunConfig
from ambient_science.training.trainer import TrainResult

__all__ = ["prepare_data", "train"]


def prepare_data(
    config: RunConfig, dataset: Dataset | None = None, family: OperatorFamily | None = None
) -> tuple[Dataset, OperatorFamily]:
    """The measurement set (``dataset`` or the file ``config.data.path``) and its family with ``[family]`` applied."""
    return trainer.prepare_data(config, dataset, family, open_data=MeasurementFile)


def train(
    config: RunConfig,
    dataset: Dataset | None = None,
    *,
    family: OperatorFamily | None = None,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a prior from ``dataset`` or from the measurement file ``config.data.path`` (see
    :func:`ambient_science.training.trainer.train`; with ``train.method = "em"``,
    :func:`ambient_science.training.em.train_em`, its ``em.init_prior`` loaded here:
    :mod:`ambient_science.pipelines.em_init`)."""
    if config.train.method == "em":
        if callback is not None:
            raise ValueError("train.method = 'em' takes no callback")
        initial = TrainedInitialPrior(config.em.init_prior) if config.em.init_prior else None
        return em.train_em(config, dataset, family=family, open_data=MeasurementFile, initial_prior=initial)
    return trainer.train(config, dataset, family=family, callback=callback, open_data=MeasurementFile)
