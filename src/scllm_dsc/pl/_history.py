"""``sd.pl.training_history``: every loss term per epoch, phases marked."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import Key
from ._utils import MissingKeyError, _cluster_hint, finish, new_grid

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PHASE_COLUMNS = ("phase", "stage")
PHASE_COLORS = {"pretrain": "#e8e8e8", "joint": "#dbe9f6"}
_SPLIT = re.compile(r"^(?:(train|validation|val|test)_)?(.+?)(?:_(train|validation|val|test))?$")


def _to_series(name: str, value) -> dict[str, pd.Series]:
    if isinstance(value, pd.DataFrame):
        if value.shape[1] == 1:
            return {name: value.iloc[:, 0]}
        return {(c if str(c) == name else f"{name}/{c}"): value[c] for c in value.columns}
    if isinstance(value, pd.Series):
        return {name: value}
    arr = np.asarray(value)
    if arr.ndim == 1 and arr.size > 0:
        return {name: pd.Series(arr)}
    return {}


def history_frame(history) -> pd.DataFrame:
    """Turn a training history into one :class:`~pandas.DataFrame`, one row per epoch.

    Accepts a DataFrame, a mapping of per-epoch lists / arrays / Series, a scvi-tools style
    mapping of one-column DataFrames indexed by epoch, or a mapping of phase name to one of
    those (phases are then concatenated in order and recorded in a ``"phase"`` column).
    An ``"epoch"`` column becomes the index.
    """
    if isinstance(history, pd.DataFrame):
        df = history.copy()
    elif isinstance(history, Mapping):
        if history and all(isinstance(v, Mapping) for v in history.values()):
            parts = []
            for phase, sub in history.items():
                part = history_frame(sub).reset_index(drop=True)
                part["phase"] = str(phase)
                parts.append(part)
            df = pd.concat(parts, ignore_index=True)
        else:
            series: dict[str, pd.Series] = {}
            for name, value in history.items():
                series.update(_to_series(str(name), value))
            if not series:
                raise ValueError("The training history holds no per-epoch values.")
            lengths = {len(s) for s in series.values()}
            plain = all(isinstance(s.index, pd.RangeIndex) for s in series.values())
            if plain and len(lengths) > 1:
                # lists of different lengths: align at the start
                series = {k: s.reset_index(drop=True) for k, s in series.items()}
            df = pd.concat(series, axis=1)
    else:
        raise TypeError(
            "Expected an AnnData, a model with `.history`, a mapping or a DataFrame, "
            f"got {type(history).__name__}."
        )
    if "epoch" in df.columns:
        df = df.set_index("epoch")
    df.index.name = "epoch"
    return df


def _get_history(data, key: str) -> tuple[pd.DataFrame, Mapping]:
    from anndata import AnnData

    params: Mapping = {}
    if isinstance(data, AnnData):
        entry = data.uns.get(key)
        if not isinstance(entry, Mapping) or "history" not in entry:
            raise MissingKeyError(
                f"`adata.uns[{key!r}]['history']` not found: {_cluster_hint(key)}."
            )
        history = entry["history"]
        params = entry.get("params", {}) or {}
    elif hasattr(data, "history") and not isinstance(data, Mapping | pd.DataFrame):
        history = data.history
        if history is None or len(history) == 0:
            raise ValueError("The model has no training history: train it first.")
    else:
        history = data
    return history_frame(history), params


def _split_name(name: str) -> tuple[str, str]:
    base = re.sub(r"_(epoch|step)$", "", name)
    m = _SPLIT.match(base)
    split = (m.group(1) or m.group(3) or "train") if m else "train"
    term = m.group(2) if m else base
    return term, {"val": "validation"}.get(split, split)


def _phase_runs(phase: pd.Series) -> list[tuple[str, Any, Any]]:
    runs = []
    values = phase.astype(str).to_numpy()
    idx = phase.index.to_numpy()
    start = 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            runs.append((values[start], idx[start], idx[i - 1]))
            start = i
    return runs


def training_history(
    data,
    key: str = Key.CLUSTER,
    *,
    terms: Sequence[str] | None = None,
    log: bool = False,
    ncols: int = 4,
    show: bool | None = None,
    save: bool | str | None = None,
    return_fig: bool | None = None,
) -> Figure | list | None:
    """Plot every loss term of the training per epoch, with the training phases marked.

    One panel per loss term. Training and validation values of the same term
    (``train_<term>``/``validation_<term>`` or ``<term>_train``/``<term>_validation``) share a
    panel. Pre-training and joint training are shaded, with a dashed line where the phase
    changes; phases come from a ``"phase"`` entry of the history (one value per epoch: a name,
    or the ``phase_train`` metric :class:`~scllm_dsc.model.SCLLMDSC` logs, 0 in pre-training
    and 1 in joint training).

    Parameters
    ----------
    data
        An :class:`~anndata.AnnData` clustered by :func:`scllm_dsc.tl.cluster` (reads
        ``adata.uns[key]["history"]``), a trained :class:`scllm_dsc.model.SCLLMDSC` (or any
        object with a scvi-tools style ``.history``), or the history itself (a mapping of
        per-epoch lists or a :class:`~pandas.DataFrame`).
    key
        ``key_added`` of :func:`scllm_dsc.tl.cluster` (AnnData input only).
    terms
        Loss terms to show (default: all numeric entries).
    log
        Logarithmic y axis (only for terms that stay positive).
    ncols
        Panels per row.
    show
        Show the plot (default :attr:`scanpy.settings.autoshow`).
    save
        Save the figure like :mod:`scanpy.pl` does (``True`` or a file-name suffix).
    return_fig
        Return the :class:`~matplotlib.figure.Figure`.

    Returns
    -------
    The figure if ``return_fig``; the list of axes if ``show=False``; else ``None``.
    """
    df, _ = _get_history(data, key)

    phase_cols = [c for c in df.columns if _split_name(str(c))[0] in PHASE_COLUMNS]
    phase = df[phase_cols[0]] if phase_cols else None
    if phase is not None and pd.api.types.is_numeric_dtype(phase):
        # the model logs the phase as a metric: 0 in pre-training, 1 in joint training
        joint = phase.to_numpy(dtype=float) > 0.5
        phase = pd.Series(np.where(joint, "joint", "pretrain"), index=df.index)

    numeric = df.drop(columns=phase_cols)
    numeric = numeric.apply(pd.to_numeric, errors="coerce")
    numeric = numeric.loc[:, numeric.notna().any(axis=0)]

    panels: dict[str, dict[str, pd.Series]] = {}
    for col in numeric.columns:
        term, split = _split_name(str(col))
        panels.setdefault(term, {})[split] = numeric[col]
    if terms is not None:
        missing = [t for t in terms if t not in panels]
        if missing:
            raise KeyError(f"Unknown loss term(s) {missing}; available: {list(panels)}.")
        panels = {t: panels[t] for t in terms}
    if not panels:
        raise ValueError("The training history holds no numeric loss values.")

    fig, axes = new_grid(len(panels), ncols, (3.2, 2.6), wspace=0.35, hspace=0.6)
    runs = _phase_runs(phase) if phase is not None else []
    for n, (ax, (term, lines)) in enumerate(zip(axes, panels.items(), strict=True)):
        for split, s in lines.items():
            ax.plot(s.index.to_numpy(), s.to_numpy(dtype=float), lw=1.2, label=split)
        seen = set()
        for i, (name, first, last) in enumerate(runs):
            label = name if name not in seen else None
            seen.add(name)
            ax.axvspan(
                first - 0.5, last + 0.5, color=PHASE_COLORS.get(name, "#f3e6d0"), alpha=0.6,
                lw=0, zorder=0, label=label,
            )
            if i > 0:
                ax.axvline(first - 0.5, color="k", ls="--", lw=0.8)
        values = np.concatenate([s.to_numpy(dtype=float) for s in lines.values()])
        if log and np.nanmin(values) > 0:
            ax.set_yscale("log")
        ax.set_title(term)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.grid(False)
        if len(lines) > 1 or (n == 0 and runs):  # phases are explained once, on the first panel
            ax.legend(frameon=False, fontsize="x-small")
    return finish(fig, axes, "training_history", show=show, save=save, return_fig=return_fig)
