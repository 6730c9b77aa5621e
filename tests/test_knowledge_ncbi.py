"""NCBIKnowledge against a local fake of NCBI E-utilities (no internet)."""

from __future__ import annotations

import json
import socket

import pytest
from _ncbi_server import CD3E_TEXT, FakeNCBI, make, server  # noqa: F401 (fixtures)

from scllm_dsc.knowledge import NCBIKnowledge, get_knowledge, match_genes


def test_texts_built_like_the_tables(server, make):
    k = make(email="me@example.org", api_key="KEY")
    texts = k.texts(["CD3E", "A1BG", "TP53", "NOPE1"])
    assert set(texts) == {"CD3E", "A1BG", "TP53"}
    assert texts["CD3E"] == CD3E_TEXT  # "[provided by RefSeq ...]" dropped
    assert texts["A1BG"] == "A1BG: alpha-1-B glycoprotein."  # no summary
    assert texts["TP53"] == "TP53: tumor protein p53. This gene encodes a tumor suppressor."
    assert server.count("esearch.fcgi") == 1 and server.count("esummary.fcgi") == 1
    search = server.requests[0][1]
    assert search["db"] == "gene" and search["retmode"] == "json"
    assert search["tool"] == "scllm_dsc" and search["email"] == "me@example.org"
    assert search["api_key"] == "KEY"
    assert search["term"].endswith("AND 9606[taxid]")
    assert '"CD3E"[sym]' in search["term"] and " OR " in search["term"]
    assert k.symbols() is None and k.ensembl() == {} and k.name == "ncbi"


def test_aliases_withdrawn_symbols_and_matching(server, make):
    k = make()
    m = match_genes(["P53", "CD3E", "cd3d", "OLDGENE", "NOPE1", "CD3E.1"], k)
    assert m.symbols == ["TP53", "CD3E", "CD3D", "TP53", None, "CD3E"]
    assert list(m.matched_by) == ["alias", "symbol", "symbol", "alias", "", "symbol"]
    assert k.aliases() == {"P53": "TP53", "OLDGENE": "TP53"}
    assert m.texts[0].startswith("TP53: tumor protein p53.")
    assert m.coverage == pytest.approx(5 / 6)


def test_species_mouse_uses_taxid_and_case(server, make):
    k = make(species="mouse")
    assert k.taxid == 10090
    texts = k.texts(["CD3E", "TP53"])
    assert texts == {"Cd3e": "Cd3e: CD3 antigen, epsilon polypeptide."}  # TP53 is human only
    assert "10090[taxid]" in server.requests[0][1]["term"]
    m = match_genes(["Cd3e", "CD3E"], k)
    assert m.symbols == ["Cd3e", "Cd3e"] and list(m.matched_by) == ["symbol", "symbol"]


def test_batching_counts_requests(server, make):
    k = make(batch_size=7)
    names = [f"GENE{i}" for i in range(30)]
    texts = k.texts(names)
    assert len(texts) == 30 and texts["GENE3"] == "GENE3: test gene 3."
    assert server.count("esearch.fcgi") == 5  # ceil(30 / 7)
    assert server.count("esummary.fcgi") == 5
    assert k.n_requests == 10


def test_esearch_pages_through_long_id_lists(server, make):
    k = make()
    k._search_page = 3
    texts = k.texts([f"GENE{i}" for i in range(10)])
    assert len(texts) == 10
    assert server.count("esearch.fcgi") == 4  # pages of 3, 3, 3, 1 ids
    assert [int(p["retstart"]) for e, p in server.requests if e == "esearch.fcgi"] == [0, 3, 6, 9]


def test_partial_batch_and_disk_cache(server, make, tmp_path):
    k = make()
    first = k.texts(["CD3E", "MISSING1", "TP53", "MISSING2"])
    assert set(first) == {"CD3E", "TP53"}
    n = len(server.requests)
    # a new client with the same cache folder: found and missing genes come from disk
    k2 = make()
    assert k2.texts(["TP53", "MISSING1", "CD3E", "MISSING2"]) == first
    assert len(server.requests) == n and k2.n_requests == 0
    # only the new gene is fetched
    k2.texts(["CD3E", "A1BG"])
    assert server.count("esearch.fcgi") == 2
    assert '"A1BG"[sym]' in server.requests[-2][1]["term"]
    assert '"CD3E"' not in server.requests[-2][1]["term"]
    files = list((tmp_path / "ncbi" / "9606").rglob("*.json"))
    assert len(files) == 5 and not list((tmp_path / "ncbi").rglob(".tmp-*"))


def test_negative_results_expire(server, make):
    make().texts(["MISSING1"])
    n = len(server.requests)
    make().texts(["MISSING1"])
    assert len(server.requests) == n  # remembered
    make(negative_ttl=0).texts(["MISSING1"])
    assert len(server.requests) > n  # asked again


def test_corrupt_cache_entry_is_refetched(server, make):
    k = make()
    k.texts(["CD3E"])
    path = k._path("CD3E")
    path.write_text("{not json")
    n = len(server.requests)
    assert make().texts(["CD3E"]) == {"CD3E": CD3E_TEXT}
    assert len(server.requests) > n
    assert json.loads(path.read_text())["text"] == CD3E_TEXT  # repaired


def test_retry_on_429_and_500_honours_retry_after(server, make):
    server.failures = ["429", "500"]
    server.retry_after = "2"
    k = make(backoff=0.001)
    sleeps: list[float] = []
    k.client.sleep = sleeps.append
    assert k.texts(["CD3E"]) == {"CD3E": CD3E_TEXT}
    assert server.count("esearch.fcgi") == 3  # 429, 500, ok
    assert 2.0 in sleeps  # Retry-After wins over the tiny backoff
    assert pytest.approx(0.002) in sleeps  # then exponential backoff: 0.001 * 2


def test_slow_answer_is_retried(server, make):
    server.failures = ["slow"]
    server.slow_seconds = 1.0
    k = make(timeout=0.2)
    assert k.texts(["TP53"])["TP53"].startswith("TP53:")
    assert server.count("esearch.fcgi") == 2


def test_timeouts_end_in_connection_error(server, make):
    server.failures = ["slow"] * 10
    server.slow_seconds = 0.6
    k = make(timeout=0.15, max_retries=2)
    with pytest.raises(ConnectionError, match="after 3 attempts") as err:
        k.texts(["CD3E"])
    assert "SCLLM_DSC_DATA" in str(err.value)
    assert server.count("esearch.fcgi") == 3
    # nothing was cached for the failed gene
    server.failures = []
    assert make().texts(["CD3E"]) == {"CD3E": CD3E_TEXT}


def test_connection_refused_gives_offline_hint(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens here now
    k = NCBIKnowledge(
        base_url=f"http://127.0.0.1:{port}/", cache_dir=tmp_path, max_retries=3, backoff=0.001
    )
    with pytest.raises(ConnectionError) as err:
        k.texts(["CD3E"])
    msg = str(err.value)
    assert "knowledge=" in msg and "SCLLM_DSC_DATA" in msg
    assert k.n_requests == 1  # no pointless retries when nothing listens


def test_rate_limit(server, make):
    k = make(requests_per_second=5)
    sleeps: list[float] = []
    k.client.sleep = sleeps.append
    k.texts(["CD3E"])
    k.texts(["TP53"])
    # 4 requests at 5/s: the first goes at once, each later one gets the next 0.2 s slot
    # (the fake sleep does not pass time, so the slots add up)
    assert len(sleeps) == 3
    steps = [sleeps[0]] + [b - a for a, b in zip(sleeps, sleeps[1:], strict=False)]
    assert all(0 < s <= 0.2 + 1e-6 for s in steps)
    assert make(api_key="x", requests_per_second=None).client.requests_per_second == 10
    assert make(requests_per_second=None).client.requests_per_second == 3


def test_default_cache_dir_and_get_knowledge(server):
    from scllm_dsc import settings

    k = get_knowledge("ncbi", species="Mus musculus")
    assert isinstance(k, NCBIKnowledge) and k.species == "mouse" and k.taxid == 10090
    assert k.cache_dir == settings.cache_dir / "ncbi"
    with pytest.raises(ValueError, match="species"):
        get_knowledge("ncbi")
    with pytest.raises(ValueError, match="Unknown species"):
        NCBIKnowledge(species="martian")
