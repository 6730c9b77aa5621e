"""Gene texts fetched from NCBI Gene through E-utilities, cached on disk per gene."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ._base import KnowledgeSource, build_gene_text
from ._eutils import EUtilsClient
from ._species import normalize_species, taxid

_CACHE_VERSION = 1
_LIVE = {"", "0", "live", "None"}


def _split_aliases(value) -> list[str]:
    if not value:
        return []
    if isinstance(value, list):
        parts = value
    else:
        parts = str(value).replace(";", ",").split(",")
    return [p.strip() for p in parts if p.strip()]


def _term_symbol(symbol: str) -> str | None:
    """Quote a symbol for an Entrez query; ``None`` for names that cannot be searched."""
    s = symbol.strip()
    if not s or any(c in s for c in '"[]()'):
        return None
    return f'"{s}"[sym]'


class NCBIKnowledge(KnowledgeSource):
    """Gene texts from NCBI Gene (E-utilities ``esearch`` + ``esummary``), cached on disk.

    Each gene's text is ``"SYMBOL: full name. summary"``, as in the shared tables. Every looked
    up name is cached under ``cache_dir`` (found or not), so each gene is fetched once; names
    NCBI does not know are asked again after ``negative_ttl`` seconds.

    Parameters
    ----------
    species
        ``"human"`` (taxon 9606), ``"mouse"`` (10090) or an NCBI taxonomy ID.
    email
        Your e-mail address, which NCBI asks clients to send (default: env ``NCBI_EMAIL``).
    api_key
        NCBI API key (default: env ``NCBI_API_KEY``); raises the rate limit from 3 to 10/s.
    base_url
        E-utilities base URL.
    cache_dir
        Folder of the per-gene cache (default ``settings.cache_dir / "ncbi"``).
    batch_size
        Symbols per ``esearch`` request.
    timeout
        Seconds to wait for NCBI per request.
    max_retries
        Retries after timeouts, HTTP 429 and 5xx answers.
    backoff
        First wait between retries in seconds (doubles each retry; ``Retry-After`` honoured).
    requests_per_second
        Rate limit (default 3, or 10 with an API key).
    negative_ttl
        Seconds for which "not found in NCBI" is remembered.
    tool
        Tool name sent to NCBI.
    """

    name = "ncbi"

    def __init__(
        self,
        species: str = "human",
        email: str | None = None,
        api_key: str | None = None,
        base_url: str = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils/",
        cache_dir: str | os.PathLike | None = None,
        batch_size: int = 200,
        timeout: float = 10.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        requests_per_second: float | None = None,
        *,
        negative_ttl: float = 30 * 24 * 3600,
        tool: str = "scllm_dsc",
    ) -> None:
        self.species = normalize_species(species)
        self.taxid = taxid(species)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.batch_size = int(batch_size)
        self.negative_ttl = float(negative_ttl)
        if cache_dir is None:
            from .._settings import settings

            cache_dir = settings.cache_dir / "ncbi"
        self.cache_dir = Path(cache_dir).expanduser()
        self.client = EUtilsClient(
            base_url,
            tool=tool,
            email=email if email is not None else os.environ.get("NCBI_EMAIL"),
            api_key=api_key if api_key is not None else os.environ.get("NCBI_API_KEY"),
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            requests_per_second=requests_per_second,
        )
        self._entries: dict[str, dict] = {}  # looked-up name -> cache entry
        self._aliases: dict[str, str] = {}

    # -- public interface -------------------------------------------------------------------
    @property
    def n_requests(self) -> int:
        """Number of HTTP requests sent so far (retries included)."""
        return self.client.n_requests

    def texts(self, symbols: Sequence[str]) -> dict[str, str]:
        names = [s for s in dict.fromkeys(str(s).strip() for s in symbols) if s]
        todo = [s for s in names if self._entry(s) is None]
        if todo:
            self._fetch(todo)
        out: dict[str, str] = {}
        for s in names:
            e = self._entry(s)
            if e is not None and e.get("symbol"):
                out[e["symbol"]] = e["text"]
        return out

    def aliases(self) -> Mapping[str, str]:
        """Names looked up so far that NCBI resolved to another symbol (alias -> symbol)."""
        return dict(self._aliases)

    # -- cache ------------------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        h = hashlib.sha1(name.encode("utf-8")).hexdigest()
        return self.cache_dir / str(self.taxid) / h[:2] / f"{h}.json"

    def _valid(self, name: str, e) -> bool:
        if not isinstance(e, dict) or e.get("v") != _CACHE_VERSION or e.get("query") != name:
            return False
        if e.get("symbol"):
            return isinstance(e.get("text"), str) and bool(e["text"])
        return time.time() - float(e.get("fetched", 0)) < self.negative_ttl

    def _entry(self, name: str) -> dict | None:
        e = self._entries.get(name)
        if e is not None and self._valid(name, e):
            return e
        try:
            e = json.loads(self._path(name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # absent or corrupt: fetch again
        if not self._valid(name, e):
            return None
        self._remember(name, e)
        return e

    def _remember(self, name: str, e: dict) -> None:
        self._entries[name] = e
        sym = e.get("symbol")
        if sym and sym != name and sym.lower() != name.lower():
            self._aliases[name] = sym

    def _store(self, name: str, e: dict) -> None:
        self._remember(name, e)
        path = self._path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(e, fh)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as err:  # a read-only cache must not stop the analysis
            from scanpy import logging as logg

            logg.warning(f"could not write the NCBI cache at {path}: {err}")

    # -- fetching ---------------------------------------------------------------------------
    def _fetch(self, names: list[str]) -> None:
        from scanpy import logging as logg

        batches = [names[i : i + self.batch_size] for i in range(0, len(names), self.batch_size)]
        logg.info(f"fetching {len(names)} gene descriptions from NCBI Gene ({len(batches)} batches)")
        it = batches
        if len(batches) > 1:
            from tqdm.auto import tqdm

            it = tqdm(batches, desc="NCBI Gene", unit="batch")
        for batch in it:
            self._fetch_batch(batch)

    def _search(self, batch: list[str]) -> list[str]:
        terms = [t for t in (_term_symbol(s) for s in batch) if t is not None]
        if not terms:
            return []
        term = f"({' OR '.join(terms)}) AND {self.taxid}[taxid]"
        ids: list[str] = []
        retmax = max(100, 5 * len(terms))
        retstart = 0
        while True:
            res = self.client.request(
                "esearch.fcgi",
                {"db": "gene", "term": term, "retmode": "json", "retmax": retmax,
                 "retstart": retstart},
            )
            r = res.get("esearchresult", {}) if isinstance(res, dict) else {}
            if "ERROR" in r:
                raise RuntimeError(f"NCBI esearch failed: {r['ERROR']}")
            page = [str(i) for i in r.get("idlist", [])]
            ids.extend(page)
            count = int(r.get("count", len(ids)) or 0)
            retstart += len(page)
            if not page or retstart >= count:
                break
        return list(dict.fromkeys(ids))

    def _summaries(self, uids: list[str]) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for i in range(0, len(uids), 400):
            chunk = uids[i : i + 400]
            res = self.client.request(
                "esummary.fcgi", {"db": "gene", "id": ",".join(chunk), "retmode": "json"}
            )
            result = res.get("result", {}) if isinstance(res, dict) else {}
            for uid in result.get("uids", chunk):
                rec = result.get(str(uid))
                if isinstance(rec, dict) and "error" not in rec and rec.get("name"):
                    out[str(uid)] = rec
        return out

    def _records(self, batch: list[str]) -> list[dict]:
        """Live records of this species matching any name of ``batch``."""
        recs = self._summaries(self._search(batch))
        replaced = {
            str(r.get("currentid"))
            for r in recs.values()
            if str(r.get("status", "")) not in _LIVE and str(r.get("currentid") or "0") != "0"
        }
        replaced -= set(recs)
        if replaced:
            recs.update(self._summaries(sorted(replaced)))
        live = []
        for uid, r in recs.items():
            if str(r.get("status", "")) not in _LIVE:
                continue
            org = r.get("organism") or {}
            tax = org.get("taxid") if isinstance(org, dict) else None
            if tax is not None and str(tax) != str(self.taxid):
                continue
            live.append({**r, "uid": uid})
        return live

    @staticmethod
    def _pick(name: str, records: list[dict]) -> dict | None:
        def unique(hits):
            uids = {r["uid"] for r in hits}
            return hits[0] if len(uids) == 1 else None

        exact = [r for r in records if r["name"] == name]
        if exact:
            return exact[0]
        low = name.lower()
        hit = unique([r for r in records if r["name"].lower() == low])
        if hit is not None:
            return hit
        hit = unique([r for r in records if name in _split_aliases(r.get("otheraliases"))])
        if hit is not None:
            return hit
        return unique(
            [r for r in records if low in {a.lower() for a in _split_aliases(r.get("otheraliases"))}]
        )

    def _fetch_batch(self, batch: list[str]) -> None:
        records = self._records(batch)
        now = time.time()
        for name in batch:
            rec = self._pick(name, records)
            if rec is None:
                entry = {"v": _CACHE_VERSION, "query": name, "symbol": None, "fetched": now}
            else:
                sym = rec["name"]
                entry = {
                    "v": _CACHE_VERSION,
                    "query": name,
                    "symbol": sym,
                    "uid": rec["uid"],
                    "text": build_gene_text(sym, rec.get("description"), rec.get("summary")),
                    "aliases": _split_aliases(rec.get("otheraliases")),
                    "fetched": now,
                }
                if sym != name and self._entry(sym) is None:
                    self._store(sym, {**entry, "query": sym})
            self._store(name, entry)
