"""A local stand-in for NCBI E-utilities (db=gene, JSON), for offline tests.

It answers ``esearch.fcgi`` and ``esummary.fcgi`` in NCBI's documented JSON layout and can be
told to fail: HTTP 429 with ``Retry-After``, HTTP 500 or 400, answer slower than a timeout,
answer with something that is not JSON, or close the connection without an answer.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Gene:
    uid: str
    name: str
    description: str
    summary: str = ""
    otheraliases: str = ""
    taxid: int = 9606
    status: str = ""
    currentid: str = ""


def default_genes() -> list[Gene]:
    return [
        Gene("916", "CD3E", "CD3 epsilon subunit of T-cell receptor complex",
             "The protein encoded by this gene is the CD3-epsilon polypeptide. "
             "[provided by RefSeq, Jul 2008]", "IMD18, T3E, TCRE"),
        Gene("915", "CD3D", "CD3 delta subunit of T-cell receptor complex",
             "The protein encoded by this gene is part of the T-cell receptor/CD3 complex.",
             "CD3-DELTA, IMD19, T3D"),
        Gene("1", "A1BG", "alpha-1-B glycoprotein", "", "A1B, ABG, GAB, HYST2477"),
        Gene("7157", "TP53", "tumor protein p53", "This gene encodes a tumor suppressor.",
             "BCC7, LFS1, P53"),
        Gene("12501", "Cd3e", "CD3 antigen, epsilon polypeptide", "", "CD3epsilon, T3e",
             taxid=10090),
        Gene("999", "OLDGENE", "withdrawn record", "", "", status="secondary", currentid="7157"),
    ] + [Gene(str(100000 + i), f"GENE{i}", f"test gene {i}") for i in range(30)]


@dataclass
class FakeNCBI:
    genes: list[Gene] = field(default_factory=default_genes)
    # failure modes consumed one per request: "429", "500", "400", "slow", "garbage", "drop";
    # None answers normally
    failures: list[str] = field(default_factory=list)
    retry_after: str = "2"
    slow_seconds: float = 1.0
    requests: list[tuple[str, dict]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                self._answer(url.path, urllib.parse.parse_qs(url.query))

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(n).decode()
                self._answer(urllib.parse.urlsplit(self.path).path, urllib.parse.parse_qs(body))

            def _answer(self, path, qs):
                params = {k: v[-1] for k, v in qs.items()}
                endpoint = path.rsplit("/", 1)[-1]
                with fake._lock:
                    fake.requests.append((endpoint, params))
                    failure = fake.failures.pop(0) if fake.failures else None
                if failure == "429":
                    self.send_response(429)
                    self.send_header("Retry-After", fake.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if failure == "500":
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if failure == "400":
                    data = b"Bad Request: unknown parameter"
                    self.send_response(400)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if failure == "drop":  # close the connection without any answer
                    self.close_connection = True
                    return
                if failure == "garbage":
                    data = b"<html>Service temporarily unavailable</html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if failure == "slow":
                    time.sleep(fake.slow_seconds)
                if endpoint == "esearch.fcgi":
                    payload = fake.esearch(params)
                elif endpoint == "esummary.fcgi":
                    payload = fake.esummary(params)
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(payload).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/entrez/eutils/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self, endpoint: str | None = None) -> int:
        return sum(1 for e, _ in self.requests if endpoint is None or e == endpoint)

    # -- E-utilities semantics ----------------------------------------------------------------
    def esearch(self, params: dict) -> dict:
        term = params.get("term", "")
        names = {s.lower() for s in re.findall(r'"([^"]+)"\[sym\]', term)}
        tax = re.search(r"(\d+)\[taxid\]", term)
        ids = []
        for g in self.genes:
            if tax and str(g.taxid) != tax.group(1):
                continue
            aliases = {a.strip().lower() for a in g.otheraliases.split(",") if a.strip()}
            if g.name.lower() in names or aliases & names:
                ids.append(g.uid)
        start = int(params.get("retstart", 0))
        retmax = int(params.get("retmax", 20))
        page = ids[start : start + retmax]
        return {
            "header": {"type": "esearch", "version": "0.3"},
            "esearchresult": {
                "count": str(len(ids)),
                "retmax": str(len(page)),
                "retstart": str(start),
                "idlist": page,
                "translationset": [],
                "querytranslation": term,
            },
        }

    def esummary(self, params: dict) -> dict:
        uids = [u for u in params.get("id", "").split(",") if u]
        by_uid = {g.uid: g for g in self.genes}
        result: dict = {"uids": uids}
        for u in uids:
            g = by_uid.get(u)
            if g is None:
                result[u] = {"uid": u, "error": "cannot get document summary"}
                continue
            result[u] = {
                "uid": g.uid,
                "name": g.name,
                "description": g.description,
                "status": g.status,
                "currentid": g.currentid,
                "chromosome": "1",
                "otheraliases": g.otheraliases,
                "otherdesignations": "",
                "nomenclaturesymbol": g.name,
                "nomenclaturename": g.description,
                "summary": g.summary,
                "organism": {
                    "scientificname": "Homo sapiens" if g.taxid == 9606 else "Mus musculus",
                    "commonname": "human" if g.taxid == 9606 else "house mouse",
                    "taxid": g.taxid,
                },
            }
        return {"header": {"type": "esummary", "version": "0.3"}, "result": result}


# --- pytest fixtures shared by the NCBI test modules (import them by name) ---------------------
CD3E_TEXT = (
    "CD3E: CD3 epsilon subunit of T-cell receptor complex. "
    "The protein encoded by this gene is the CD3-epsilon polypeptide."
)


@pytest.fixture
def server():
    """A running :class:`FakeNCBI`, closed after the test."""
    s = FakeNCBI()
    yield s
    s.close()


@pytest.fixture
def make(server, tmp_path):
    """Factory of :class:`~scllm_dsc.knowledge.NCBIKnowledge` clients of ``server``."""
    from scllm_dsc.knowledge import NCBIKnowledge

    def _make(**kw):
        opts = dict(
            base_url=server.base_url,
            cache_dir=tmp_path / "ncbi",
            timeout=2.0,
            max_retries=3,
            backoff=0.001,
            requests_per_second=1000,
        )
        opts.update(kw)
        return NCBIKnowledge(**opts)

    return _make
