"""Training errors."""

from __future__ import annotations

from autocompress.errors import UserError


class TrainingError(UserError, RuntimeError):
    """Training could not run or did not produce a usable model."""


class DivergenceError(TrainingError):
    """The loss became NaN or infinite. ``step`` (0-based) and ``loss`` say where and what."""

    def __init__(self, step: int, loss: float, hint: str = ""):
        self.step = int(step)
        self.loss = float(loss)
        msg = f"training diverged at step {self.step}: loss = {self.loss}"
        super().__init__(msg + (f" ({hint})" if hint else " (lower the learning rate or add grad_clip)"))

    def __reduce__(self):  # keep step/loss when pickled across processes (Ray workers)
        return (type(self), (self.step, self.loss))
