"""The one clock every role reads: UNIX seconds, as the database keeps
times (the same on every node whatever its time zone)."""

from __future__ import annotations

import time
from typing import Callable


class Clock:
    def __init__(self, source: Callable[[], float] = time.time):
        self.source = source

    def now(self) -> int:
        return int(self.source())

    def __call__(self) -> float:
        return self.source()


def clock_of(value: "Clock | Callable[[], float] | None") -> Clock:
    """A Clock from what a caller gives: a Clock, a time function (tests), or
    nothing (the system clock)."""
    if isinstance(value, Clock):
        return value
    return Clock(value or time.time)
