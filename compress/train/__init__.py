"""Training: the fine-tuning loop, LR schedules, BN re-calibration and checkpoint saving.

>>> result = fit(model, data.loader("train", 128), FinetuneSpec(epochs=1, lr=0.02))
>>> save_checkpoint(out / "model.pt", model, {"model": "resnet20", ...})
"""

from compress.train._bn import bn_recalibrate
from compress.train._checkpoint import save_checkpoint
from compress.train._errors import DivergenceError, TrainingError
from compress.train._loop import TrainResult, build_optimizer, fit, param_groups, total_steps
from compress.train._schedule import SCHEDULES, lr_factor

__all__ = ["SCHEDULES", "DivergenceError", "TrainResult", "TrainingError", "bn_recalibrate", "build_optimizer",
           "fit", "lr_factor", "param_groups", "save_checkpoint", "total_steps"]
