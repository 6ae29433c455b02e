"""Trace readers on the real samples in /work/shared/data (README row counts) and on bad input.

tests/fixtures/burstgpt_8col.csv is derived by us from the 6-column sample (its first 5 rows
and its first failed row), with made-up ``Session ID`` and ``Elapsed time`` columns, because
we have no sample of the 8-column layout.
"""

from pathlib import Path

import numpy as np
import pytest

from arrivals.traces import (
    TraceFormatError,
    parse_columns,
    read_azure,
    read_burstgpt,
    read_generic,
    read_mooncake,
    read_trace,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not DATA.is_dir():
    DATA = Path("/work/shared/data")
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BURSTGPT = DATA / "burstgpt" / "BurstGPT_1_rows1-400.csv"
AZURE_CODE = DATA / "azure_llm_2023" / "AzureLLMInferenceTrace_code_rows1-4000.csv"
AZURE_CONV = DATA / "azure_llm_2023" / "AzureLLMInferenceTrace_conv_rows1-5000.csv"
MOON_CONV = DATA / "mooncake" / "conversation_trace_lines1-4000.jsonl"
MOON_SYN = DATA / "mooncake" / "synthetic_trace_lines1-1000.jsonl"


def need(p: Path) -> Path:
    if not p.is_file():
        pytest.skip(f"sample {p} is absent (the shared data folder is not mounted here)")
    return p


def test_burstgpt_sample_has_400_rows_and_17_failed():
    tr = read_burstgpt(need(BURSTGPT))
    assert len(tr) == 400
    assert int((~tr.ok).sum()) == 17
    assert np.all(tr.input_tokens[~tr.ok] == 0) and np.all(tr.output_tokens[~tr.ok] == 0)
    assert set(tr.extra["model"]) == {"ChatGPT", "GPT-4"}
    assert set(tr.extra["log_type"]) <= {"Conversation log", "API log"}
    assert tr.row[0] == 2 and tr.input_tokens[0] == 472 and tr.output_tokens[0] == 18


def test_burstgpt_times_are_seconds_from_the_first_request_over_the_readme_span():
    tr = read_burstgpt(need(BURSTGPT))
    assert tr.t[0] == 0.0 and tr.t[1] == 40.0  # timestamps 5 and 45
    assert tr.span == 37269.0


def test_burstgpt_eight_column_layout_keeps_session_and_elapsed_time():
    tr = read_burstgpt(FIXTURES / "burstgpt_8col.csv")
    assert len(tr) == 6 and int((~tr.ok).sum()) == 1
    assert tr.extra["session_id"][:2] == ["s0", "s1"]
    assert tr.extra["elapsed_time"][0] == 1.5
    assert list(tr.t[:3]) == [0.0, 40.0, 113.0]


@pytest.mark.parametrize("path,rows,span", [(AZURE_CODE, 4000, 1366), (AZURE_CONV, 5000, 1023)])
def test_azure_samples_have_their_row_counts_and_spans(path, rows, span):
    tr = read_azure(need(path))
    assert len(tr) == rows
    assert abs(tr.span - span) < 2  # README: 18:17:03 -> 18:39:49 and 18:15:46 -> 18:32:49
    assert np.all(np.diff(tr.t) >= 0) and tr.ok.all()


def test_azure_keeps_the_seven_fractional_digits():
    tr = read_azure(need(AZURE_CODE))
    # rows 1-2: 18:17:03.9799600 and 18:17:04.0319600 -> 0.052 s apart, exactly in 100 ns ticks
    assert tr.t[1] == pytest.approx(0.052, abs=1e-9)
    assert (tr.input_tokens[0], tr.output_tokens[0]) == (4808, 10)


@pytest.mark.parametrize("path,rows", [(MOON_CONV, 4000), (MOON_SYN, 1000)])
def test_mooncake_samples_have_their_row_counts_and_hash_ids(path, rows):
    tr = read_mooncake(need(path))
    assert len(tr) == rows
    assert all(isinstance(h, list) for h in tr.extra["hash_ids"])
    assert tr.extra["hash_ids"][0][0] == 0


def test_mooncake_timestamps_are_milliseconds():
    tr = read_mooncake(need(MOON_SYN))
    assert tr.span == pytest.approx(272.653, abs=1e-9)


def test_generic_jsonl_with_a_column_mapping_reads_mooncake_alike():
    cols = parse_columns("time=timestamp,input=input_length,output=output_length")
    tr = read_generic(need(MOON_SYN), cols, format="jsonl", time_unit="ms")
    ref = read_mooncake(MOON_SYN)
    assert np.array_equal(tr.t, ref.t) and np.array_equal(tr.input_tokens, ref.input_tokens)


def test_generic_csv_with_iso_times_reads_azure_alike():
    cols = parse_columns("time=TIMESTAMP,input=ContextTokens,output=GeneratedTokens")
    tr = read_trace(need(AZURE_CONV), "csv", columns=cols, time_unit="iso")
    ref = read_azure(AZURE_CONV)
    assert np.allclose(tr.t, ref.t, atol=1e-9) and np.array_equal(tr.output_tokens,
                                                                   ref.output_tokens)


def test_generic_csv_keeps_optional_model_column(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("ts,i,o,m\n2.0,10,5,a\n1.0,3,0,b\n")
    tr = read_generic(p, parse_columns("time=ts,input=i,output=o,model=m"))
    assert list(tr.t) == [0.0, 1.0] and tr.extra["model"] == ["b", "a"]
    assert list(tr.ok) == [False, True] and list(tr.row) == [3, 2]


def test_a_malformed_burstgpt_row_names_file_line_and_column(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                 "5,ChatGPT,472,18,490,Conversation log\n"
                 "45,ChatGPT,lots,230,1317,Conversation log\n")
    with pytest.raises(TraceFormatError, match=r"bad\.csv:3: column 'Request tokens'.*'lots'"):
        read_burstgpt(p)


def test_a_row_with_missing_fields_names_its_line(tmp_path):
    p = tmp_path / "short.csv"
    p.write_bytes(b"TIMESTAMP,ContextTokens,GeneratedTokens\r\n"
                  b"2023-11-16 18:17:03.9799600,4808,10\r\n2023-11-16 18:17:04.0319600,3180\r\n")
    with pytest.raises(TraceFormatError, match=r"short\.csv:3:.*expected 3 fields"):
        read_azure(p)


def test_a_bad_azure_timestamp_names_line_and_column(tmp_path):
    p = tmp_path / "ts.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,2\n")
    with pytest.raises(TraceFormatError, match=r"ts\.csv:2: column 'TIMESTAMP'"):
        read_azure(p)


def test_a_bad_mooncake_line_names_its_line(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"timestamp": 0, "input_length": 5, "output_length": 1}\n{"timestamp": 3,\n')
    with pytest.raises(TraceFormatError, match=r"m\.jsonl:2: not valid JSON"):
        read_mooncake(p)
    p.write_text('{"timestamp": 0, "input_length": 5}\n')
    with pytest.raises(TraceFormatError, match=r"m\.jsonl:1: column 'output_length': missing"):
        read_mooncake(p)


def test_a_wrong_header_says_which_columns_are_missing(tmp_path):
    with pytest.raises(TraceFormatError, match=r"lacks column.*--trace-format"):
        read_burstgpt(need(AZURE_CODE))


def test_a_missing_file_is_named():
    with pytest.raises(TraceFormatError, match="nope.csv: no such file"):
        read_trace("nope.csv", "burstgpt")
