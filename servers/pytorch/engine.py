"""The batching engine of the PyTorch server: one worker thread runs the model.

Design (correct first, then reasonably fast):

- **Prefill** is per sequence (batch of one, no padding), so no query row is ever a padding
  position. Its KV cache (``[1, heads, P, dim]`` per layer) and first token join the batch.
- **Decode** is one batched forward per step over every running sequence. The batch keeps one
  KV cache per layer, ``[B, heads, T, dim]``, **left-padded**: a row whose sequence is
  shorter than T has zero keys/values in its first columns and 0 in the 2-D attention mask
  ``[B, T]``; each row's ``position_ids`` is its own length, so RoPE positions are exact. The
  padded columns are masked out of attention, so a row's logits equal those of the same
  sequence run alone (up to float rounding; tests/test_pytorch_engine.py checks the tokens).
- **Joining** (continuous batching): a sequence with a cache of P columns joins a batch of T
  columns by left-padding the shorter of the two to max(P, T) and concatenating rows.
  **Leaving** (finished, aborted) drops its row; columns that are padding in every remaining
  row are trimmed from the left.
- ``batching="continuous"`` admits waiting requests into free slots before every step;
  ``batching="static"`` admits up to ``max_batch`` waiting requests only when the batch is
  empty, and nothing joins until every sequence of that batch has finished (a finished
  sequence leaves its row at once, it does not keep computing).

Decoding is greedy (argmax). ``min_tokens`` masks EOS until that many tokens exist;
``ignore_eos`` never stops on EOS. Tokens are handed to the event loop through ``notify``
(called from the worker thread once per step with the sequences that changed).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

BATCHING_MODES = ("continuous", "static")


@dataclass(eq=False)
class Sequence:
    """One request in the engine. The worker thread appends to ``output_ids`` and then sets
    ``finish_reason`` ("length", "stop" or "abort"); readers check ``finish_reason`` first."""

    number: int
    prompt_ids: list[int]
    max_tokens: int
    min_tokens: int = 0
    ignore_eos: bool = False
    output_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    aborted: bool = False  # set by the front end when the client leaves
    t_submitted: float = 0.0  # perf_counter seconds
    t_prefill: float = 0.0  # when its prefill started
    t_first_token: float = 0.0
    t_done: float = 0.0
    batch_max: int = 0  # the largest decode batch this sequence was part of
    batch_sum: int = 0  # sum of batch sizes over its decode steps
    decode_steps: int = 0
    waiter: Any = None  # the front end's wake-up handle (an asyncio.Event)

    def timings(self) -> dict[str, float]:
        """Server-side timings in seconds, the layout of the sim's ``sim_timings``:

        queue_s   = t_prefill - t_submitted        waiting for a batch row
        prefill_s = t_first_token - t_prefill      its prompt's forward pass and first sample
        decode_s  = t_done - t_first_token         the batched decode steps

        Steps not reached (an aborted request) are 0.
        """
        start = self.t_prefill or self.t_submitted
        first = self.t_first_token or start
        done = self.t_done or first
        return {"queue_s": round(max(0.0, start - self.t_submitted), 6),
                "prefill_s": round(max(0.0, first - start), 6),
                "decode_s": round(max(0.0, done - first), 6)}

    def stats(self) -> dict[str, float]:
        """Server-side timings (s) and batch sizes, for the response's ``pytorch_stats``."""
        done = self.t_done or time.perf_counter()
        return {
            "queue_and_prefill_s": round(self.t_first_token - self.t_submitted, 6)
            if self.t_first_token else 0.0,
            "total_s": round(done - self.t_submitted, 6),
            "batch_max": self.batch_max,
            "batch_mean": round(self.batch_sum / self.decode_steps, 3)
            if self.decode_steps else 0.0,
        }


@dataclass
class EngineCounters:
    """Plain counters read by /metrics at scrape time."""

    prompt_tokens: int = 0
    generation_tokens: int = 0
    requests_finished: int = 0
    requests_aborted: int = 0
    decode_steps: int = 0
    decode_batch_sum: int = 0  # sum over decode steps of the batch size
    prefills: int = 0
    batch_max_seen: int = 0


class Engine:
    """Runs ``model`` (a transformers causal LM) on a worker thread with batching."""

    def __init__(self, model: Any, eos_token_ids: Iterable[int], *, max_batch: int = 8,
                 batching: str = "continuous", threads: int = 1, device: str = "cpu",
                 notify: Callable[[list[Sequence]], None] | None = None) -> None:
        if batching not in BATCHING_MODES:
            raise ValueError(f"batching must be one of {BATCHING_MODES}, got {batching!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model = model
        self.eos = sorted(set(eos_token_ids))
        self.max_batch = max_batch
        self.batching = batching
        self.threads = threads
        self.device = torch.device(device)
        self.notify = notify or (lambda seqs: None)
        self.counters = EngineCounters()
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        # The batch: rows, per-layer left-padded KV cache, mask [B, T], next positions [B],
        # last tokens [B].
        self._rows: list[Sequence] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self._pos: torch.Tensor | None = None
        self._last: torch.Tensor | None = None

    # -- the front end's side (any thread) ----------------------------------------------

    @property
    def num_running(self) -> int:
        return len(self._rows)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def submit(self, seq: Sequence) -> None:
        seq.t_submitted = time.perf_counter()
        with self._cond:
            self._waiting.append(seq)
            self._cond.notify()

    def abort(self, seq: Sequence) -> None:
        """Ask the worker to drop ``seq`` (no-op once it finished)."""
        if seq.finish_reason is None:
            seq.aborted = True
            with self._cond:
                self._cond.notify()

    def warmup(self, token: int = 0) -> float:
        """Run two short sequences through prefill and batched decode before serving, so the
        first real request does not pay one-time kernel initialisation; counters are reset.
        Returns the seconds it took. Call before ``start``."""
        t = time.perf_counter()
        seqs = [Sequence(-1, [token] * 8, 4, ignore_eos=True),
                Sequence(-2, [token] * 5, 4, ignore_eos=True)]
        for s in seqs:
            self.submit(s)
        with torch.inference_mode():
            while self._rows or self._waiting:
                self.iterate()
        self.counters = EngineCounters()
        return time.perf_counter() - t

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pytorch-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # -- the worker thread ---------------------------------------------------------------

    def _run(self) -> None:
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                while True:
                    with self._cond:
                        while not self._stopping and not self._rows and not self._waiting:
                            self._cond.wait()
                        if self._stopping:
                            break
                    self.iterate()
        except BaseException as exc:  # the server answers 500s from now on and logs it
            self.error = exc
            raise
        finally:
            self._abort_all()

    def iterate(self) -> list[Sequence]:
        """One engine iteration: admit and prefill what may join (their first tokens are
        notified at once, so they stream while the decode step runs), one decode step over the
        batch, drop finished rows, notify the rows. Returns the sequences that changed.
        The worker thread loops on this; tests call it directly (inside inference_mode)."""
        with self._cond:
            admitted = self._take_admissible()
        for seq in admitted:
            self._prefill(seq)
        if admitted:
            self.notify(admitted)
        stepped = self.step() if self._rows else []
        self._drop_finished()
        if stepped:
            self.notify(stepped)
        return admitted + [s for s in stepped if s not in admitted]

    def _take_admissible(self) -> list[Sequence]:
        """Pop the waiting sequences that may join now (called with the lock held)."""
        while self._waiting and self._waiting[0].aborted:
            self._finish(self._waiting.popleft(), "abort")
        if self.batching == "static" and self._rows:
            return []
        out = []
        while self._waiting and len(self._rows) + len(out) < self.max_batch:
            seq = self._waiting.popleft()
            if seq.aborted:
                self._finish(seq, "abort")
            else:
                out.append(seq)
        return out

    def _prefill(self, seq: Sequence) -> None:
        """Run ``seq``'s prompt alone, emit its first token, add it to the batch."""
        if seq.aborted:
            self._finish(seq, "abort")
            return
        seq.t_prefill = time.perf_counter()
        ids = torch.tensor([seq.prompt_ids], dtype=torch.long, device=self.device)
        out = self.model(input_ids=ids, use_cache=True)
        self.counters.prefills += 1
        self.counters.prompt_tokens += len(seq.prompt_ids)
        token = int(self._choose(out.logits[:, -1, :], [seq])[0])
        seq.t_first_token = time.perf_counter()
        if not self._emit(seq, token):
            self._join(seq, out.past_key_values, token)

    def step(self) -> list[Sequence]:
        """One batched decode step over every running row; returns the rows."""
        rows = self._rows
        b = len(rows)
        mask = torch.cat([self._mask, self._mask.new_ones((b, 1))], dim=1)
        out = self.model(input_ids=self._last[:, None], attention_mask=mask,
                         position_ids=self._pos[:, None], past_key_values=self._cache,
                         use_cache=True)
        self._cache = out.past_key_values
        self._mask = mask
        self._pos = self._pos + 1
        tokens = self._choose(out.logits[:, -1, :], rows)
        self._last = tokens
        c = self.counters
        c.decode_steps += 1
        c.decode_batch_sum += b
        c.batch_max_seen = max(c.batch_max_seen, b)
        for seq, token in zip(rows, tokens.tolist(), strict=True):
            seq.decode_steps += 1
            seq.batch_sum += b
            seq.batch_max = max(seq.batch_max, b)
            self._emit(seq, token)
        return list(rows)

    def _choose(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        """Greedy tokens [B]; EOS is masked for rows that have fewer than min_tokens."""
        block = [i for i, s in enumerate(seqs) if len(s.output_ids) < s.min_tokens]
        if block and self.eos:
            logits = logits.clone()
            rows = torch.tensor(block, device=logits.device)[:, None]
            logits[rows, torch.tensor(self.eos, device=logits.device)[None, :]] = -torch.inf
        return logits.argmax(dim=-1)

    def _emit(self, seq: Sequence, token: int) -> bool:
        """Append ``token`` to ``seq``; True if ``seq`` is finished now."""
        seq.output_ids.append(token)
        self.counters.generation_tokens += 1
        if seq.aborted:
            self._finish(seq, "abort")
        elif len(seq.output_ids) >= seq.max_tokens:
            self._finish(seq, "length")
        elif token in self.eos and not seq.ignore_eos:
            self._finish(seq, "stop")
        return seq.finish_reason is not None

    def _finish(self, seq: Sequence, reason: str) -> None:
        seq.t_done = time.perf_counter()
        seq.finish_reason = reason
        if reason == "abort":
            self.counters.requests_aborted += 1
        else:
            self.counters.requests_finished += 1

    # -- the batch's KV cache ------------------------------------------------------------

    def _join(self, seq: Sequence, cache: Any, token: int) -> None:
        """Add a prefilled sequence (cache of 1 row, P columns) to the batch."""
        p = len(seq.prompt_ids)
        new_mask = torch.ones((1, p), dtype=torch.long, device=self.device)
        if not self._rows:
            self._rows = [seq]
            self._cache, self._mask = cache, new_mask
            self._pos = torch.tensor([p], device=self.device)
            self._last = torch.tensor([token], device=self.device)
            return
        t = self._mask.shape[1]
        width = max(t, p)
        for layer in _layers(self._cache, cache):
            (bk, bv), (nk, nv) = layer
            layer_set = (torch.cat([_left_pad(bk, width), _left_pad(nk, width)], dim=0),
                         torch.cat([_left_pad(bv, width), _left_pad(nv, width)], dim=0))
            _set_kv(self._cache, layer, layer_set)
        self._mask = torch.cat([_left_pad(self._mask, width), _left_pad(new_mask, width)], 0)
        self._pos = torch.cat([self._pos, self._pos.new_tensor([p])])
        self._last = torch.cat([self._last, self._last.new_tensor([token])])
        self._rows.append(seq)

    def _drop_finished(self) -> None:
        keep = [i for i, s in enumerate(self._rows) if s.finish_reason is None and not s.aborted]
        for s in self._rows:
            if s.finish_reason is None and s.aborted:
                self._finish(s, "abort")
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._rows, self._cache, self._mask, self._pos, self._last = [], None, None, None, None
            return
        idx = torch.tensor(keep, device=self.device)
        mask = self._mask.index_select(0, idx)
        # Columns that are padding in every remaining row are trimmed from the left.
        first = int((mask.sum(dim=0) > 0).nonzero()[0])
        for layer in _layers(self._cache):
            ((k, v),) = layer
            _set_kv(self._cache, layer, (k.index_select(0, idx)[:, :, first:],
                                         v.index_select(0, idx)[:, :, first:]))
        self._mask = mask[:, first:]
        self._pos = self._pos.index_select(0, idx)
        self._last = self._last.index_select(0, idx)
        self._rows = [self._rows[i] for i in keep]

    def _abort_all(self) -> None:
        changed = []
        with self._cond:
            pending = list(self._waiting) + self._rows
            self._waiting.clear()
        for s in pending:
            if s.finish_reason is None:
                self._finish(s, "abort")
                changed.append(s)
        self._rows, self._cache = [], None
        if changed:
            self.notify(changed)


# -- transformers' cache, across versions --------------------------------------------------
# transformers >= 4.56 keeps a DynamicCache's tensors in ``cache.layers[i].keys/.values``;
# older versions in ``cache.key_cache[i]``/``cache.value_cache[i]``.

class _Layer(tuple):
    """((k, v) of cache 1, (k, v) of cache 2, ...) for one layer index, and that index."""

    index: int


def _layers(*caches: Any) -> list[_Layer]:
    n = _num_layers(caches[0])
    out = []
    for i in range(n):
        layer = _Layer(_get_kv(c, i) for c in caches)
        layer.index = i
        out.append(layer)
    return out


def _num_layers(cache: Any) -> int:
    if hasattr(cache, "layers"):
        return len(cache.layers)
    return len(cache.key_cache)


def _get_kv(cache: Any, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(cache, "layers"):
        return cache.layers[i].keys, cache.layers[i].values
    return cache.key_cache[i], cache.value_cache[i]


def _set_kv(cache: Any, layer: _Layer, kv: tuple[torch.Tensor, torch.Tensor]) -> None:
    if hasattr(cache, "layers"):
        cache.layers[layer.index].keys, cache.layers[layer.index].values = kv
    else:
        cache.key_cache[layer.index], cache.value_cache[layer.index] = kv


def _left_pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad the sequence dimension (-2 for KV [B, H, T, D], -1 for masks [B, T])."""
    dim = -2 if x.dim() == 4 else -1
    missing = width - x.shape[dim]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)
