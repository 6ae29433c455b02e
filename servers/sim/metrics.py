"""Prometheus metrics of one sim server, read from the engine at scrape time.

A collector on a registry private to the app (never the global one, so several servers can
live in one process) reads the engine's plain counters when /metrics is scraped: the hot path
pays nothing for metrics. Names follow vLLM's (``vllm:...``) with the ``sim:`` prefix;
prometheus_client appends ``_total`` to counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from servers.sim.engine import Engine


class SimCollector(Collector):
    """Gauges and counters of one engine, plus injected faults by kind."""

    def __init__(self, engine: Engine, model: str, faults: Callable[[], Mapping[str, int]]):
        self._engine = engine
        self._model = model
        self._faults = faults

    def collect(self) -> Iterator[Metric]:
        e, labels, model = self._engine, ["model_name"], [self._model]
        gauges = (
            ("sim:num_requests_running", "Sequences in the running batch.", e.num_running),
            ("sim:num_requests_waiting", "Requests waiting for a batch slot.", e.num_waiting),
            ("sim:engine_wake_late_max_seconds", "Largest delay of an iteration's token "
             "emission after its scheduled end.", e.wake_late_s_max),
        )
        for name, doc, value in gauges:
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(model, value)
            yield g
        counters = (
            ("sim:prompt_tokens", "Prompt tokens prefilled.", e.prompt_tokens_total),
            ("sim:generation_tokens", "Tokens generated.", e.generation_tokens_total),
            ("sim:request_success", "Requests finished (length or stop).",
             e.requests_finished_total),
            ("sim:request_aborted", "Requests aborted (client gone or fault).",
             e.requests_aborted_total),
            ("sim:engine_steps", "Engine iterations run.", e.steps_total),
            ("sim:engine_resyncs", "Times the engine fell behind its schedule by more than "
             "MAX_LAG_S and re-anchored it (the timing model was not honoured).",
             e.resyncs_total),
            ("sim:engine_wake_late_seconds", "Sum over iterations of the delay of token "
             "emission after the scheduled end (divide by engine_steps for the mean).",
             e.wake_late_s_total),
        )
        for name, doc, value in counters:
            c = CounterMetricFamily(name, doc, labels=labels)
            c.add_metric(model, value)
            yield c
        faults = CounterMetricFamily("sim:faults_injected", "Injected faults by kind.",
                                     labels=["model_name", "kind"])
        for kind, count in sorted(self._faults().items()):
            faults.add_metric([self._model, kind], count)
        yield faults


def make_registry(engine: Engine, model: str,
                  faults: Callable[[], Mapping[str, int]]) -> CollectorRegistry:
    """A fresh registry holding only this server's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SimCollector(engine, model, faults))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of ``registry``."""
    return generate_latest(registry)
