"""Training loop, evaluation and CTR metrics."""

from crossrec.train.loop import TrainConfig, TrainEvent, TrainResult, evaluate, predict, train
from crossrec.train.metrics import Metrics, auc, calibration, compute, log_loss, normalized_entropy

__all__ = ["Metrics", "TrainConfig", "TrainEvent", "TrainResult", "auc", "calibration", "compute", "evaluate",
           "log_loss", "normalized_entropy", "predict", "train"]
