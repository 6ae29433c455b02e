"""Provenance and telemetry: what a run ran on, and what the machine and server did meanwhile.

``env``        the environment manifest (CPU, memory, huge pages, kernel, container/VM, GPUs via
               NVML, Python and packages); ``envdiff`` compares two of them.
``sampler``    host / generator / server-process / GPU time series (a thread, off the loop).
``scraper``    the server's Prometheus /metrics, scraped into long-format rows.
``join``       per-request server state (queue, batch, KV use) at send time; TTFT decomposition.
``live``       the generator's own Prometheus endpoint.
``probe_memcpy`` host<->device (or host-only) copy bandwidth by page-size variant.
``profiling``  wrapping a server command under ``perf record`` / ``nsys profile``.
``process``    the sampler and scraper in their own process, off the generator entirely.
``session``    starting and stopping all of the above around one run (used by loadgen.run).

Field formats and files: docs/telemetry.md.
"""
