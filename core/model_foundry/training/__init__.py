"""Training: the loop behind ``foundry train`` (:func:`train`), its checkpoints and reports.

Importing this package imports torch; ``model_foundry`` itself never imports it.
"""

from model_foundry.training.loop import StepContext, TrainResult, default_step, train
from model_foundry.training.rundir import FINAL_DIR, latest_checkpoint, list_checkpoints

__all__ = ["FINAL_DIR", "StepContext", "TrainResult", "default_step", "latest_checkpoint", "list_checkpoints", "train"]
