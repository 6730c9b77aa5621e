"""A small NCBI E-utilities HTTP client: rate limit, retries with backoff, clear errors.

Only the standard library is used (``urllib``).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping

OFFLINE_HINT = (
    "To work offline, use a local gene text table: pass knowledge='path/to/human_gene_text.tsv.gz' "
    "(columns 'symbol' and 'text') or a folder holding '{species}_gene_text.tsv.gz', or set the "
    "environment variable SCLLM_DSC_DATA (or sd.settings.knowledge_dir) to that folder."
)


class _Throttle:
    """At most ``rate`` requests per second, shared by all clients of one endpoint and key."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, sleep: Callable[[float], None]) -> None:
        with self._lock:
            now = time.monotonic()
            delay = self._next - now
            if delay > 0:
                sleep(delay)
                now += delay
            self._next = now + self.interval


_THROTTLES: dict[tuple, _Throttle] = {}
_THROTTLES_LOCK = threading.Lock()


def _throttle_for(base_url: str, api_key: str | None, rate: float) -> _Throttle:
    key = (base_url, api_key, rate)
    with _THROTTLES_LOCK:
        if key not in _THROTTLES:
            _THROTTLES[key] = _Throttle(rate)
        return _THROTTLES[key]


def _retry_after(headers) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Retryable(Exception):
    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait


class EUtilsClient:
    """POST requests to E-utilities endpoints (``esearch.fcgi``...) returning parsed JSON.

    Parameters
    ----------
    base_url
        E-utilities base URL.
    tool, email, api_key
        Identification NCBI asks for; with an API key NCBI allows 10 instead of 3 requests/s.
    timeout
        Seconds to wait for a connection or an answer.
    max_retries
        Retries after timeouts, HTTP 429 and 5xx answers (then :class:`ConnectionError`).
    backoff
        First wait in seconds; doubles with each retry (at least what ``Retry-After`` asks).
    requests_per_second
        Rate limit; by default 3, or 10 with an API key.
    max_wait
        Upper bound of a single wait between retries.
    """

    def __init__(
        self,
        base_url: str,
        *,
        tool: str = "scllm_dsc",
        email: str | None = None,
        api_key: str | None = None,
        timeout: float = 10.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        requests_per_second: float | None = None,
        max_wait: float = 60.0,
    ) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.tool, self.email, self.api_key = tool, email, api_key
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_wait = float(max_wait)
        if requests_per_second is None:
            requests_per_second = 10.0 if api_key else 3.0
        self.requests_per_second = float(requests_per_second)
        self._throttle = _throttle_for(self.base_url, api_key, self.requests_per_second)
        self.sleep: Callable[[float], None] = time.sleep
        self.n_requests = 0

    def _params(self, params: Mapping[str, object]) -> dict[str, str]:
        out = {k: str(v) for k, v in params.items() if v is not None}
        out["tool"] = self.tool
        if self.email:
            out["email"] = self.email
        if self.api_key:
            out["api_key"] = self.api_key
        return out

    def request(self, endpoint: str, params: Mapping[str, object]) -> dict:
        """POST ``params`` to ``endpoint`` and return the decoded JSON answer."""
        url = urllib.parse.urljoin(self.base_url, endpoint)
        body = urllib.parse.urlencode(self._params(params)).encode()
        last = ""
        for attempt in range(self.max_retries + 1):
            self._throttle.wait(self.sleep)
            self.n_requests += 1
            try:
                return self._once(url, body)
            except _Retryable as e:
                last = str(e)
                if attempt == self.max_retries:
                    break
                wait = self.backoff * (2**attempt)
                if e.wait is not None:
                    wait = max(wait, e.wait)
                self.sleep(min(wait, self.max_wait))
        raise ConnectionError(
            f"NCBI E-utilities ({url}) did not answer usefully after {self.max_retries + 1} "
            f"attempts (last: {last}). Try again later, raise timeout=/max_retries=, or pass "
            f"an NCBI api_key. {OFFLINE_HINT}"
        )

    def _once(self, url: str, body: bytes) -> dict:
        req = urllib.request.Request(
            url,
            data=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "User-Agent": f"{self.tool} (python urllib)",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            if e.code == 429 or 500 <= e.code < 600:
                raise _Retryable(f"HTTP {e.code}", _retry_after(e.headers)) from e
            detail = e.read()[:300].decode("utf-8", "replace") if e.fp is not None else ""
            raise RuntimeError(
                f"NCBI E-utilities answered HTTP {e.code} for {url}: {detail.strip()!r}. This "
                "is not a temporary failure: check `base_url=` and `api_key=` (an invalid key "
                f"is refused). {OFFLINE_HINT}"
            ) from e
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, TimeoutError):
                raise _Retryable(f"timed out after {self.timeout} s") from e
            if isinstance(reason, ConnectionResetError):
                raise _Retryable("connection reset") from e
            raise ConnectionError(
                f"Cannot reach NCBI E-utilities at {url} ({reason}). The gene descriptions are "
                f"fetched from NCBI only with knowledge='ncbi'. {OFFLINE_HINT}"
            ) from e
        except TimeoutError as e:  # socket.timeout while reading
            raise _Retryable(f"timed out after {self.timeout} s") from e
        except (OSError, http.client.HTTPException) as e:  # resets, refused, protocol errors
            raise _Retryable(f"connection problem: {e!r}") from e
        try:
            payload = json.loads(raw)
        except ValueError as e:
            raise _Retryable(f"answer is not JSON: {raw[:100]!r}") from e
        err = payload.get("error") if isinstance(payload, dict) else None
        if err and "rate limit" in str(err).lower():
            raise _Retryable(f"NCBI: {err}")
        return payload
