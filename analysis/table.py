"""Human-readable rendering of a summary (the table printed at the end of a run)."""

from __future__ import annotations

from typing import Any


def _f(x: Any, nd: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def render_summary(s: dict[str, Any]) -> str:
    v = s["validity"]
    c = s["counts"]
    tp = s["throughput"]
    lines = []
    lines.append(f"== {v['verdict']} ==  {s['mode']}  ({s['run_dir']})")
    for r in v["reasons"]:
        lines.append(f"  ! {r}")
    for n in v["notes"]:
        lines.append(f"  note: {n}")
    lines.append(
        f"requests: {c['intended']} intended, {c['sent']} sent, {c['ok']} ok, {c['failed']} failed"
        + (f" ({', '.join(f'{k}={n}' for k, n in s['errors']['by_status'].items())})" if c["failed"] else "")
    )
    by_cause = s["errors"].get("by_cause")
    if by_cause:
        lines.append(f"  {'errors: status':<20} {'cause':<26} {'count':>6}  example")
        for row in by_cause:
            lines.append(f"  {row['status']:<20} {row['cause'][:26]:<26} {row['count']:>6}  "
                         f"{str(row['example'])[:90]}")
    else:
        for st, ex in s["errors"]["examples"].items():
            lines.append(f"  e.g. {st}: {str(ex)[:160]}")
    lines.append(
        f"throughput: {_f(tp['request_throughput'])} req/s, {_f(tp['output_token_throughput'], 1)} "
        f"output tok/s over {_f(tp['duration_s'])} s (intended rate {_f(tp['intended_rate'])}, "
        f"achieved send rate {_f(tp['achieved_send_rate'])} req/s)"
    )
    hdr = f"{'latency (ms)':<26}{'mean':>9}{'p50':>9}{'p90':>9}{'p99':>9}{'p99.9':>9}{'max':>9}{'n':>8}"
    lines.append(hdr)
    lines.append("-" * len(hdr))
    rows = [
        ("TTFT from intended", s["latency_ms"]["from_intended"]["ttft"]),
        ("TTFT from sent", s["latency_ms"]["from_sent"]["ttft"]),
        ("E2E from intended", s["latency_ms"]["from_intended"]["e2e"]),
        ("E2E from sent", s["latency_ms"]["from_sent"]["e2e"]),
        ("TPOT", s["latency_ms"]["from_sent"]["tpot"]),
        ("ITL (per chunk)", s["latency_ms"]["from_sent"]["itl"]),
        ("send lag (generator)", s["self_check"]["send_lag_ms"]),
    ]
    per_chunk = s["tokens"].get("per_chunk") or {}
    if per_chunk.get("server") or per_chunk.get("estimated"):  # chunks of several tokens
        label = "ITL (per token, est.)" if per_chunk.get("estimated") else "ITL (per token)"
        rows.insert(6, (label, s["latency_ms"]["from_sent"]["itl_per_token"]))
    if s["self_check"].get("slot_wait_ms"):
        rows.append(("slot wait (closed loop)", s["self_check"]["slot_wait_ms"]))
    for name, d in rows:
        lines.append(
            f"{name:<26}" + "".join(f"{_f(d.get(k)):>9}" for k in ("mean", "p50", "p90", "p99", "p99.9", "max"))
            + f"{d.get('count', 0):>8}"
        )
    sc = s["self_check"]
    ll = sc.get("event_loop_lag_ms") or {}
    cpu = sc.get("client_cpu") or {}
    ks = sc.get("interarrival_ks") or {}
    lines.append(
        f"generator: event-loop lag p99 {_f(ll.get('p99'))} ms max {_f(ll.get('max'))} ms; "
        f"CPU {_f(cpu.get('cpu_s'))} s ({_f((cpu.get('utilisation') or 0) * 100, 1)}% of one core), "
        f"{_f(cpu.get('us_per_request'), 0)} us/request, {_f(cpu.get('us_per_output_token'), 1)} us/token"
        + (f"; inter-arrival KS p={ks['pvalue']:.3g}" if ks.get("pvalue") is not None else "")
    )
    by_w = sc.get("send_lag_ms_by_worker") or {}
    if len(by_w) > 1:
        lines.append(f"workers: {len(by_w)}; send lag p99 by worker (ms): " + ", ".join(
            f"{w}: {_f(v.get('p99'), 3)}" for w, v in by_w.items()))
    tok = s["tokens"]["sources"]
    lines.append(f"token counts from: input {tok['input']}, output {tok['output']}")
    tc = s.get("token_counts") or {}
    for m in tc.get("mismatches", []):
        lines.append(f"  ! token counts disagree: {m}")
    ss = s.get("sessions")
    if ss:
        ti, tr = ss.get("think_ms_intended") or {}, ss.get("think_ms_realised") or {}
        lines.append(
            f"sessions: {ss['sessions']} ({ss['follow_up_turns_recorded']} follow-up turns); "
            f"think time intended p50 {_f(ti.get('p50'), 1)} ms, realised p50 "
            f"{_f(tr.get('p50'), 1)} ms")
    rf = s.get("replay_fidelity")
    if rf and rf.get("ks_stat") is not None:
        lines.append(
            f"replay fidelity: inter-arrival KS D={rf['ks_stat']:.3f} p={rf['ks_pvalue']:.3g}, "
            f"CV trace {_f(rf['cv_intended'])} vs sent {_f(rf['cv_sent'])}")
    if per_chunk.get("note"):
        lines.append(f"note: {per_chunk['note']}")
    td = s.get("ttft_decomposition") or {}
    if td.get("available"):
        c = td["components_ms"]
        lines.append(
            f"TTFT from intended, mean {_f(td['ttft_intended_ms']['mean'])} ms = generator lag "
            f"{_f(c['generator_lag']['mean'])} + server queue {_f(c['server_queue']['mean'])} + "
            f"prefill {_f(c['server_prefill']['mean'])} + transport/other "
            f"{_f(c['transport_other']['mean'])} ms (server-reported timings, "
            f"{td['n_requests']} requests)")
    return "\n".join(lines)
