"""Whether the Hugging Face hub can be reached, found out once per process in a few seconds.

huggingface_hub retries an unreachable host for ~26 s (five retries with back-off, each printed) before
it gives up. Asking first, with one short connection attempt, turns that into one line at once; a file
already in the local cache never needs the question.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

PROBE_SECONDS = 3.0
_TRUE = {"1", "true", "yes", "on"}


def _endpoint() -> tuple[str, int]:
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


@functools.cache
def hub_unreachable() -> str | None:
    """None when the hub answers; otherwise why not (HF_HUB_OFFLINE set, or no connection within
    PROBE_SECONDS, name resolution included)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
        return "HF_HUB_OFFLINE is set"
    host, port = _endpoint()
    outcome: list[str | None] = []

    def probe():  # in a thread: name resolution has no timeout of its own
        try:
            socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(f"cannot connect to {host}: {e.strerror or e}")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(PROBE_SECONDS + 0.5)
    return outcome[0] if outcome else f"no answer from {host} within {PROBE_SECONDS:g} s"


def hub_file(repo: str, filename: str | None = None, patterns: list[str] | None = None, *, download: bool = True,
             what: str, advice: str, error: type[Exception]):
    """A file of a hub repo (or, with no filename, a snapshot of the files matching `patterns`): from the
    local cache, else downloaded when the hub answers. Neither: one `error` "{what}: ...; {advice}".
    download=False only checks that it can be had: None where it would download."""
    import huggingface_hub as hf

    try:
        cached = (hf.try_to_load_from_cache(repo, filename) if filename
                  else hf.snapshot_download(repo, allow_patterns=patterns, local_files_only=True))
        if isinstance(cached, str):
            return Path(cached)
    except Exception:  # noqa: BLE001  (not in the cache)
        pass
    why = hub_unreachable()
    if why:
        raise error(f"{what}: not in the local cache and the hub is unreachable ({why}); {advice}")
    if not download:
        return None
    try:
        if filename:
            return Path(hf.hf_hub_download(repo, filename))
        return Path(hf.snapshot_download(repo, allow_patterns=patterns))
    except Exception as e:  # noqa: BLE001  (the hub refused: missing repo, rate limit, proxy, ...)
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise error(f"{what}: download failed ({type(e).__name__}: {first}); {advice}") from None
