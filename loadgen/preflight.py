"""Preflight: before t0, check that the endpoint answers, serves the model, and streams.

A benchmark that starts against the wrong port or model wastes the user's time and produces
a table of errors; this fails fast with a message that says what to fix.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson

from loadgen.clients.openai import ClientConfig, build_body, send
from loadgen.records import Record


class PreflightError(RuntimeError):
    """The endpoint is not usable; the message says why and what to do."""


async def _get_json(session: aiohttp.ClientSession, url: str, headers: dict) -> tuple[int, Any]:
    async with session.get(url, headers=headers) as r:
        body = await r.read()
        try:
            return r.status, orjson.loads(body)
        except orjson.JSONDecodeError:
            return r.status, body[:200].decode("utf-8", "replace")


async def preflight(cfg: ClientConfig, *, timeout_s: float = 30.0) -> dict[str, Any]:
    """Return what the server says about itself; raise PreflightError if it cannot be used."""
    info: dict[str, Any] = {"base_url": cfg.base_url}
    headers = {k: v for k, v in cfg.request_headers().items() if k != "Content-Type"}
    to = aiohttp.ClientTimeout(total=timeout_s)
    connector = aiohttp.TCPConnector(ssl=bool(cfg.verify_tls))
    async with aiohttp.ClientSession(timeout=to, trust_env=False, connector=connector) as session:
        models_url = cfg.base_url.rstrip("/") + "/v1/models"
        try:
            status, body = await _get_json(session, models_url, headers)
        except aiohttp.ClientConnectorCertificateError as e:
            raise PreflightError(
                f"{cfg.base_url}: the server's TLS certificate is not trusted ({e.certificate_error}); "
                "fix the certificate, or pass --insecure to skip verification (not for real "
                "credentials)") from e
        except aiohttp.ClientConnectorError as e:
            raise PreflightError(
                f"cannot connect to {cfg.base_url} ({e.os_error.strerror if e.os_error else e}); "
                "is the server running and is --base-url (or --host/--port) right?"
            ) from e
        except (aiohttp.ClientError, TimeoutError) as e:
            raise PreflightError(f"{models_url}: {type(e).__name__}: {e}") from e
        if status in (401, 403):
            raise PreflightError(f"{models_url}: HTTP {status}; check --api-key / OPENAI_API_KEY")
        wanted = cfg.served_model_name or cfg.model
        if status == 200 and isinstance(body, dict) and isinstance(body.get("data"), list):
            ids = [m.get("id") for m in body["data"] if isinstance(m, dict)]
            info["models"] = ids
            if wanted not in ids:
                raise PreflightError(
                    f"model {wanted!r} is not served at {cfg.base_url}; it serves: "
                    f"{', '.join(map(str, ids)) or '(none)'}. Pass one of these with --model."
                )
        else:
            info["models"] = {"unavailable": f"GET /v1/models answered HTTP {status}"}
        for path in ("/version",):
            try:
                s, b = await _get_json(session, cfg.base_url.rstrip("/") + path, headers)
                if s == 200:
                    info["version"] = b
            except (aiohttp.ClientError, TimeoutError):
                pass

        # One tiny real request through the same client code as the run.
        probe = ClientConfig(**{**cfg.__dict__, "ignore_eos": False, "extra_body": cfg.extra_body})
        rec = Record(request_id=-1)
        body_bytes = build_body(probe, "Hello", 2)
        await send(session, probe, probe.request_headers(), body_bytes, rec, time.perf_counter(),
                   aiohttp.ClientTimeout(total=timeout_s))
        info["probe"] = {"status": rec.status, "http_status": rec.http_status,
                         "output_tokens": rec.output_tokens,
                         "output_tokens_source": rec.output_tokens_source}
        if rec.status != "ok":
            hint = ""
            if rec.http_status == 404:
                hint = f" Is --endpoint {cfg.endpoint} right for this server?"
            raise PreflightError(
                f"test request to {cfg.url} failed ({rec.status}): {rec.error}.{hint} "
                "(skip this check with --skip-preflight)"
            )
    return info
