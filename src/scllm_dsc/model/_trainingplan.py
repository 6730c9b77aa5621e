"""Lightning training plan with the periodic refresh of the clustering target."""

from __future__ import annotations

from collections.abc import Callable

from scvi.train import TrainingPlan


class SCLLMDSCTrainingPlan(TrainingPlan):
    """:class:`scvi.train.TrainingPlan` with an Adam optimiser (lr 1e-3) and a target refresh.

    Parameters
    ----------
    module
        The :class:`~scllm_dsc.module.SCLLMDSCModule`.
    refresh_target
        Called at the start of every ``update_interval``-th epoch (``epoch % update_interval
        == 0``, for the whole run) to recompute the clustering target over all cells.
    update_interval
        Epochs between target refreshes.
    lr, weight_decay, eps
        Adam parameters.
    **kwargs
        Passed to :class:`scvi.train.TrainingPlan`.
    """

    def __init__(
        self,
        module,
        *,
        refresh_target: Callable[[], None] | None = None,
        update_interval: int = 1,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        eps: float = 1e-8,
        **kwargs,
    ):
        super().__init__(module, lr=lr, weight_decay=weight_decay, eps=eps, **kwargs)
        if update_interval < 1:
            raise ValueError(f"`update_interval` must be >= 1, got {update_interval}.")
        self.refresh_target = refresh_target
        self.update_interval = int(update_interval)

    def on_train_epoch_start(self) -> None:
        if self.refresh_target is not None and self.current_epoch % self.update_interval == 0:
            self.refresh_target()
