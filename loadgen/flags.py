"""Argument types for the command line: each rejects a bad value with a message naming the flag."""

from __future__ import annotations

import argparse
import math


class UsageError(ValueError):
    """A flag has a bad value; the message names the flag."""


def _int_at_least(flag: str, lo: int):
    """An argparse type: a whole number >= ``lo``; a bad value's message names ``flag``."""
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a whole number, got {s!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{flag} must be >= {lo}, got {v}")
        return v
    return parse


def _positive_int(flag: str):
    return _int_at_least(flag, 1)


def _non_negative_int(flag: str):
    return _int_at_least(flag, 0)


def _port(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--port must be a whole number, got {s!r}") from None
    if not 1 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"--port must be in 1..65535, got {v}")
    return v


def _positive_float(flag: str, allow_inf: bool = False):
    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number, got {s!r}") from None
        if math.isnan(v) or v <= 0 or (math.isinf(v) and not allow_inf):
            extra = " or inf" if allow_inf else ""
            raise argparse.ArgumentTypeError(f"{flag} must be a number > 0{extra}, got {s!r}")
        return v
    return parse


def _ratio(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--random-range-ratio must be a number, got {s!r}") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"--random-range-ratio must be in [0, 1), got {s!r}")
    return v


def _header(s: str) -> tuple[str, str]:
    if "=" not in s and ":" not in s:
        raise argparse.ArgumentTypeError(f"--header must be KEY=VALUE or 'KEY: VALUE', got {s!r}")
    sep = "=" if "=" in s and (":" not in s or s.index("=") < s.index(":")) else ":"
    k, v = s.split(sep, 1)
    return k.strip(), v.strip()


def _json_obj(s: str) -> dict:
    import orjson

    try:
        v = orjson.loads(s)
    except orjson.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"--extra-body must be a JSON object: {e}") from None
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError("--extra-body must be a JSON object like '{\"temperature\": 0}'")
    return v


def _workers(s: str) -> int | str:
    """--workers: a whole number >= 1 or 'auto'."""
    if s.strip().lower() == "auto":
        return "auto"
    return _positive_int("--workers")(s)
