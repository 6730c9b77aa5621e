"""``sd.tl.refine_embedding`` and ``sd.tl.transfer_labels``: contrastive refinement of the
gene-text cell embedding and label transfer in the refined space."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scanpy import logging as logg

from .._constants import Key
from .._docs import inject_docs
from .._utils import resolve_adata

if TYPE_CHECKING:
    from anndata import AnnData

REFINED: str = "X_gene_text_refined"
_CHUNK = 8192  # rows per inference / validation block


# --------------------------------------------------------------------------- input checks


def _get_rep(adata: AnnData, use_rep: str, what: str = "adata", hint: str = "") -> np.ndarray:
    """``adata.obsm[use_rep]`` as a finite 2-D float32 array, with clear errors."""
    if use_rep not in adata.obsm:
        raise KeyError(
            f"`{what}.obsm[{use_rep!r}]` not found (available: {list(adata.obsm)}). {hint}"
        )
    X = np.asarray(adata.obsm[use_rep])
    if X.ndim != 2:
        raise ValueError(f"`{what}.obsm[{use_rep!r}]` must be 2-D (cells x dims), got {X.shape}.")
    if X.dtype.kind not in "biuf":
        raise TypeError(f"`{what}.obsm[{use_rep!r}]` has dtype {X.dtype}; expected numbers.")
    X = np.require(X, dtype=np.float32, requirements=["C"])
    if not X.flags.writeable:  # e.g. a memory map: torch wants writable memory
        X = X.copy()
    n_bad = sum(int((~np.isfinite(X[i : i + _CHUNK])).sum()) for i in range(0, len(X), _CHUNK))
    if n_bad:
        raise ValueError(
            f"`{what}.obsm[{use_rep!r}]` has {n_bad} NaN or infinite values; the embedding must "
            "be finite (recompute it, or drop the affected cells)."
        )
    return X


def _label_codes(adata: AnnData, labels, name: str = "labels"):
    """``(codes, categories)`` of ``labels`` (obs column or array); unlabelled cells get -1."""
    if isinstance(labels, str):
        if labels not in adata.obs:
            raise KeyError(
                f"`{name}`={labels!r} is not a column of `adata.obs` "
                f"(columns: {list(adata.obs.columns)})."
            )
        values = adata.obs[labels]
    else:
        values = labels
        if np.ndim(values) != 1 or len(values) != adata.n_obs:
            raise ValueError(
                f"`{name}` must be an `adata.obs` column name or a 1-D array with one entry per "
                f"cell ({adata.n_obs}), got shape {np.shape(values)}."
            )
    categories = None
    if isinstance(values, pd.Series):
        if isinstance(values.dtype, pd.CategoricalDtype):
            categories = list(values.cat.categories)
        values = values.to_numpy()
    series = pd.Series(np.asarray(values, dtype=object))
    missing = series.isna().to_numpy()
    if categories is None:
        categories = list(pd.unique(series[~missing]))
        try:
            categories = sorted(categories)
        except TypeError:  # mixed types: keep the order of appearance
            pass
    lookup = {c: i for i, c in enumerate(categories)}
    codes = np.full(adata.n_obs, -1, dtype=np.int64)
    codes[~missing] = [lookup[v] for v in series[~missing]]
    return codes, categories


def _check_int(name: str, value, minimum: int) -> int:
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


# --------------------------------------------------------------------------- network and losses


def _make_net(n_in: int, n_hidden: int, n_latent: int):
    import torch
    from torch import nn

    from ..nn import MLP

    class _Refiner(nn.Module):
        """Fixed centring and scaling, then :class:`~scllm_dsc.nn.MLP`, L2-normalised."""

        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.zeros(n_in))
            self.register_buffer("scale", torch.ones(()))
            self.body = MLP(n_in, n_latent, n_hidden=n_hidden)
            self.n_latent = n_latent

        def standardise(self, x):
            return (x - self.mean) / self.scale

        def forward(self, z):
            """``z``: standardised (and possibly augmented) input."""
            return torch.nn.functional.normalize(self.body(z))

    return _Refiner()


def _augment(z, noise: float, dropout: float, generator):
    """Multiplicative Gaussian noise N(1, noise) and feature dropout, then rescaled to the
    norm of the clean (standardised) vector."""
    import torch

    out = z
    if noise > 0:
        out = out * (1.0 + noise * torch.randn(z.shape, generator=generator))
    if dropout > 0:
        out = out * (torch.rand(z.shape, generator=generator) >= dropout)
    return out * (z.norm(dim=1, keepdim=True) / out.norm(dim=1, keepdim=True).clamp_min(1e-12))


def _nt_xent(z1, z2, temperature: float):
    """SimCLR NT-Xent: the other view of the same cell is the positive."""
    import torch
    import torch.nn.functional as F

    n = z1.shape[0]
    z = torch.cat([z1, z2])
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool), -1e9)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, target)


def _supcon(z1, z2, y, temperature: float):
    """SupCon (Khosla et al. 2020, L_out): every view with the same label is a positive."""
    import torch

    z = torch.cat([z1, z2])
    y = torch.cat([y, y])
    self_mask = torch.eye(len(y), dtype=torch.bool)
    sim = ((z @ z.T) / temperature).masked_fill(self_mask, -1e9)
    log_prob = (sim - torch.logsumexp(sim, dim=1, keepdim=True)).masked_fill(self_mask, 0.0)
    pos = (y[:, None] == y[None, :]) & ~self_mask  # >= 1 per anchor: its other view
    return -((log_prob * pos).sum(1) / pos.sum(1)).mean()


def _embed(net, X: np.ndarray) -> np.ndarray:
    import torch

    out = np.empty((X.shape[0], net.n_latent), dtype=np.float32)
    with torch.no_grad():
        for i in range(0, X.shape[0], _CHUNK):
            x = torch.nn.functional.normalize(torch.from_numpy(X[i : i + _CHUNK]))
            out[i : i + _CHUNK] = net(net.standardise(x)).numpy()
    return out


# --------------------------------------------------------------------------- refine_embedding


@inject_docs()
def refine_embedding(
    adata: AnnData,
    labels: str | Sequence | np.ndarray | pd.Series | None = None,
    *,
    use_rep: str = Key.X_GENE_TEXT,
    key_added: str = REFINED,
    n_latent: int = 64,
    n_hidden: int = 256,
    n_epochs: int = 100,
    batch_size: int = 256,
    lr: float = 1e-3,
    temperature: float = 0.1,
    noise: float = 0.1,
    dropout: float = 0.2,
    random_state: int | None = 0,
    apply_to: AnnData | Sequence[AnnData] = (),
    mod: str | None = None,
    copy: bool = False,
):
    """Refine the gene-text cell embedding by contrastive learning.

    A small network maps ``adata.obsm[use_rep]`` (by default the expression-weighted
    gene-description embedding of :func:`~scllm_dsc.tl.embed_genes`) to ``n_latent``
    dimensions: the L2-normalised input is centred on the cells' mean and divided by the
    cells' root-mean-square distance to it (statistics of ``adata``, reused for ``apply_to``),
    then passed through ``Linear -> LayerNorm -> ReLU -> Linear``; the output is
    L2-normalised. Centring matters: the gene-text vectors of all cells share one dominant
    direction (cosine similarities close to 1), and the augmentations must act on the
    differences between cells, not on that shared part. The network is trained on
    mini-batches of cells, so memory grows linearly with the number of cells:

    - **self-supervised** (``labels=None``): the SimCLR NT-Xent loss between two augmented
      views of each cell (each feature multiplied by noise drawn from
      :math:`N(1, \\mathrm{{noise}}^2)`, features dropped with probability ``dropout``, then
      rescaled to the norm of the clean vector); the other view of the same cell is the
      positive, all other views in the batch are negatives;
    - **supervised** (``labels`` given): the SupCon loss (Khosla et al., 2020) on the labelled
      cells of each batch (views of cells with the same label are positives) plus the
      self-supervised term on all cells. Cells whose label is missing (``NaN``/``None``) only
      take part in the self-supervised term.

    The trained network is applied to ``adata`` and to every object in ``apply_to`` (for
    example a query to annotate with :func:`~scllm_dsc.tl.transfer_labels`). Everything is
    computed before anything is written, so a failing call leaves the inputs untouched.

    Parameters
    ----------
    {adata}
    labels
        ``None`` (self-supervised), a column of ``adata.obs``, or an array with one label per
        cell. Missing values mark unlabelled cells.
    use_rep
        Key of ``adata.obsm`` holding the embedding to refine.
    key_added
        Key of ``adata.obsm`` (and of ``adata.uns``) for the result.
    n_latent
        Width of the refined embedding.
    n_hidden
        Width of the hidden layer.
    n_epochs
        Passes over all cells.
    batch_size
        Cells per mini-batch (at least 2). Cells are split into equally sized batches of at
        most this size, so no batch is much smaller than the others.
    lr
        Learning rate of the Adam optimiser.
    temperature
        Temperature of the contrastive losses.
    noise
        Standard deviation of the multiplicative Gaussian noise of the augmentation.
    dropout
        Feature dropout rate of the augmentation, in ``[0, 1)``.
    {random_state}
        The same seed on CPU gives identical embeddings. The global torch random state is left
        as it was.
    apply_to
        Further :class:`~anndata.AnnData` objects (or a single one) to embed with the trained
        network. Each needs ``obsm[use_rep]`` of the same width; ``obsm[key_added]`` is
        written to them in place, also with ``copy=True``.
    {mod}
    {copy}

    Returns
    -------
    ``None``, or a copy of ``adata`` with ``copy=True``. Writes

    ``adata.obsm[key_added]``
        The refined embedding (cells x ``n_latent``, float32, rows L2-normalised); also in
        each object of ``apply_to``.
    ``adata.uns[key_added]``
        ``"params"`` (the arguments, the input width, the number of labelled cells and
        classes) and ``"loss_history"`` (mean training loss per epoch, a list of floats).
    """
    import torch

    adata = resolve_adata(adata, mod)
    others = [apply_to] if not isinstance(apply_to, Sequence) else list(apply_to)
    others = [resolve_adata(o) for o in others]

    # --- checks (nothing is written before the end)
    hint = (
        f"Run `sd.tl.embed_genes(adata)` first (it writes `obsm[{Key.X_GENE_TEXT!r}]`), or pass "
        "`use_rep=` with the key of an existing embedding."
    )
    X = _get_rep(adata, use_rep, hint=hint)
    if X.shape[0] < 2:
        raise ValueError(
            f"refine_embedding needs at least 2 cells for contrastive learning, got {X.shape[0]}."
        )
    n_latent = _check_int("n_latent", n_latent, 1)
    n_hidden = _check_int("n_hidden", n_hidden, 1)
    n_epochs = _check_int("n_epochs", n_epochs, 1)
    batch_size = _check_int("batch_size", batch_size, 2)
    for name, value in (("lr", lr), ("temperature", temperature)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"`{name}` must be a positive number, got {value!r}.")
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"`noise` must be >= 0, got {noise!r}.")
    if not 0 <= dropout < 1:
        raise ValueError(f"`dropout` must lie in [0, 1), got {dropout!r}.")
    X_others = []
    for i, other in enumerate(others):
        Xo = _get_rep(other, use_rep, what=f"apply_to[{i}]", hint=hint)
        if Xo.shape[1] != X.shape[1]:
            raise ValueError(
                f"`apply_to[{i}].obsm[{use_rep!r}]` has {Xo.shape[1]} columns but "
                f"`adata.obsm[{use_rep!r}]` has {X.shape[1]}; both must come from the same "
                "gene-text embedding (same text encoder)."
            )
        X_others.append(Xo)
    supervised = labels is not None
    if supervised:
        codes, categories = _label_codes(adata, labels)
        n_classes = len(np.unique(codes[codes >= 0]))
        if n_classes < 2:
            raise ValueError(
                f"Supervised refinement needs at least 2 distinct labels among the labelled "
                f"cells, got {n_classes}. Pass `labels=None` for self-supervised refinement."
            )
    else:
        codes, n_classes = np.full(X.shape[0], -1, dtype=np.int64), 0
    n_labelled = int((codes >= 0).sum())

    # --- training
    if random_state is None:
        random_state = int(np.random.default_rng().integers(2**31))
    rng = np.random.default_rng(random_state)
    gen = torch.Generator().manual_seed(int(random_state))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(random_state))
        net = _make_net(X.shape[1], n_hidden, n_latent)
    Xn = torch.nn.functional.normalize(torch.from_numpy(X))
    net.mean.copy_(Xn.mean(0))
    # one global scale: the root-mean-square distance of the cells to their mean
    net.scale.fill_(max(float((Xn - net.mean).pow(2).sum(1).mean().sqrt()), 1e-12))
    Zs = net.standardise(Xn)
    y_all = torch.from_numpy(codes)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n_batches = max(1, math.ceil(X.shape[0] / batch_size))
    mode = "supervised (SupCon + NT-Xent)" if supervised else "self-supervised (NT-Xent)"
    logg.info(
        f"refining `obsm[{use_rep!r}]` ({X.shape[0]} cells, {X.shape[1]} dims, "
        f"{n_labelled} labelled) {mode}: {n_epochs} epochs of {n_batches} batches"
    )
    history: list[float] = []
    net.train()
    for _ in range(n_epochs):
        total = 0.0
        for idx in np.array_split(rng.permutation(X.shape[0]), n_batches):
            idx_t = torch.from_numpy(idx)
            x = Zs[idx_t]
            z1 = net(_augment(x, noise, dropout, gen))
            z2 = net(_augment(x, noise, dropout, gen))
            loss = _nt_xent(z1, z2, temperature)
            if supervised:
                y = y_all[idx_t]
                lab = y >= 0
                if int(lab.sum()) >= 2:
                    loss = loss + _supcon(z1[lab], z2[lab], y[lab], temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        history.append(total / n_batches)
    net.eval()
    Z = _embed(net, X)
    Z_others = [_embed(net, Xo) for Xo in X_others]

    # --- write everything at the end
    if copy:
        adata = adata.copy()
    params = {
        "use_rep": use_rep,
        "labels": labels if isinstance(labels, str) else ("<array>" if supervised else None),
        "supervised": bool(supervised),
        "n_labelled": n_labelled,
        "n_classes": int(n_classes),
        "n_input": int(X.shape[1]),
        "n_latent": n_latent,
        "n_hidden": n_hidden,
        "n_epochs": n_epochs,
        "batch_size": batch_size,
        "lr": float(lr),
        "temperature": float(temperature),
        "noise": float(noise),
        "dropout": float(dropout),
        "random_state": int(random_state),
    }
    params = {k: v for k, v in params.items() if v is not None}  # h5ad cannot store None
    adata.obsm[key_added] = Z
    adata.uns[key_added] = {"params": params, "loss_history": history}
    for other, Zo in zip(others, Z_others, strict=True):
        other.obsm[key_added] = Zo
    logg.info(
        f"finished: refined embedding in `obsm[{key_added!r}]`"
        + (f" of adata and {len(others)} more object(s)" if others else "")
    )
    return adata if copy else None


# --------------------------------------------------------------------------- transfer_labels


@inject_docs()
def transfer_labels(
    reference: AnnData,
    query: AnnData,
    key: str,
    *,
    use_rep: str = REFINED,
    n_neighbors: int = 15,
    key_added: str | None = None,
    copy: bool = False,
):
    """Annotate query cells by distance-weighted kNN voting against labelled reference cells.

    For each query cell, the ``n_neighbors`` nearest labelled reference cells in
    ``obsm[use_rep]`` (cosine distance) vote for their label with weight ``1 / distance``
    (:class:`~sklearn.neighbors.KNeighborsClassifier` with ``weights="distance"``, queried in
    blocks of cells); the label with the largest total weight wins, and a reference cell at
    distance 0 decides alone. Reference cells
    whose label is missing are ignored. Typically run after
    :func:`~scllm_dsc.tl.refine_embedding` on the reference with ``apply_to=[query]``.

    Parameters
    ----------
    reference
        Annotated reference cells with ``obs[key]`` and ``obsm[use_rep]``.
    query
        Cells to annotate, with ``obsm[use_rep]`` of the same width.
    key
        Column of ``reference.obs`` with the labels to transfer.
    use_rep
        Key of ``obsm`` holding the embedding of both objects.
    n_neighbors
        Number of reference neighbours voting; capped at the number of labelled reference
        cells.
    key_added
        Column of ``query.obs`` for the labels; defaults to ``f"{{key}}_transferred"``.
    copy
        Return a modified copy of ``query`` instead of writing to it.

    Returns
    -------
    ``None``, or a copy of ``query`` with ``copy=True``. Writes

    ``query.obs[key_added]``
        Transferred labels, categorical with the categories of ``reference.obs[key]``.
    ``query.obs[f"{{key_added}}_confidence"]``
        Fraction of the weighted votes that went to the winning label, in ``[0, 1]``.
    """
    from sklearn.neighbors import KNeighborsClassifier

    reference, query = resolve_adata(reference), resolve_adata(query)
    if not isinstance(key, str) or key not in reference.obs:
        raise KeyError(
            f"`reference.obs` has no column {key!r} (columns: {list(reference.obs.columns)})."
        )
    n_neighbors = _check_int("n_neighbors", n_neighbors, 1)
    hint = (
        "Run `sd.tl.refine_embedding(reference, ..., apply_to=[query])` first, or pass `use_rep=`"
        " with a key both objects have."
        if use_rep == REFINED
        else "Compute it for both objects, or pass `use_rep=` with a key both objects have."
    )
    R = _get_rep(reference, use_rep, what="reference", hint=hint)
    Q = _get_rep(query, use_rep, what="query", hint=hint)
    if R.shape[1] != Q.shape[1]:
        raise ValueError(
            f"`reference.obsm[{use_rep!r}]` has {R.shape[1]} columns but `query.obsm"
            f"[{use_rep!r}]` has {Q.shape[1]}; embed both with the same model (e.g. "
            "`sd.tl.refine_embedding(reference, ..., apply_to=[query])`)."
        )
    codes, categories = _label_codes(reference, key, name="key")
    labelled = np.flatnonzero(codes >= 0)
    if labelled.size == 0:
        raise ValueError(f"`reference.obs[{key!r}]` has no labelled cells (all missing).")
    if n_neighbors > labelled.size:
        logg.warning(
            f"`n_neighbors`={n_neighbors} exceeds the {labelled.size} labelled reference "
            f"cells; using {labelled.size}."
        )
        n_neighbors = int(labelled.size)
    key_added = key_added or f"{key}_transferred"

    knn = KNeighborsClassifier(
        n_neighbors=n_neighbors, weights="distance", metric="cosine", algorithm="brute"
    ).fit(R[labelled], codes[labelled])
    winner = np.zeros(Q.shape[0], dtype=np.int64)
    confidence = np.zeros(Q.shape[0], dtype=np.float64)
    for start in range(0, Q.shape[0], _CHUNK):  # chunks bound the memory of the distances
        votes = knn.predict_proba(Q[start : start + _CHUNK])  # columns: knn.classes_
        winner[start : start + _CHUNK] = knn.classes_[votes.argmax(1)]
        confidence[start : start + _CHUNK] = votes.max(1)

    if copy:
        query = query.copy()
    query.obs[key_added] = pd.Categorical.from_codes(winner, categories=categories)
    query.obs[f"{key_added}_confidence"] = np.clip(confidence, 0.0, 1.0)
    logg.info(
        f"transferred `{key}` to {Q.shape[0]} query cells from {labelled.size} reference cells "
        f"({n_neighbors} neighbours): `query.obs[{key_added!r}]`"
    )
    return query if copy else None
