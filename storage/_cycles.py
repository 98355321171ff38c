"""Cycle points: ISO 8601 UTC times on a fixed origin + interval grid."""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._errors import CycleError


def parse_time(value) -> pd.Timestamp:
    """An ISO 8601 time (`2026-01-01T06:00Z`, a cycle id `20260101T0600Z`, a datetime, a
    `CyclePoint`) as a UTC `Timestamp` without time zone."""
    if isinstance(value, CyclePoint):
        return value.time
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as err:
        raise CycleError(f"not an ISO 8601 time: {value!r}") from err
    if ts is pd.NaT:
        raise CycleError(f"not an ISO 8601 time: {value!r}")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


def parse_interval(value) -> pd.Timedelta:
    """An ISO 8601 duration (`PT6H`, `P1D`) or a timedelta, strictly positive."""
    try:
        td = pd.Timedelta(value)
    except (ValueError, TypeError) as err:
        raise CycleError(f"not an ISO 8601 duration: {value!r}") from err
    if not td > pd.Timedelta(0):
        raise CycleError(f"a cycle interval must be positive, got {value!r}")
    return td


def iso_duration(td: pd.Timedelta) -> str:
    """`PT6H`, `P1D`, `PT30M`: the compact ISO 8601 form of a whole-second duration."""
    seconds = int(pd.Timedelta(td).total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = "".join(f"{v}{u}" for v, u in ((hours, "H"), (minutes, "M"), (secs, "S")) if v)
    return (
        "P" + (f"{days}D" if days else "") + (f"T{clock}" if clock else "") if seconds else "PT0S"
    )


def cycle_id(point: pd.Timestamp) -> str:
    """`2026-01-01T06:00Z` → `20260101T0600Z` (Cylc's compact form; with seconds when a
    point has them, `20260101T060005Z`)."""
    p = parse_time(point)
    return p.strftime("%Y%m%dT%H%M%SZ" if p.second else "%Y%m%dT%H%MZ")


def iso(point: pd.Timestamp) -> str:
    p = parse_time(point)
    return p.strftime("%Y-%m-%dT%H:%M:%SZ" if p.second else "%Y-%m-%dT%H:%MZ")


@dataclass(frozen=True, order=True)
class CyclePoint:
    """One cycle of an experiment: its slot `index` on the cycle axis and its `time`; `id`
    (and `str`) is its compact id (`20260101T0600Z`). Made by `CycleAxis.cycle` or
    `CycleAxis.cycle_at`, and passed as it is between the steps of a run."""

    index: int
    time: pd.Timestamp

    @property
    def id(self) -> str:
        return cycle_id(self.time)

    def __str__(self) -> str:
        return self.id


@dataclass(frozen=True)
class CycleAxis:
    """The cycle points `origin + k·interval`, `k = 0, 1, …`."""

    origin: pd.Timestamp
    interval: pd.Timedelta

    @classmethod
    def parse(cls, origin, interval) -> "CycleAxis":
        return cls(parse_time(origin), parse_interval(interval))

    def cycle(self, index: int) -> CyclePoint:
        """The cycle in slot `index`."""
        if index < 0:
            raise CycleError(f"cycle index {index} is before the store's origin")
        return CyclePoint(int(index), self.point(index))

    def cycle_at(self, value) -> CyclePoint:
        """The cycle at a time or id (`2026-01-01T06:00Z`, `20260101T0600Z`); a clear error
        before the origin or between cycle points."""
        if isinstance(value, CyclePoint):
            return value
        return self.cycle(self.index(value))

    def index(self, point) -> int:
        """The slot of a cycle point; a clear error before the origin or off the grid."""
        if isinstance(point, CyclePoint):
            return point.index
        ts = parse_time(point)
        offset = ts - self.origin
        if offset < pd.Timedelta(0):
            raise CycleError(f"cycle {iso(ts)} is before the store's origin {iso(self.origin)}")
        k, rem = divmod(offset, self.interval)
        if rem != pd.Timedelta(0):
            raise CycleError(
                f"cycle {iso(ts)} is not on the store's cycle grid "
                f"(origin {iso(self.origin)}, interval {self.interval})"
            )
        return int(k)

    def point(self, index: int) -> pd.Timestamp:
        return self.origin + int(index) * self.interval

    def points(self, start: int, stop: int) -> np.ndarray:
        """`datetime64[ns]` cycle points of slots `start … stop − 1`."""
        return np.datetime64(self.origin, "ns") + np.arange(start, stop) * np.timedelta64(
            self.interval
        ).astype("timedelta64[ns]")

    def range(self, start, end) -> range:
        """Slots of the cycle points from `start` to `end`, both included."""
        return range(self.index(start), self.index(end) + 1)
