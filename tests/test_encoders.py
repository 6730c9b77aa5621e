"""Text encoders: pooling, chunking, caching, model resolution."""

from __future__ import annotations

import math
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_models import tiny_bert, tiny_gpt2  # noqa: E402

from scllm_dsc.encoders import (  # noqa: E402
    DEFAULT_MODEL,
    EmbeddingCache,
    TextEncoder,
    get_encoder,
    resolve_model,
)

TEXTS = [
    "CD3E: CD3 epsilon subunit of T-cell receptor complex. Part of the T-cell receptor.",
    "CD8A: CD8 subunit alpha. A cell surface glycoprotein on cytotoxic T cells.",
    "INS: insulin. A peptide hormone secreted by pancreatic beta cells.",
    "GCG: glucagon. A pancreatic hormone that raises blood glucose.",
]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    return TextEncoder(cache=tmp_path_factory.mktemp("minilm_cache"))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return tiny_gpt2(tmp_path_factory.mktemp("gpt2") / "tiny-gpt2")


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")


# -- the real default model ------------------------------------------------------------------
def test_default_model_resolves_to_bundled_folder():
    r = resolve_model(DEFAULT_MODEL)
    assert r.local and (Path(r.source) / "config.json").exists()
    assert r.name == DEFAULT_MODEL


def test_minilm_shape_norm_similarity(minilm):
    X = minilm.encode(TEXTS, show_progress=False)
    assert X.shape == (4, 384) and X.dtype == np.float32
    assert minilm.dim == 384 and minilm.max_length == 256 and minilm.pooling == "mean"
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    S = X @ X.T
    assert S[0, 1] > S[0, 2] and S[0, 1] > S[0, 3]  # T-cell genes together
    assert S[2, 3] > S[2, 0] and S[2, 3] > S[2, 1]  # pancreatic hormones together


def test_minilm_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(resolve_model(DEFAULT_MODEL).source, device="cpu")
    expected = ref.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(minilm.encode(TEXTS, show_progress=False), expected, atol=1e-4)


def test_order_restored_and_duplicates(tmp_path):
    enc = TextEncoder(cache=False, batch_size=2)
    texts = [TEXTS[3], "short", TEXTS[0], "short", TEXTS[1]]
    X = enc.encode(texts, show_progress=False)
    for t, x in zip(texts, X, strict=True):
        np.testing.assert_allclose(enc.encode([t], show_progress=False)[0], x, atol=1e-5)
    np.testing.assert_array_equal(X[1], X[3])


def test_cache_hit_is_identical_and_does_not_load_model(minilm, tmp_path):
    X = minilm.encode(TEXTS, show_progress=False)
    again = TextEncoder(cache=minilm._get_cache().path.parent)
    Y = again.encode(TEXTS[::-1], show_progress=False)
    assert again.model is None  # served from the cache, model never loaded
    np.testing.assert_array_equal(Y, X[::-1])
    L = minilm.encode_long(TEXTS[:2], show_progress=False)
    L2 = again.encode_long(TEXTS[:2], show_progress=False)
    assert again.model is None
    np.testing.assert_array_equal(L, L2)


def test_cache_depends_on_max_length(minilm, tmp_path):
    short = TextEncoder(cache=minilm._get_cache().path.parent, max_length=8)
    X = short.encode(TEXTS[:1], show_progress=False)
    assert short.model is not None  # a different max_length is a different cache entry
    assert not np.allclose(X, minilm.encode(TEXTS[:1], show_progress=False))


def test_encode_long_equals_manual_chunk_average(minilm):
    import torch

    text = " ".join(["RPL13A RPS2 CD74 MALAT1 B2M HLA-DRA LTB TMSB4X"] * 40)
    tok, model = minilm._load()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    width = minilm.max_length - 2
    assert len(ids) > 2 * width  # at least 3 chunks
    n = math.ceil(len(ids) / width)
    vecs = []
    for part in np.array_split(np.asarray(ids), n):
        inp = torch.tensor([[tok.cls_token_id, *part.tolist(), tok.sep_token_id]])
        with torch.no_grad():
            h = model(input_ids=inp, attention_mask=torch.ones_like(inp)).last_hidden_state[0]
        v = h.mean(0).numpy()
        vecs.append(v / np.linalg.norm(v))
    expected = np.mean(vecs, 0)
    expected /= np.linalg.norm(expected)
    got = minilm.encode_long([text, TEXTS[0]], show_progress=False)
    np.testing.assert_allclose(got[0], expected, atol=1e-5)
    assert len(minilm.chunk_ids(text)) == n
    assert all(len(c) <= minilm.max_length for c in minilm.chunk_ids(text))
    # a text that fits is embedded exactly as by encode()
    np.testing.assert_allclose(got[1], minilm.encode([TEXTS[0]], show_progress=False)[0], atol=1e-6)
    # truncating encode differs from the chunk average
    assert not np.allclose(minilm.encode([text], show_progress=False)[0], got[0], atol=1e-3)


# -- tiny random models ------------------------------------------------------------------------
DEC_TEXTS = ["the cell", "a gene binds insulin receptor of the b cell", "immune", "t cell kinase"]


def _manual(folder, texts, how):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    out = []
    for t in texts:  # one text at a time: no padding at all
        ids = torch.tensor([tok(t)["input_ids"]])
        with torch.no_grad():
            h = model(input_ids=ids).last_hidden_state[0]
        v = (h[-1] if how == "last" else h.mean(0)).numpy()
        out.append(v / np.linalg.norm(v))
    return np.stack(out)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("how", ["last", "mean"])
def test_decoder_pooling_matches_manual(gpt2_dir, side, how):
    enc = TextEncoder(gpt2_dir, cache=False, pooling=None if how == "last" else how, batch_size=4)
    assert enc.is_decoder and enc.pooling == how
    enc.tokenizer.padding_side = side
    got = enc.encode(DEC_TEXTS, show_progress=False)
    np.testing.assert_allclose(got, _manual(gpt2_dir, DEC_TEXTS, how), atol=1e-5)


def test_decoder_without_pad_token_gets_one(tmp_path):
    from transformers import AutoTokenizer

    folder = tiny_gpt2(tmp_path / "nopad")
    tok = AutoTokenizer.from_pretrained(folder)
    tok.pad_token = None
    tok.eos_token = "[EOS]"
    tok.save_pretrained(folder)
    enc = TextEncoder(folder, cache=False)
    X = enc.encode(DEC_TEXTS, show_progress=False)
    assert enc.tokenizer.pad_token_id is not None
    np.testing.assert_allclose(X, _manual(folder, DEC_TEXTS, "last"), atol=1e-5)


def test_encoder_mean_pooling_matches_manual(bert_dir):
    enc = TextEncoder(bert_dir, cache=False, batch_size=3)
    assert not enc.is_decoder and enc.pooling == "mean" and enc.dim == 32
    assert enc.max_length == 64
    np.testing.assert_allclose(
        enc.encode(DEC_TEXTS, show_progress=False), _manual(bert_dir, DEC_TEXTS, "mean"), atol=1e-5
    )
    assert enc._special_template() == ([2], [3])


def test_tiny_bert_long_text_chunks(bert_dir):
    enc = TextEncoder(bert_dir, cache=False, max_length=8)
    text = "the cell is a b cell and the gene binds insulin receptor of the t cell"
    chunks = enc.chunk_ids(text)
    assert len(chunks) == math.ceil(16 / 6)
    assert all(c[0] == 2 and c[-1] == 3 and len(c) <= 8 for c in chunks)
    X = enc.encode_long([text], show_progress=False)
    parts = [enc._embed_ids([c], False)[0] for c in chunks]
    parts = [p / np.linalg.norm(p) for p in parts]
    expected = np.mean(parts, 0)
    np.testing.assert_allclose(X[0], expected / np.linalg.norm(expected), atol=1e-5)


def test_cls_pooling_and_bad_pooling(bert_dir):
    enc = TextEncoder(bert_dir, cache=False, pooling="cls")
    X = enc.encode(DEC_TEXTS[:2], show_progress=False)
    assert X.shape == (2, 32)
    with pytest.raises(ValueError, match="pooling"):
        TextEncoder(bert_dir, pooling="median")


def test_sentence_transformers_pooling_config_is_read(bert_dir, tmp_path):
    import json
    import shutil

    folder = tmp_path / "st"
    shutil.copytree(bert_dir, folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"},
    ]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16}))
    enc = TextEncoder(folder, cache=False)
    assert enc.pooling == "cls" and enc.max_length == 16


def test_empty_and_bad_input(bert_dir):
    enc = TextEncoder(bert_dir, cache=False)
    assert enc.encode([], show_progress=False).shape == (0, 32)
    with pytest.raises(TypeError):
        enc.encode("a single string")
    with pytest.raises(TypeError):
        enc.encode(["ok", None])


# -- cache -----------------------------------------------------------------------------------
def test_corrupt_cache_is_moved_aside(bert_dir, tmp_path):
    enc = TextEncoder(bert_dir, cache=tmp_path)
    X = enc.encode(DEC_TEXTS, show_progress=False)
    db = enc._get_cache().path
    enc._get_cache().close()
    db.write_bytes(b"this is not an sqlite database" * 100)
    for p in tmp_path.glob("*-wal"):
        p.unlink()
    enc2 = TextEncoder(bert_dir, cache=tmp_path)
    Y = enc2.encode(DEC_TEXTS, show_progress=False)
    np.testing.assert_allclose(X, Y, atol=1e-6)
    assert list(tmp_path.glob("*.corrupt-*"))
    assert len(enc2._get_cache()) == len(DEC_TEXTS)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM emb").fetchone()[0] == len(DEC_TEXTS)


def test_cache_roundtrip_and_concurrent_connections(tmp_path):
    a = EmbeddingCache(tmp_path / "m.sqlite")
    b = EmbeddingCache(tmp_path / "m.sqlite")
    keys = [i.to_bytes(32, "big") for i in range(1200)]  # more than one IN(...) query
    vecs = np.random.default_rng(0).standard_normal((1200, 8)).astype(np.float32)
    a.put_many(keys, vecs)
    got = b.get_many(keys)
    assert len(got) == 1200
    np.testing.assert_array_equal(np.stack([got[k] for k in keys]), vecs)
    assert b.get_many(keys[:3], dim=9) == {}  # wrong dimension is a miss


def test_get_encoder_is_shared(bert_dir):
    a = get_encoder(bert_dir, cache=False, batch_size=4)
    b = get_encoder(bert_dir, cache=False, batch_size=8)
    assert a is b and b.batch_size == 8
    assert get_encoder(bert_dir, cache=False, pooling="cls") is not a


def test_unknown_model_offline_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = TextEncoder("no-such-org/no-such-model-xyz", cache=False)
    with pytest.raises(OSError, match="local folder|folder path"):
        enc.encode(["x"])


def test_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        TextEncoder(tmp_path)


# -- cache key, shipped vectors, quantisation --------------------------------------------------
def test_cache_key_holds_dtype_and_device(bert_dir, tmp_path):
    """Vectors cached by one weight dtype / device type are never served to another."""
    fp32 = TextEncoder(bert_dir, cache=tmp_path, dtype="float32")
    X = fp32.encode(DEC_TEXTS[:2], show_progress=False)
    assert fp32.stats == {"cached": 0, "shipped": 0, "embedded": 2}
    again = TextEncoder(bert_dir, cache=tmp_path, dtype="float32")
    np.testing.assert_array_equal(again.encode(DEC_TEXTS[:2], show_progress=False), X)
    assert again.stats["cached"] == 2 and again.stats["embedded"] == 0
    bf16 = TextEncoder(bert_dir, cache=tmp_path, dtype="bfloat16")
    assert bf16._key_parts("trunc") != fp32._key_parts("trunc")
    bf16.encode(DEC_TEXTS[:2], show_progress=False)
    assert bf16.stats["cached"] == 0 and bf16.stats["embedded"] == 2
    gpu = TextEncoder(bert_dir, cache=tmp_path, device="cuda", dtype="float32")
    assert gpu._key_parts("trunc") != fp32._key_parts("trunc")  # device type is in the key
    assert fp32.revision and len(fp32.revision) == 16


def _ship(monkeypatch, tmp_path, spec, texts, vectors):
    import json

    from scllm_dsc.encoders import _precomputed

    path = tmp_path / "vectors.npz"
    np.savez(
        path,
        vectors=np.asarray(vectors, np.float16),
        text_sha256=np.stack([np.frombuffer(_precomputed.text_sha256(t), np.uint8) for t in texts]),
        symbol=np.array([t.split(":")[0] for t in texts]),
        species=np.array(["human"] * len(texts)),
        spec=np.array(json.dumps(spec)),
    )
    monkeypatch.setattr(_precomputed, "vectors_path", lambda: path)
    _precomputed._LOADED.clear()
    return path


def test_shipped_vectors_used_only_for_the_same_encoder(bert_dir, tmp_path, monkeypatch):
    from scllm_dsc.encoders import default_vectors_spec

    ref = TextEncoder(bert_dir, cache=False)
    spec = default_vectors_spec(ref)
    assert spec == {"model": ref.name, "revision": ref.revision, "pooling": "mean",
                    "max_length": 64, "dtype": "float32", "mode": "trunc"}
    planted = np.zeros((1, 32), np.float32)
    planted[0, 3] = 1.0
    _ship(monkeypatch, tmp_path, spec, [DEC_TEXTS[0]], planted)
    enc = TextEncoder(bert_dir, cache=False)
    X = enc.encode(DEC_TEXTS[:2], show_progress=False)
    np.testing.assert_array_equal(X[0], planted[0])  # served from the table
    np.testing.assert_allclose(X[1], ref.encode(DEC_TEXTS[1:2], show_progress=False)[0], atol=1e-6)
    assert enc.stats == {"cached": 0, "shipped": 1, "embedded": 1}
    # a changed text is embedded, never served the stale vector
    changed = enc.encode([DEC_TEXTS[0] + " gene"], show_progress=False)
    assert not np.allclose(changed[0], planted[0])
    # another context length, pooling, dtype, or quantised weights: the table is not used
    for kwargs in ({"max_length": 32}, {"pooling": "cls"}, {"dtype": "bfloat16"},
                   {"quantize": True}, {"precomputed": False}):
        other = TextEncoder(bert_dir, cache=False, **kwargs)
        other.encode(DEC_TEXTS[:1], show_progress=False)
        assert other.stats["shipped"] == 0 and other.stats["embedded"] == 1, kwargs


def test_quantize_cpu_only_close_to_fp32(bert_dir):
    fp32 = TextEncoder(bert_dir, cache=False)
    q = TextEncoder(bert_dir, cache=False, quantize=True)
    A = fp32.encode(DEC_TEXTS, show_progress=False)
    B = q.encode(DEC_TEXTS, show_progress=False)
    assert B.shape == A.shape and not np.array_equal(A, B)
    assert (A * B).sum(1).min() > 0.9
    assert "qint8" in q._key_parts("trunc") and "qint8" not in fp32._key_parts("trunc")
    with pytest.raises(ValueError, match="CPU"):
        TextEncoder(bert_dir, device="cuda", quantize=True)


@pytest.mark.slow
def test_shipped_default_vectors_equal_on_the_fly():
    """The vectors shipped for the default model equal fresh ones (cosine >= 0.999)."""
    from scllm_dsc.encoders import shipped_vectors
    from scllm_dsc.knowledge import get_knowledge

    table = shipped_vectors()
    if table is None:
        pytest.skip("no shipped vectors in this checkout")
    shipped = TextEncoder(cache=False)
    assert shipped._shipped() is table, "the shipped spec must match the default encoder"
    fresh = TextEncoder(cache=False, precomputed=False)
    rng = np.random.default_rng(0)
    texts = []
    for species, n in (("human", 12), ("mouse", 8)):
        pool = table.symbols[table.species == species]
        if len(pool) < n:
            continue
        symbols = list(rng.choice(pool, n, replace=False))
        found = get_knowledge(species=species).texts(symbols)
        texts += [found[s] for s in symbols]
    assert len(texts) >= 12
    A = shipped.encode(texts, show_progress=False)
    assert shipped.stats["shipped"] == len(texts) and shipped.stats["embedded"] == 0
    B = fresh.encode(texts, show_progress=False)
    assert (A * B).sum(1).min() >= 0.999


def test_every_summary_text_has_a_shipped_vector():
    """docs/knowledge.md: all human and mouse summary/GO texts ship a default-model vector."""
    import pandas as pd

    from scllm_dsc.encoders import shipped_vectors
    from scllm_dsc.encoders._precomputed import text_sha256, vectors_path

    table = shipped_vectors()
    if table is None:
        pytest.skip("no shipped vectors in this checkout")
    for species in ("human", "mouse"):
        df = pd.read_csv(vectors_path().parent / f"{species}_gene_text.tsv.gz", sep="\t",
                         usecols=["text", "text_source"], dtype=str, keep_default_na=False)
        texts = set(df.loc[df.text_source != "name_only", "text"])
        missing = [t for t in texts if text_sha256(t) not in table._index]
        assert not missing, f"{len(missing)} {species} texts without a vector: {missing[:2]}"
    assert (table.species == "mouse").sum() > 0
