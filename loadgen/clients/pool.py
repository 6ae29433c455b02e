"""The HTTP connection pool every aiohttp-based client uses during a run."""

from __future__ import annotations

import socket
from typing import Any

import aiohttp


def make_session(opts: Any, timeout_s: float, *, verify_tls: bool = True) -> aiohttp.ClientSession:
    """One keep-alive connection pool, unlimited unless asked, large read buffers.

    ``opts`` is the run's ``EngineOptions`` (``connection_limit``, ``read_bufsize``,
    ``keepalive``: False closes every connection after its response, for servers that close
    streamed connections themselves without saying so, e.g. llama-server; docs/servers.md). HTTPS
    certificates are verified (the system's trust store) unless ``verify_tls`` is False
    (``--insecure``).
    """
    connector = aiohttp.TCPConnector(
        limit=opts.connection_limit,
        limit_per_host=0,
        ttl_dns_cache=None,
        family=socket.AF_UNSPEC,
        enable_cleanup_closed=False,
        ssl=bool(verify_tls),  # True: verified against the system trust store
        force_close=not getattr(opts, "keepalive", True),
    )
    return aiohttp.ClientSession(
        connector=connector,
        read_bufsize=opts.read_bufsize,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        auto_decompress=True,
        trust_env=False,
    )
