"""The training engine: configs, datasets for a run, the loop, metrics and checkpoints.

Importing this package imports torch; the CLI imports it only for commands
that train or evaluate.
"""

from lttoolkit.engine.config import DataConfig, OptimConfig, RunConfig, TrainConfig, load_config
from lttoolkit.engine.evaluate import evaluate_checkpoint, load_model
from lttoolkit.engine.metrics import MetricAccumulator
from lttoolkit.engine.trainer import Trainer, evaluate_model, train
from lttoolkit.engine.weights import InitReport, load_matching_weights
from lttoolkit.inference import predict  # over lttoolkit.Classifier, which loads through load_model

__all__ = [
    "RunConfig",
    "DataConfig",
    "OptimConfig",
    "TrainConfig",
    "load_config",
    "Trainer",
    "train",
    "evaluate_model",
    "evaluate_checkpoint",
    "load_model",
    "predict",
    "MetricAccumulator",
    "load_matching_weights",
    "InitReport",
]
