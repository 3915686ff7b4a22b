"""Training: the loop behind ``foundry train`` (:func:`train`), its checkpoints and reports.

Importing this package imports torch; ``model_foundry`` itself never imports it.
"""

from model_foundry.training.loop import (
    FINAL_DIR,
    StepContext,
    TrainResult,
    default_step,
    latest_checkpoint,
    list_checkpoints,
    train,
)

__all__ = ["FINAL_DIR", "StepContext", "TrainResult", "default_step", "latest_checkpoint", "list_checkpoints", "train"]
