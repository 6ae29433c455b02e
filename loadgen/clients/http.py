"""The generic HTTP request/reply client: any method, path and body, for any model service.

Bodies are built before t0, from one of

- ``--payload-file FILE`` (repeatable): each file's bytes is one payload variant; request i
  sends a variant drawn uniformly with a seeded generator (the workload's seed), so payload
  size is independent of arrival time;
- ``--body-template TEXT`` (or ``@FILE``): a ``string.Template`` filled per request with
  ``$prompt``, ``$prompt_json`` (the prompt as a JSON string, quotes included),
  ``$input_tokens``, ``$output_tokens``, ``$request_id`` and ``$model``, e.g.
  ``'{"model": "$model", "prompt": $prompt_json, "max_tokens": $output_tokens}'``;
- neither: no body (e.g. ``--http-method GET``).

A response whose status is in ``--expect-status`` (default 200) is ``ok``, any other status is
``http_error``; the whole body is read, its size is ``response_bytes``, and ``request_bytes``
is the body sent, so latency can be conditioned on payload size (``item_id`` names the payload
file). No tokens are counted (``token_count_source`` stays ``none``); the first byte and the
end of the body are timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import string
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from loadgen.clients.failures import FAILURES, record_cancelled, record_failure
from loadgen.clients.kserve import choose_variants
from loadgen.clients.pool import make_session
from loadgen.records import Record

if TYPE_CHECKING:
    from arrivals.workload import Workload
    from loadgen.clients.base import Sender
    from loadgen.engine import EngineOptions

TEMPLATE_FIELDS = ("prompt", "prompt_json", "input_tokens", "output_tokens", "request_id",
                   "model")


@dataclass(frozen=True)
class HttpConfig:
    base_url: str
    model: str = "http"  # a label for the run (and $model in templates)
    method: str = "POST"
    path: str = "/"
    body_template: str | None = None
    payload_files: tuple[str, ...] = ()
    content_type: str | None = None  # default: application/json for templates
    expect_status: tuple[int, ...] = (200,)
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 600.0
    seed: int | None = None  # None: the workload's seed

    @property
    def url(self) -> str:
        path = self.path if self.path.startswith("/") else "/" + self.path
        return self.base_url.rstrip("/") + path


@dataclass(frozen=True)
class HttpPayload:
    body: bytes | None
    label: str | None = None


def check_template(template: str) -> None:
    """Raise ValueError naming a placeholder that is not one of TEMPLATE_FIELDS."""
    t = string.Template(template)
    bad = [name for name in t.get_identifiers() if name not in TEMPLATE_FIELDS]
    if bad or not t.is_valid():
        raise ValueError(f"--body-template: unknown or malformed placeholders {bad or '($$?)'};"
                         f" use ${', $'.join(TEMPLATE_FIELDS)} (write $$ for a literal $)")


def render(template: str, *, prompt: str, input_tokens: int, output_tokens: int,
           request_id: int, model: str) -> bytes:
    return string.Template(template).substitute(
        prompt=prompt, prompt_json=orjson.dumps(prompt).decode(), input_tokens=input_tokens,
        output_tokens=output_tokens, request_id=request_id, model=model).encode()


class HttpClient:
    """The ``Client`` (loadgen/clients/base.py) for plain HTTP request/reply services."""

    kind = "http"

    def __init__(self, cfg: HttpConfig) -> None:
        if cfg.body_template is not None and cfg.payload_files:
            raise ValueError("give either --body-template or --payload-file, not both")
        if cfg.body_template is not None:
            check_template(cfg.body_template)
        for f in cfg.payload_files:
            if not Path(f).is_file():
                raise ValueError(f"payload file {f!r} is not a file")
        self.cfg = cfg

    @property
    def label(self) -> str:
        return self.cfg.model

    @property
    def base_url(self) -> str:
        return self.cfg.base_url

    def headers(self) -> dict[str, str]:
        h = dict(self.cfg.headers)
        ctype = self.cfg.content_type or ("application/json" if self.cfg.body_template
                                          else "application/octet-stream"
                                          if self.cfg.payload_files else None)
        if ctype and "Content-Type" not in h:
            h["Content-Type"] = ctype
        return h

    def prepare(self, workload: Workload) -> Sequence[HttpPayload]:
        n = len(workload)
        if self.cfg.payload_files:
            files = [HttpPayload(Path(f).read_bytes(), Path(f).name)
                     for f in self.cfg.payload_files]
            seed = int(self.cfg.seed if self.cfg.seed is not None
                       else workload.description.get("seed") or 0)
            return [files[k] for k in choose_variants(n, len(files), seed).tolist()]
        if self.cfg.body_template is not None:
            ins, outs = workload.input_tokens.tolist(), workload.output_tokens.tolist()
            return [HttpPayload(render(self.cfg.body_template, prompt=workload.prompts[i],
                                       input_tokens=ins[i], output_tokens=outs[i],
                                       request_id=i, model=self.cfg.model))
                    for i in range(n)]
        return [HttpPayload(None)] * n

    @contextlib.asynccontextmanager
    async def connect(self, opts: EngineOptions) -> AsyncIterator[Sender]:
        cfg = self.cfg
        url, method, headers = cfg.url, cfg.method.upper(), self.headers()
        expect = frozenset(cfg.expect_status)
        timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
        clock = time.perf_counter
        async with make_session(opts, cfg.timeout_s) as session:

            async def sender(p: HttpPayload, rec: Record, t0: float) -> None:
                rec.request_bytes = len(p.body) if p.body is not None else 0
                if rec.item_id is None and p.label is not None:
                    rec.item_id = p.label
                rec.t_sent = clock() - t0
                try:
                    async with session.request(method, url, data=p.body, headers=headers,
                                               timeout=timeout) as resp:
                        rec.t_first_byte = clock() - t0
                        rec.http_status = resp.status
                        data = await resp.read()
                        rec.t_done = clock() - t0
                except asyncio.CancelledError:
                    record_cancelled(rec, t0)
                    raise
                except FAILURES as e:
                    record_failure(rec, e, t0, cfg.timeout_s)
                    return
                rec.response_bytes = len(data)
                rec.t_first_token = rec.t_done  # request/reply: the answer arrives whole
                if rec.http_status in expect:
                    rec.status = "ok"
                else:
                    rec.status = "http_error"
                    rec.error = (f"HTTP {rec.http_status} (expected "
                                 f"{', '.join(map(str, sorted(expect)))}): "
                                 + data[:300].decode("utf-8", "replace"))

            yield sender

    def describe(self) -> dict[str, Any]:
        from loadgen.manifest import redact_headers

        c = self.cfg
        return {"base_url": c.base_url, "url": c.url, "model": c.model, "method": c.method,
                "body_template": c.body_template, "payload_files": list(c.payload_files),
                "payload_bytes": {Path(f).name: Path(f).stat().st_size
                                  for f in c.payload_files},
                "content_type": self.headers().get("Content-Type"),
                "expect_status": list(c.expect_status), "headers": redact_headers(c.headers),
                "timeout_s": c.timeout_s, "seed": c.seed}

    async def preflight(self) -> dict[str, Any]:
        """Only that the server accepts connections (any HTTP answer to ``GET /``): a test
        request could change the state of a service we know nothing about."""
        from loadgen.preflight import PreflightError

        to = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=to, trust_env=False) as s:
            try:
                async with s.get(self.cfg.base_url.rstrip("/") + "/",
                                 headers=self.cfg.headers) as r:
                    status = r.status
            except (aiohttp.ClientError, TimeoutError) as e:
                raise PreflightError(f"cannot reach {self.cfg.base_url} ({type(e).__name__}: "
                                     f"{e}); is the server running and --base-url right?") from e
        return {"base_url": self.cfg.base_url, "get_root_status": status}
