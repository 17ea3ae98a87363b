"""Methods with momentum (EMA) copies of their networks: BYOL's target, DINO's teacher.

In the style of solo-learn's ``BaseMomentumMethod``: the copies are updated in ``on_train_batch_end``,
once per optimiser step (after the online network moved), never per micro-batch. With
``trainer.accumulate_grad_batches = k`` a step takes k batches, and updating per batch would pull the copy
k times as far towards a network that has not changed in between.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

from lightly.models.utils import update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from radio_curation.ssl.base import SSLModule

#: Checkpoint entry: the last optimiser step the momentum copies were updated for.
MOMENTUM_STEP_KEY = "momentum_updated_at_step"


class MomentumMethod(SSLModule):
    """An :class:`SSLModule` whose momentum copies follow the online networks once per optimiser step.

    The EMA factor follows a cosine schedule from ``momentum[0]`` at the first optimiser step to
    ``momentum[1]`` at the last (``self.momentum``, set by the subclass).
    """

    momentum: tuple[float, float]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stepped = 0

    @abstractmethod
    def momentum_pairs(self) -> Sequence[tuple[nn.Module, nn.Module]]:
        """``(online, momentum copy)`` pairs to update."""

    def current_momentum(self, step: int) -> float:
        """EMA factor of the update after optimiser step ``step`` (1-based)."""
        return float(cosine_schedule(step - 1, self.total_steps, *self.momentum))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[MOMENTUM_STEP_KEY] = self._stepped

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Checkpoints that predate the key: their copies are taken as up to date with their step.
        self._stepped = int(checkpoint.get(MOMENTUM_STEP_KEY, checkpoint["global_step"]))

    def on_train_start(self) -> None:
        step = int(self.trainer.global_step)
        if not self.trainer.ckpt_path:
            self._stepped = step
        elif self._stepped < step:
            # Lightning saves step checkpoints in its callbacks' on_train_batch_end, before this module's:
            # the copies lag that step's update, done now as the uninterrupted run did then.
            self._update(step)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = int(self.trainer.global_step)
        if step <= self._stepped:
            return  # a micro-batch of an accumulated step: the optimiser has not stepped yet
        self.log("train/momentum", self._update(step), on_step=True, on_epoch=False)

    def _update(self, step: int) -> float:
        """Move the copies towards the online networks after optimiser step ``step``; the EMA factor used."""
        m = self.current_momentum(step)
        for online, copy in self.momentum_pairs():
            update_momentum(online, copy, m)
        self._stepped = step
        return m
