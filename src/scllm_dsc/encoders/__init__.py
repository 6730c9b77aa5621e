"""Frozen text encoders (Hugging Face encoder and decoder models) with an on-disk cache."""

from .._constants import DEFAULT_MODEL
from ._cache import EmbeddingCache
from ._encoder import POOLINGS, TextEncoder, clear_encoders, get_encoder, pool
from ._precomputed import default_vectors_spec, shipped_vectors
from ._resolve import resolve_model

__all__ = [
    "DEFAULT_MODEL",
    "POOLINGS",
    "EmbeddingCache",
    "TextEncoder",
    "clear_encoders",
    "default_vectors_spec",
    "get_encoder",
    "pool",
    "resolve_model",
    "shipped_vectors",
]
