"""Train / valid / test splits counted in trading days, with a purge so that no label crosses a boundary.

A label at date ``t`` with horizon ``h`` reads the closes of ``t``'s next ``h`` trading days: its window is
``(t, t+h]``. A training row leaks when that window touches a validation or test date. A purge of at least
the longest horizon (trading days strictly between the last day of one segment and the first of the next)
rules that out, for every stock that trades every day of the calendar. Two ways to split (docs/splits.md):

- ``walk_forward_splits``: folds of train | purge | valid | purge | test, the last fold's test ending on
  the calendar's last day, earlier folds stepping back by ``test_days + embargo_days``; expanding or
  sliding training windows; an embargo of days after each test block that no later fold trains on.
- ``explicit_split``: one split from [start, end] dates, as Qlib users write them; the gaps are checked.

Everything works on calendar indices: a segment is a pair of inclusive indices into the sorted calendar.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from atft.config import ATFTConfig, ResolvedConfig

SEGMENT_NAMES = ("train", "valid", "test")


class SplitError(ValueError):
    """A split that cannot be made or would leak; the one-line message names the keys and dates involved."""


def _date(calendar: np.ndarray, i: int) -> dt.date:
    return calendar[i].astype(object)


@dataclass(frozen=True)
class Segment:
    """A block of consecutive trading days: calendar indices ``start`` to ``end``, both inclusive."""

    name: str
    start: int
    end: int

    @property
    def n_days(self) -> int:
        """Trading days from first to last, both included."""
        return self.end - self.start + 1

    def start_date(self, calendar: np.ndarray) -> dt.date:
        return _date(calendar, self.start)

    def end_date(self, calendar: np.ndarray) -> dt.date:
        return _date(calendar, self.end)


class SegmentRange(NamedTuple):
    """What ``atft data splits`` prints for a segment; ``gap_before`` is the purge after the one before."""

    name: str
    start_date: dt.date
    end_date: dt.date
    n_days: int
    gap_before: int | None


@dataclass(frozen=True)
class Split:
    """One fold: its train, valid and test segments (valid or test may be absent) over ``calendar``.

    ``embargo`` lists the blocks inside the train span that training skips (days right after an earlier
    fold's test block). Use ``dates(name)`` to select a segment's rows: it leaves the embargo out.
    """

    fold: int
    train: Segment
    valid: Segment | None
    test: Segment | None
    calendar: np.ndarray = field(repr=False, compare=False)
    embargo: tuple[Segment, ...] = ()

    def segments(self) -> list[Segment]:
        """The present segments in calendar order."""
        return [s for s in (self.train, self.valid, self.test) if s is not None]

    def gap_before(self, name: str) -> int | None:
        """Trading days strictly between segment ``name`` and the segment before it (None for the first)."""
        segs = self.segments()
        i = [s.name for s in segs].index(name)
        return segs[i].start - segs[i - 1].end - 1 if i > 0 else None

    def indices(self, name: str) -> np.ndarray:
        """Calendar indices of segment ``name``'s days, embargoed days left out of train."""
        if name not in SEGMENT_NAMES or getattr(self, name) is None:
            raise SplitError(f"fold {self.fold} has no {name!r} segment")
        seg: Segment = getattr(self, name)
        idx = np.arange(seg.start, seg.end + 1)
        for e in self.embargo if name == "train" else ():
            idx = idx[(idx < e.start) | (idx > e.end)]
        return idx

    def dates(self, name: str) -> np.ndarray:
        """The trading days (``datetime64[D]``) of segment ``name``, embargoed days left out of train."""
        return self.calendar[self.indices(name)]

    def ranges(self) -> list[SegmentRange]:
        """First and last date, days used and the purge gap before it, for each present segment."""
        return [
            SegmentRange(
                s.name,
                s.start_date(self.calendar),
                s.end_date(self.calendar),
                len(self.indices(s.name)),
                self.gap_before(s.name),
            )
            for s in self.segments()
        ]


def _as_calendar(calendar: Any) -> np.ndarray:
    cal = np.asarray(calendar, dtype="datetime64[D]")
    if cal.ndim != 1 or len(cal) == 0 or np.any(cal[1:] <= cal[:-1]):
        raise SplitError("the trading calendar must be a non-empty, sorted list of distinct dates")
    return cal


def _check_purge(purge_days: int, horizons: Sequence[int]) -> int:
    """The longest horizon, after checking that the purge covers it."""
    if not horizons:
        raise SplitError("data.horizons is empty: the purge is measured against the longest label horizon")
    longest = max(horizons)
    if purge_days < longest:
        raise SplitError(
            f"data.split.purge_days={purge_days} is shorter than the longest label horizon ({longest} trading "
            f"days, data.horizons={list(horizons)}): training labels would reach into validation or test; "
            f"set data.split.purge_days={longest} or more"
        )
    return longest


def walk_forward_splits(
    calendar: Any,
    *,
    horizons: Sequence[int],
    train_days: int,
    valid_days: int,
    test_days: int,
    purge_days: int,
    embargo_days: int = 0,
    n_folds: int = 1,
    window: str = "expanding",
) -> list[Split]:
    """Walk-forward folds, earliest first; each is train | purge | valid | purge | test.

    The last fold's test block ends on the calendar's last day; each earlier fold steps back by
    ``test_days + embargo_days``. ``window="expanding"`` trains from the first calendar day (at least
    ``train_days`` days), ``"sliding"`` on the ``train_days`` days before the purge. Embargo (de Prado):
    the ``embargo_days`` days after each test block are dropped from every later fold's training.
    """
    cal = _as_calendar(calendar)
    _check_purge(purge_days, horizons)
    if window not in ("expanding", "sliding"):
        raise SplitError(f"data.split.window={window!r}: choose 'expanding' or 'sliding'")
    for key, value, least in (
        ("train_days", train_days, 1),
        ("valid_days", valid_days, 1),
        ("test_days", test_days, 1),
        ("n_folds", n_folds, 1),
        ("embargo_days", embargo_days, 0),
    ):
        if value < least:
            raise SplitError(f"data.split.{key}={value} is out of range; must be >= {least}")
    step = test_days + embargo_days
    needed = train_days + 2 * purge_days + valid_days + test_days + (n_folds - 1) * step
    if needed > len(cal):
        raise SplitError(
            f"{n_folds} walk-forward fold(s) need {needed:,} trading days (train_days {train_days} + 2 x "
            f"purge_days {purge_days} + valid_days {valid_days} + test_days {test_days} + {n_folds - 1} x "
            f"(test_days + embargo_days {embargo_days})), but the calendar has {len(cal):,} "
            f"({_date(cal, 0)} .. {_date(cal, -1)})"
        )
    test_ends = [len(cal) - 1 - (n_folds - 1 - k) * step for k in range(n_folds)]
    folds = []
    for k, test_end in enumerate(test_ends):
        test = Segment("test", test_end - test_days + 1, test_end)
        valid = Segment("valid", test.start - purge_days - valid_days, test.start - purge_days - 1)
        train_end = valid.start - purge_days - 1
        train = Segment("train", 0 if window == "expanding" else train_end - train_days + 1, train_end)
        blocks = [
            Segment("embargo", max(e + 1, train.start), min(e + embargo_days, train.end))
            for e in test_ends[:k]
        ]
        split = Split(k, train, valid, test, cal, tuple(b for b in blocks if b.start <= b.end))
        if len(split.indices("train")) == 0:
            raise SplitError(
                f"fold {k}: the embargo (data.split.embargo_days={embargo_days}) leaves no training day in a "
                f"sliding window of data.split.train_days={train_days}"
            )
        folds.append(split)
    return folds


def _to_day(value: Any, key: str) -> np.datetime64:
    try:
        return np.datetime64(dt.date.fromisoformat(str(value)), "D")
    except ValueError:
        raise SplitError(f"{key}: {value!r} is not a YYYY-MM-DD date") from None


def explicit_split(
    calendar: Any,
    *,
    train: Sequence[Any],
    valid: Sequence[Any] | None = None,
    test: Sequence[Any] | None = None,
    horizons: Sequence[int],
    purge_days: int,
) -> Split:
    """One split from ``[start, end]`` dates (ISO strings or dates), checked against the calendar.

    A start maps to the first trading day on or after it, an end to the last trading day on or before it.
    Segments must run train, valid, test without overlap, with at least ``purge_days`` trading days
    strictly between consecutive ones (and ``purge_days`` at least the longest horizon).
    """
    cal = _as_calendar(calendar)
    longest = _check_purge(purge_days, horizons)
    segs: list[Segment] = []
    given: dict[str, str] = {}
    for name, pair in (("train", train), ("valid", valid), ("test", test)):
        if pair is None:
            continue
        key = f"data.split.{name}"
        if len(pair) != 2:
            raise SplitError(f"{key}: expected [start, end], got {list(pair)}")
        start, end = _to_day(pair[0], key), _to_day(pair[1], key)
        given[name] = f"{key}=[{start},{end}]"
        if start > end:
            raise SplitError(f"{given[name]}: the start is after the end")
        i, j = int(np.searchsorted(cal, start, "left")), int(np.searchsorted(cal, end, "right")) - 1
        if i > j:
            raise SplitError(
                f"{given[name]} holds no trading day of the calendar ({_date(cal, 0)} .. {_date(cal, -1)})"
            )
        segs.append(Segment(name, i, j))
    for a, b in itertools.pairwise(segs):
        if b.start <= a.end:
            raise SplitError(
                f"{given[b.name]} must start after {given[a.name]} ends: segments run train, valid, test "
                "in this order without overlap"
            )
        gap = b.start - a.end - 1
        if gap < purge_days:
            hints = []
            if b.start - purge_days - 1 >= a.start:
                hints.append(f"end data.split.{a.name} by {_date(cal, b.start - purge_days - 1)}")
            if a.end + purge_days + 1 <= b.end:
                hints.append(f"start data.split.{b.name} from {_date(cal, a.end + purge_days + 1)}")
            raise SplitError(
                f"data.split.{a.name} ends {a.end_date(cal)} and data.split.{b.name} starts "
                f"{b.start_date(cal)}: {gap} trading days between them, but the purge needs {purge_days} "
                f"(data.split.purge_days; the longest label horizon is {longest} days)"
                + (f"; {' or '.join(hints)}" if hints else "")
            )
    by_name = {s.name: s for s in segs}
    return Split(0, by_name["train"], by_name.get("valid"), by_name.get("test"), cal)


def splits_from_config(calendar: Any, cfg: ATFTConfig | ResolvedConfig) -> list[Split]:
    """The splits that ``cfg`` (the resolved OmegaConf config, or a ResolvedConfig) asks for."""
    cfg = getattr(cfg, "cfg", cfg)
    s, horizons = cfg.data.split, list(cfg.data.horizons)
    if s.mode == "explicit":
        missing = ["data.split.train"] if s.train is None else []
        if s.valid is None and s.test is None:
            missing.append("data.split.valid or data.split.test")
        if missing:
            raise SplitError(f"data.split.mode=explicit needs [start, end] dates for {' and '.join(missing)}")
        pairs = {k: None if s[k] is None else list(s[k]) for k in SEGMENT_NAMES}
        return [explicit_split(calendar, **pairs, horizons=horizons, purge_days=s.purge_days)]
    if s.mode != "walk_forward":
        raise SplitError(f"data.split.mode={s.mode!r}: choose 'walk_forward' or 'explicit'")
    return walk_forward_splits(
        calendar,
        horizons=horizons,
        train_days=s.train_days,
        valid_days=s.valid_days,
        test_days=s.test_days,
        purge_days=s.purge_days,
        embargo_days=s.embargo_days,
        n_folds=s.n_folds,
        window=s.window,
    )


def rolling_splits(
    calendar: Any,
    *,
    horizons: Sequence[int],
    every: int,
    train_days: int,
    valid_days: int,
    purge_days: int,
    window: str = "sliding",
    start: Any = None,
    end: Any = None,
) -> list[Split]:
    """The blocks of a rolling retrain: test blocks of ``every`` trading days from ``start`` to ``end``, each
    with its own train | purge | valid | purge before it, so a block's labels never reach its test days.

    ``window="sliding"`` trains on the ``train_days`` days before the purge, ``"expanding"`` from the
    first calendar day. ``start`` defaults to the first day that leaves room for the first block's training
    and validation; ``end`` to the calendar's last day. The last block may be shorter than ``every``.
    """
    cal = _as_calendar(calendar)
    _check_purge(purge_days, horizons)
    if window not in ("expanding", "sliding"):
        raise SplitError(f"--window {window!r}: choose 'expanding' or 'sliding'")
    for key, value in (("--every", every), ("--train-days", train_days), ("valid_days", valid_days)):
        if value < 1:
            raise SplitError(f"{key}={value} is out of range; must be >= 1")
    room = train_days + 2 * purge_days + valid_days  # trading days needed before the first test day
    first = room if start is None else int(np.searchsorted(cal, _to_day(start, "--start"), "left"))
    last = len(cal) - 1 if end is None else int(np.searchsorted(cal, _to_day(end, "--end"), "right")) - 1
    if first < room:
        raise SplitError(
            f"--start {_date(cal, min(first, len(cal) - 1))} leaves {first} trading days before it, but a block "
            f"needs {room} (train {train_days} + 2 x purge {purge_days} + valid {valid_days}); start from "
            f"{_date(cal, room) if room < len(cal) else 'a later calendar'}"
        )
    if first > last:
        raise SplitError(f"no trading day between --start and --end ({_date(cal, 0)} .. {_date(cal, -1)})")
    blocks = []
    for k, test_start in enumerate(range(first, last + 1, every)):
        test = Segment("test", test_start, min(test_start + every - 1, last))
        valid = Segment("valid", test.start - purge_days - valid_days, test.start - purge_days - 1)
        train_end = valid.start - purge_days - 1
        train = Segment("train", 0 if window == "expanding" else train_end - train_days + 1, train_end)
        blocks.append(Split(k, train, valid, test, cal))
    return blocks
