"""Precise absolute-deadline sleeps on the event loop, on the ``time.perf_counter`` clock.

uvloop's timers have millisecond granularity and may fire up to ~1 ms *early* or late; the
sim's iteration boundaries need better. On Linux, when ``perf_counter`` is CLOCK_MONOTONIC,
a timerfd armed with the absolute deadline (TFD_TIMER_ABSTIME, nanosecond resolution) is
watched by the event loop: no spinning, and the wake-up comes after the deadline by only the
kernel's wake-up latency (typically 50-200 us). Elsewhere, a loop timer sleeps to within 1 ms
of the deadline and the rest is covered by yielding to the loop (never early, a little CPU).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import sys
import time

clock = time.perf_counter
"""The sim's clock (seconds, monotonic). All engine timestamps are on it."""

_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _load_timerfd() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    if "CLOCK_MONOTONIC" not in time.get_clock_info("perf_counter").implementation:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [
            ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
        ]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _load_timerfd()


class DeadlineSleeper:
    """Sleeps until absolute ``clock()`` deadlines; one sleeper serves one task at a time.

    ``kind`` is ``"timerfd"`` or ``"loop"`` (the portable fallback). Call ``close`` when done.
    """

    def __init__(self, use_timerfd: bool = True) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = -1
        self._waiter: asyncio.Future[None] | None = None
        self._spec = _Itimerspec()
        if use_timerfd and _LIBC is not None:
            fd = _LIBC.timerfd_create(_CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0:
                self._fd = fd
                self._settime = _LIBC.timerfd_settime
                self._spec_ref = ctypes.byref(self._spec)
                self._loop.add_reader(fd, self._on_expired)
        self.kind = "timerfd" if self._fd >= 0 else "loop"

    def _on_expired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:  # disarmed or re-armed before we ran
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def sleep_until(self, deadline: float) -> None:
        """Return at or after ``deadline`` (a ``clock()`` value); always yields to the loop."""
        if deadline <= clock():
            await asyncio.sleep(0)
            return
        if self._fd < 0:
            await self._sleep_until_loop(deadline)
            return
        ns = int(deadline * 1e9) + 1  # round up: never wake before the deadline
        self._spec.it_value.tv_sec, self._spec.it_value.tv_nsec = divmod(ns, 1_000_000_000)
        waiter = self._waiter = self._loop.create_future()
        if self._settime(self._fd, _TFD_TIMER_ABSTIME, self._spec_ref, None) != 0:
            self._waiter = None
            await self._sleep_until_loop(deadline)
            return
        try:
            await waiter
        finally:
            self._waiter = None

    @staticmethod
    async def _sleep_until_loop(deadline: float) -> None:
        # Loop timers may fire up to ~1 ms early: sleep to 1 ms before, then yield until due.
        while (remaining := deadline - clock()) > 0:
            await asyncio.sleep(remaining - 0.001 if remaining > 0.002 else 0)

    def close(self) -> None:
        """Release the timerfd (idempotent)."""
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._waiter is not None and not self._waiter.done():
            self._waiter.cancel()
