"""Training output a user wants: one named progress bar per phase, nothing else.

scvi-tools and Lightning log set-up details at INFO level (``Generating sequential column
names``, ``GPU available: False``, a litlogger tip, ``Seed set to 0``) and emit warnings that
are about their internals, not the user's data. Inside :func:`quiet_training` those are
silenced unless scanpy's verbosity is ``debug`` or higher; everything else (our own logging,
real warnings about the data) still goes through.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from scvi.train._progress import ProgressBar

# Loggers whose INFO lines are about the libraries' own set-up.
_LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "scvi.data.fields")
# Warnings about library internals or about the size of a tiny training set, never actionable.
_LIBRARY_WARNINGS = (
    r".*LeafSpec.*",
    r".*log_every_n_steps.*",
    r".*does not have many workers.*",
    r".*IProgress not found.*",
    r".*sequential column names.*",
)


def _debugging() -> bool:
    import scanpy as sc

    return int(sc.settings.verbosity) >= 4


def show_progress() -> bool:
    """Progress bars follow scanpy's verbosity: hidden only at ``error`` (0)."""
    import scanpy as sc

    return int(sc.settings.verbosity) >= 1


@contextmanager
def quiet_training() -> Iterator[None]:
    """Silence scvi-tools' and Lightning's set-up chatter for the duration of the block."""
    if _debugging():
        yield
        return
    saved = {}
    for name in _LIBRARY_LOGGERS:
        lg = logging.getLogger(name)
        saved[name] = lg.level
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in _LIBRARY_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            try:
                from tqdm import TqdmWarning

                warnings.filterwarnings("ignore", category=TqdmWarning)
            except ImportError:  # pragma: no cover - tqdm is a dependency
                pass
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


class StageProgressBar(ProgressBar):
    """scvi-tools' per-epoch progress bar, labelled with the training stage.

    Parameters
    ----------
    stage
        Shown before the epoch counter, e.g. ``"pre-training"`` or ``"joint training"``.
    """

    def __init__(self, stage: str):
        super().__init__(refresh_rate=1)
        self.stage = stage

    def init_train_tqdm(self, trainer):  # noqa: D102 - Lightning hook
        from tqdm.auto import tqdm

        # stderr, like scanpy's log and the embedding bars: stdout stays the caller's
        return tqdm(
            total=trainer.max_epochs, desc=self.stage, disable=self.is_disabled, file=sys.stderr
        )

    def on_train_epoch_start(self, trainer, pl_module):  # noqa: D102 - Lightning hook
        # skip scvi's handler (it would write an unnamed "Epoch N/M" first)
        super(ProgressBar, self).on_train_epoch_start(trainer, pl_module)
        if self.is_enabled:
            epoch = trainer.current_epoch + 1
            self.main_progress_bar.set_description(
                f"{self.stage}: epoch {epoch}/{trainer.max_epochs}"
            )


def trainer_progress_kwargs(stage: str, trainer_kwargs: dict, n_batches: int) -> dict:
    """Trainer arguments for a named, quiet phase (user-given arguments win)."""
    out = dict(trainer_kwargs)
    enabled = out.pop("enable_progress_bar", show_progress())
    callbacks = list(out.pop("callbacks", None) or [])
    if enabled and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(StageProgressBar(stage))
    out["callbacks"] = callbacks
    out["enable_progress_bar"] = bool(enabled)
    out["simple_progress_bar"] = False  # our bar replaces scvi's unnamed one
    out.setdefault("log_every_n_steps", max(1, min(10, n_batches)))
    out.setdefault("enable_model_summary", False)
    return out
