"""Faults: a flaky or absent network, crashes in the middle of cache writes, processes sharing
a cache, and Ctrl+C during training. Nothing may hang, corrupt a cache or touch the AnnData.

The basic NCBI retry cases (429 with Retry-After, 500, timeouts, connection refused, corrupt
cache entry) are in ``tests/test_knowledge_ncbi.py``; this module adds the rest.
"""

from __future__ import annotations

import email.utils
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import FAST, adata_fingerprint, semantic_standin
from _ncbi_server import CD3E_TEXT, FakeNCBI, make, server  # noqa: F401 (fixtures)
from conftest import synthetic

import scllm_dsc as sd
from scllm_dsc.knowledge import NCBIKnowledge

torch.set_num_threads(1)
SRC = Path(__file__).resolve().parents[2] / "src"
# -- helpers ------------------------------------------------------------------------------------
def _python(code: str, *args, wait: bool = True):
    """Run ``code`` in a fresh interpreter that imports this checkout of the package."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-c", textwrap.dedent(code), *map(str, args)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def _entries(root: Path) -> list[Path]:
    """NCBI cache entries under ``root`` (not the temporary files of unfinished writes)."""
    return [p for p in root.rglob("*.json") if not p.name.startswith(".tmp-")]


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


# -- NCBI client --------------------------------------------------------------------------------
def test_http_400_is_not_retried_and_says_what_to_do(server, make):
    server.failures = ["400"]
    k = make()
    with pytest.raises(RuntimeError, match="HTTP 400") as err:
        k.texts(["CD3E"])
    msg = str(err.value)
    assert "unknown parameter" in msg  # NCBI's own words
    assert "api_key=" in msg and "knowledge=" in msg  # what to do
    assert k.n_requests == 1


@pytest.mark.parametrize("failure", ["garbage", "drop"])
def test_non_json_answer_and_dropped_connection_are_retried(server, make, failure):
    server.failures = [failure]
    k = make()
    assert k.texts(["CD3E"]) == {"CD3E": CD3E_TEXT}
    assert server.count("esearch.fcgi") == 2


def test_non_json_answers_end_in_connection_error(server, make):
    server.failures = ["garbage"] * 10
    k = make(max_retries=2)
    with pytest.raises(ConnectionError, match="not JSON") as err:
        k.texts(["CD3E"])
    assert "SCLLM_DSC_DATA" in str(err.value)
    assert k.n_requests == 3
    assert not _entries(Path(k.cache_dir))  # nothing cached


def test_retry_after_is_capped_and_read_as_a_date(server, make):
    k = make()
    sleeps: list[float] = []
    k.client.sleep = sleeps.append
    k.client.max_wait = 0.05
    server.failures = ["429"]
    server.retry_after = "3600"  # an hour: never waited in full
    assert k.texts(["CD3E"]) == {"CD3E": CD3E_TEXT}
    assert max(sleeps) == pytest.approx(0.05)
    # Retry-After as an HTTP date, two seconds ahead
    sleeps.clear()
    k.client.max_wait = 60
    server.failures = ["429"]
    server.retry_after = email.utils.formatdate(time.time() + 2, usegmt=True)
    assert k.texts(["TP53"])["TP53"].startswith("TP53:")
    assert 0.5 < max(sleeps) <= 2.5


def test_failed_batch_keeps_the_batches_before_it(server, make):
    """A fetch that fails half-way keeps what it got; the next call asks only for the rest."""
    names = [f"GENE{i}" for i in range(30)]
    # batches of 7: two batches (esearch + esummary each) succeed, the third never answers
    server.failures = [None] * 4 + ["500"] * 4
    with pytest.raises(ConnectionError):
        make(batch_size=7).texts(names)
    k = make(batch_size=7)
    n_search = server.count("esearch.fcgi")
    texts = k.texts(names)
    assert len(texts) == 30 and texts["GENE29"] == "GENE29: test gene 29."
    assert server.count("esearch.fcgi") - n_search == 3  # 16 genes left: batches of 7, 7, 2
    fetched = [p["term"] for e, p in server.requests[-6:] if e == "esearch.fcgi"]
    assert not any('"GENE0"' in t or '"GENE13"' in t for t in fetched)


def test_network_absent_through_embed_genes(tmp_path):
    a = synthetic(50, 40, n_markers=5)
    k = NCBIKnowledge(
        base_url=f"http://127.0.0.1:{_closed_port()}/", cache_dir=tmp_path, backoff=0.001
    )
    before = adata_fingerprint(a)
    t0 = time.monotonic()
    with pytest.raises(ConnectionError) as err:
        sd.tl.embed_genes(a, k, species="human")
    assert time.monotonic() - t0 < 30  # no hang
    msg = str(err.value)
    assert "Cannot reach NCBI" in msg and "offline" in msg
    assert "knowledge=" in msg and "SCLLM_DSC_DATA" in msg
    assert adata_fingerprint(a) == before


# -- caches: crashes and concurrent processes ---------------------------------------------------
def test_crash_while_writing_ncbi_cache_leaves_no_entry(server, make, tmp_path):
    code = """
        import json, os, sys
        import scllm_dsc.knowledge._ncbi as ncbi

        def crash(obj, fh):  # the process dies half-way through writing an entry
            fh.write(json.dumps(obj)[:25])
            fh.flush()
            os._exit(3)

        ncbi.json.dump = crash
        k = ncbi.NCBIKnowledge(base_url=sys.argv[1], cache_dir=sys.argv[2], max_retries=0,
                               requests_per_second=1000)
        k.texts(["CD3E"])
    """
    rc, out, err = _python(code, server.base_url, tmp_path / "ncbi")
    assert rc == 3, err
    root = tmp_path / "ncbi"
    assert not _entries(root)  # no entry, only the orphaned temporary file
    assert list(root.rglob(".tmp-*"))
    n = len(server.requests)
    k = make()
    assert k.texts(["CD3E"]) == {"CD3E": CD3E_TEXT}
    assert len(server.requests) > n  # fetched again, not read from a broken entry
    assert json.loads(k._path("CD3E").read_text())["text"] == CD3E_TEXT


def test_crash_in_embedding_cache_transaction_keeps_committed_rows(tmp_path):
    code = """
        import os, sys
        import numpy as np
        from scllm_dsc.encoders import EmbeddingCache

        cache = EmbeddingCache(sys.argv[1])
        keys = [i.to_bytes(32, "big") for i in range(300)]
        vecs = np.arange(300 * 8, dtype=np.float32).reshape(300, 8)
        cache.put_many(keys[:100], vecs[:100])  # committed
        n = [0]

        def die_mid_write(statement):
            if statement.lstrip().upper().startswith("INSERT"):
                n[0] += 1
                if n[0] == 50:
                    os._exit(3)  # no commit, no cleanup

        cache._connect().set_trace_callback(die_mid_write)
        cache.put_many(keys[100:], vecs[100:])
    """
    db = tmp_path / "m.sqlite"
    rc, out, err = _python(code, db)
    assert rc == 3, err
    from scllm_dsc.encoders import EmbeddingCache

    cache = EmbeddingCache(db)
    assert len(cache) == 100  # the interrupted write left nothing behind
    keys = [i.to_bytes(32, "big") for i in range(300)]
    got = cache.get_many(keys)
    vecs = np.arange(300 * 8, dtype=np.float32).reshape(300, 8)
    assert set(got) == set(keys[:100])
    np.testing.assert_array_equal(np.stack([got[k] for k in keys[:100]]), vecs[:100])
    ok = cache._connect().execute("PRAGMA integrity_check").fetchone()[0]
    assert ok == "ok" and not list(tmp_path.glob("*.corrupt-*"))
    cache.close()


def test_processes_sharing_the_embedding_cache(tmp_path):
    code = """
        import sys
        import numpy as np
        from scllm_dsc.encoders import EmbeddingCache

        cache = EmbeddingCache(sys.argv[1])
        rng = np.random.default_rng(int(sys.argv[2]))
        for _ in range(40):
            ids = rng.choice(600, 80, replace=False)
            keys = [int(i).to_bytes(32, "big") for i in ids]
            cache.put_many(keys, np.repeat(ids[:, None], 8, axis=1).astype(np.float32))
            got = cache.get_many(keys)
            assert all(np.all(got[k] == i) for k, i in zip(keys, ids)), "wrong vector"
        print("ok")
    """
    db = tmp_path / "shared.sqlite"
    procs = [_python(code, db, seed, wait=False) for seed in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0 and out.strip() == "ok", err[-2000:]
    from scllm_dsc.encoders import EmbeddingCache

    cache = EmbeddingCache(db)
    keys = [i.to_bytes(32, "big") for i in range(600)]
    got = cache.get_many(keys)
    assert len(got) == len(cache) > 100
    for k, v in got.items():
        assert np.all(v == int.from_bytes(k, "big"))
    assert not list(tmp_path.glob("*.corrupt-*"))
    cache.close()


def test_processes_sharing_the_ncbi_cache(server, make, tmp_path):
    code = """
        import json, sys
        from scllm_dsc.knowledge import NCBIKnowledge

        k = NCBIKnowledge(base_url=sys.argv[1], cache_dir=sys.argv[2], batch_size=4,
                          requests_per_second=1000, backoff=0.001)
        names = [f"GENE{i}" for i in range(30)] + ["CD3E", "P53", "NOPE1"]
        print(json.dumps(k.texts(names), sort_keys=True))
    """
    procs = [_python(code, server.base_url, tmp_path / "ncbi", wait=False) for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-2000:]
        outs.append(json.loads(out))
    assert outs[0] == outs[1]
    assert len(outs[0]) == 32 and outs[0]["CD3E"] == CD3E_TEXT and "TP53" in outs[0]
    for f in _entries(tmp_path / "ncbi"):
        json.loads(f.read_text())  # every entry is whole
    k = make()
    names = [f"GENE{i}" for i in range(30)] + ["CD3E", "P53", "NOPE1"]
    assert k.texts(names) == outs[0] and k.n_requests == 0  # all from the shared cache


# -- Ctrl+C during training ---------------------------------------------------------------------
class InterruptAt:
    """A Lightning callback pressing Ctrl+C at the ``n``-th training batch (over all phases)."""

    def __new__(cls, n: int):
        from lightning.pytorch.callbacks import Callback

        class _Interrupt(Callback):
            seen = 0

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                self.seen += 1
                if self.seen == n:
                    raise KeyboardInterrupt

        return _Interrupt()


@pytest.fixture(scope="module")
def cells():
    a = synthetic(200, 300)
    del a.obs["cell_type"]
    semantic_standin(a)
    return a


def _model(cells):
    a = cells.copy()
    sd.model.SCLLMDSC.setup_anndata(a, n_pcs=10, n_top_genes=200)
    torch.manual_seed(0)
    return a, sd.model.SCLLMDSC(a, n_clusters=3, n_latent=8, n_hidden=16)


TRAIN = dict(max_epochs=4, batch_size=64, enable_progress_bar=False)  # 3 batches per epoch


@pytest.mark.parametrize(("at", "phase"), [(2, "pretraining"), (8, "joint")])
def test_keyboard_interrupt_in_train(cells, at, phase):
    a, model = _model(cells)
    before = adata_fingerprint(a)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):  # not SystemExit, which would end the session
        model.train(**TRAIN, callbacks=[InterruptAt(at)])
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl+C still works afterwards
    assert adata_fingerprint(a) == before
    # the model is usable: consistent state, latent available
    m = model.module
    assert not m.clustering and m.target is None and m.graph_features.shape[0] == 0
    assert not m.training
    z = model.get_latent_representation()
    assert z.shape == (a.n_obs, 16) and np.all(np.isfinite(z))
    if phase == "pretraining":
        assert not model.is_trained_
        with pytest.raises(RuntimeError, match="train"):
            model.predict()
    else:  # centres were initialised before the interrupt
        np.testing.assert_allclose(model.predict(soft=True).sum(1), 1, atol=1e-5)
    # and can be trained again
    model.train(**TRAIN)
    assert model.is_trained_ and model.predict().shape == (a.n_obs,)
    assert adata_fingerprint(a) == before


def test_keyboard_interrupt_in_cluster_leaves_no_trace(cells):
    a = cells.copy()
    before = adata_fingerprint(a)
    fast = dict(FAST, train_kwargs=dict(FAST["train_kwargs"], callbacks=[InterruptAt(4)]))
    with pytest.raises(KeyboardInterrupt):
        sd.tl.cluster(a, n_clusters=3, **fast)
    assert adata_fingerprint(a) == before
    # the next run is the run that was never interrupted
    sd.tl.cluster(a, n_clusters=3, **FAST)
    clean = cells.copy()
    sd.tl.cluster(clean, n_clusters=3, **FAST)
    np.testing.assert_array_equal(a.obs["scllm_dsc"], clean.obs["scllm_dsc"])
    np.testing.assert_array_equal(a.obsm["X_scllm_dsc"], clean.obsm["X_scllm_dsc"])

