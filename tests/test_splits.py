"""Purged walk-forward and explicit splits (atft.data.splits) and `atft data splits`."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import typer
from omegaconf import OmegaConf
from typer.testing import CliRunner

from atft.cli.splits import splits as splits_command
from atft.config import load_config
from atft.data.splits import (
    Segment,
    Split,
    SplitError,
    explicit_split,
    splits_from_config,
    walk_forward_splits,
)
from atft.data.store import StoreError, raw_calendar

HOLIDAYS = ["2024-01-01", "2024-01-08", "2024-02-12", "2024-03-20", "2024-04-29", "2024-05-03", "2024-05-06"]


def business_days(start: str, n: int, holidays: list[str] | None = None) -> np.ndarray:
    """``n`` weekdays from ``start``, skipping ``holidays``: a calendar with weekend and holiday gaps."""
    return np.busday_offset(start, np.arange(n), roll="forward", holidays=holidays or []).astype(
        "datetime64[D]"
    )


def layout(split: Split) -> dict[str, tuple[int, int]]:
    return {s.name: (s.start, s.end) for s in split.segments()}


# --------------------------------------------------------------------------------------------------
# walk-forward layout
# --------------------------------------------------------------------------------------------------

SMALL = dict(horizons=[1], train_days=4, valid_days=2, test_days=3, purge_days=1, embargo_days=2, n_folds=4)


def test_expanding_layout_exact_indices():
    folds = walk_forward_splits(np.arange(30).astype("datetime64[D]"), **SMALL, window="expanding")
    assert [layout(f) for f in folds] == [
        {"train": (0, 7), "valid": (9, 10), "test": (12, 14)},
        {"train": (0, 12), "valid": (14, 15), "test": (17, 19)},
        {"train": (0, 17), "valid": (19, 20), "test": (22, 24)},
        {"train": (0, 22), "valid": (24, 25), "test": (27, 29)},
    ]
    assert [f.fold for f in folds] == [0, 1, 2, 3]
    # Embargo: the 2 days after each earlier test block (15-16 after fold 0, 20-21 after fold 1) are
    # dropped from the training of every later fold whose train span holds them.
    assert [f.embargo for f in folds] == [
        (),
        (),
        (Segment("embargo", 15, 16),),
        (Segment("embargo", 15, 16), Segment("embargo", 20, 21)),
    ]
    assert folds[3].indices("train").tolist() == [*range(0, 15), 17, 18, 19, 22]
    assert all(f.gap_before("valid") == 1 and f.gap_before("test") == 1 for f in folds)


def test_sliding_layout_exact_indices():
    folds = walk_forward_splits(np.arange(30).astype("datetime64[D]"), **SMALL, window="sliding")
    assert [layout(f)["train"] for f in folds] == [(4, 7), (9, 12), (14, 17), (19, 22)]
    assert folds[2].indices("train").tolist() == [14, 17]  # 15-16 is fold 0's embargo
    assert folds[3].indices("train").tolist() == [19, 22]
    assert [layout(f)["test"] for f in folds] == [(12, 14), (17, 19), (22, 24), (27, 29)]


def test_last_test_block_ends_on_last_day_and_folds_step_by_test_plus_embargo():
    cal = business_days("2015-01-05", 1500)
    folds = walk_forward_splits(
        cal,
        horizons=[1, 5, 20],
        train_days=500,
        valid_days=100,
        test_days=120,
        purge_days=20,
        embargo_days=5,
        n_folds=4,
    )
    assert folds[-1].test.end == len(cal) - 1
    assert folds[-1].ranges()[-1].end_date == cal[-1].astype(dt.date)
    ends = [f.test.end for f in folds]
    assert np.diff(ends).tolist() == [125, 125, 125]
    assert folds[0].train.n_days >= 500 and all(f.train.start == 0 for f in folds)
    for f in folds:  # train | purge | valid | purge | test
        assert f.train.end < f.valid.start and f.valid.end < f.test.start
        assert f.gap_before("valid") == f.gap_before("test") == 20
        assert f.valid.n_days == 100 and f.test.n_days == 120


@pytest.mark.parametrize("window", ["expanding", "sliding"])
def test_no_later_fold_trains_on_the_embargo_after_a_test_block(window):
    cal = business_days("2015-01-05", 900)
    kwargs = dict(horizons=[5], train_days=200, valid_days=20, test_days=60, purge_days=5, n_folds=8)
    folds = walk_forward_splits(cal, **kwargs, embargo_days=7, window=window)
    assert any(f.embargo for f in folds)  # the embargo does bite in this layout
    for k, earlier in enumerate(folds):
        embargoed = np.arange(earlier.test.end + 1, earlier.test.end + 8)
        for later in folds[k + 1 :]:
            assert not np.isin(later.indices("train"), embargoed).any()


def test_no_embargo_keeps_every_training_day():
    folds = walk_forward_splits(np.arange(30).astype("datetime64[D]"), **{**SMALL, "embargo_days": 0})
    assert all(f.embargo == () and len(f.dates("train")) == f.train.n_days for f in folds)


def test_sliding_train_is_exactly_train_days():
    cal = business_days("2015-01-05", 1200)
    folds = walk_forward_splits(
        cal,
        horizons=[20],
        train_days=300,
        valid_days=100,
        test_days=100,
        purge_days=20,
        n_folds=3,
        window="sliding",
    )
    assert [f.train.n_days for f in folds] == [300, 300, 300]
    assert [r.n_days for r in folds[0].ranges()] == [300, 100, 100]


@pytest.mark.parametrize("purge, ok", [(19, False), (20, True), (25, True)])
def test_purge_must_cover_the_longest_horizon(purge, ok):
    cal = business_days("2015-01-05", 1000)
    kwargs = dict(horizons=[1, 5, 20], train_days=300, valid_days=100, test_days=100, purge_days=purge)
    if ok:
        assert walk_forward_splits(cal, **kwargs)[0].gap_before("valid") == purge
        return
    with pytest.raises(SplitError) as e:
        walk_forward_splits(cal, **kwargs)
    assert "data.split.purge_days=19" in str(e.value) and "longest label horizon (20" in str(e.value)
    with pytest.raises(SplitError, match="data.split.purge_days=19"):
        explicit_split(
            cal,
            train=["2015-01-05", "2016-01-04"],
            test=["2017-01-02", "2018-01-01"],
            horizons=[1, 5, 20],
            purge_days=19,
        )


def test_too_short_calendar_says_how_many_days_are_needed():
    cal = business_days("2015-01-05", 1000)
    with pytest.raises(SplitError) as e:
        walk_forward_splits(
            cal,
            horizons=[20],
            train_days=500,
            valid_days=250,
            test_days=250,
            purge_days=20,
            embargo_days=10,
            n_folds=2,
        )
    msg = str(e.value)
    assert "need 1,300 trading days" in msg and "the calendar has 1,000" in msg
    assert "\n" not in msg
    # Exactly enough days works.
    folds = walk_forward_splits(
        business_days("2015-01-05", 1300),
        horizons=[20],
        train_days=500,
        valid_days=250,
        test_days=250,
        purge_days=20,
        embargo_days=10,
        n_folds=2,
    )
    assert folds[0].train == Segment("train", 0, 499)


def test_bad_walk_forward_parameters():
    cal = business_days("2015-01-05", 100)
    base = dict(horizons=[1], train_days=10, valid_days=5, test_days=5, purge_days=1)
    with pytest.raises(SplitError, match="data.split.window='rolling'"):
        walk_forward_splits(cal, **base, window="rolling")
    with pytest.raises(SplitError, match="data.split.n_folds=0"):
        walk_forward_splits(cal, **base, n_folds=0)
    with pytest.raises(SplitError, match="sorted"):
        walk_forward_splits(cal[::-1], **base)


# --------------------------------------------------------------------------------------------------
# explicit segments
# --------------------------------------------------------------------------------------------------

JAN_JUN = business_days("2024-01-02", 120, HOLIDAYS)  # weekends and holidays missing


def test_explicit_segments_map_onto_trading_days():
    split = explicit_split(
        JAN_JUN,
        train=["2023-12-30", "2024-01-20"],  # Saturday -> first trading day 01-02; Saturday -> 01-19
        valid=["2024-02-10", "2024-02-29"],  # Saturday, then the 02-12 holiday -> 02-13
        test=["2024-03-16", "2024-05-06"],  # Saturday -> 03-18; 05-06 holiday (and 05-03) -> 05-02
        horizons=[1, 5, 10],
        purge_days=10,
    )
    r = {x.name: x for x in split.ranges()}
    assert (r["train"].start_date, r["train"].end_date) == (dt.date(2024, 1, 2), dt.date(2024, 1, 19))
    assert (r["valid"].start_date, r["valid"].end_date) == (dt.date(2024, 2, 13), dt.date(2024, 2, 29))
    assert (r["test"].start_date, r["test"].end_date) == (dt.date(2024, 3, 18), dt.date(2024, 5, 2))
    # 01-22 .. 02-09 are 15 weekdays; 03-01 .. 03-15 are 11.
    assert (r["train"].gap_before, r["valid"].gap_before, r["test"].gap_before) == (None, 15, 11)
    assert r["train"].n_days == 13  # 01-08 is a holiday
    assert split.dates("valid")[0] == np.datetime64("2024-02-13")


def test_explicit_without_valid():
    split = explicit_split(
        JAN_JUN,
        train=["2024-01-02", "2024-02-29"],
        test=["2024-04-01", "2024-06-28"],
        horizons=[5],
        purge_days=5,
    )
    assert split.valid is None and [s.name for s in split.segments()] == ["train", "test"]
    assert split.gap_before("test") == 20  # 03-01 .. 03-29: 21 weekdays minus the 03-20 holiday


def test_too_small_gap_between_train_and_valid_names_both_segments():
    with pytest.raises(SplitError) as e:
        explicit_split(
            JAN_JUN,
            train=["2024-01-02", "2024-01-20"],
            valid=["2024-02-10", "2024-02-29"],
            horizons=[1, 20],
            purge_days=20,
        )
    assert str(e.value).startswith(
        "data.split.train ends 2024-01-19 and data.split.valid starts 2024-02-13: 15 trading days between "
        "them, but the purge needs 20 (data.split.purge_days; the longest label horizon is 20 days)"
    )
    # ... and says how to fix it: the last allowed train end, or the first allowed valid start.
    assert "end data.split.train by 2024-01-12" in str(e.value)
    assert "start data.split.valid from 2024-02-20" in str(e.value)


def test_too_small_gap_between_valid_and_test_names_both_segments():
    with pytest.raises(SplitError) as e:
        explicit_split(
            JAN_JUN,
            train=["2024-01-02", "2024-01-10"],
            valid=["2024-02-01", "2024-02-29"],
            test=["2024-03-10", "2024-04-30"],
            horizons=[1, 5, 10],
            purge_days=10,
        )
    assert (
        "data.split.valid ends 2024-02-29 and data.split.test starts 2024-03-11: 6 trading days between them, "
        "but the purge needs 10" in str(e.value)
    )


def test_gap_between_train_and_test_when_valid_is_absent():
    with pytest.raises(SplitError, match="data.split.train ends .* and data.split.test starts"):
        explicit_split(
            JAN_JUN,
            train=["2024-01-02", "2024-02-29"],
            test=["2024-03-04", "2024-06-28"],
            horizons=[5],
            purge_days=5,
        )


@pytest.mark.parametrize(
    "train, valid, test, message",
    [
        (
            ["2024-01-02", "2024-03-01"],
            ["2024-02-01", "2024-04-01"],
            None,
            "data.split.valid=[2024-02-01,2024-04-01] must start after data.split.train=[2024-01-02,2024-03-01] ends",
        ),
        (
            ["2024-03-01", "2024-04-01"],
            ["2024-01-02", "2024-02-01"],
            None,
            "data.split.valid=[2024-01-02,2024-02-01] must start after data.split.train",
        ),
        (
            ["2024-01-02", "2024-02-01"],
            ["2024-03-01", "2024-04-01"],
            ["2024-03-15", "2024-06-01"],
            "data.split.test=[2024-03-15,2024-06-01] must start after data.split.valid",
        ),
        (
            ["2024-01-02", "2024-02-01"],
            ["2024-01-06", "2024-01-07"],
            None,
            "data.split.valid=[2024-01-06,2024-01-07] holds no trading day",
        ),  # a weekend
        (
            ["2024-01-02", "2024-02-01"],
            None,
            ["2025-01-01", "2025-06-01"],
            "data.split.test=[2025-01-01,2025-06-01] holds no trading day of the calendar (2024-01-02 .. ",
        ),
        (
            ["2024-03-01", "2024-02-01"],
            None,
            None,
            "data.split.train=[2024-03-01,2024-02-01]: the start is after",
        ),
        (["2024-01-02", "2024-13-01"], None, None, "data.split.train: '2024-13-01' is not a YYYY-MM-DD date"),
    ],
)
def test_explicit_order_overlap_and_empty_errors(train, valid, test, message):
    with pytest.raises(SplitError) as e:
        explicit_split(JAN_JUN, train=train, valid=valid, test=test, horizons=[1], purge_days=1)
    assert message in str(e.value)


# --------------------------------------------------------------------------------------------------
# from the config
# --------------------------------------------------------------------------------------------------


def test_splits_from_config_walk_forward_and_explicit():
    cal = business_days("2015-01-05", 1600)
    resolved = load_config(None, ["data.split.n_folds=3", "data.split.window=sliding"], env={})
    folds = splits_from_config(cal, resolved.cfg)
    assert len(folds) == 3 and all(f.train.n_days == 500 for f in folds) and folds[-1].test.end == 1599
    resolved = load_config(
        None,
        [
            "data.split.mode=explicit",
            "data.split.train=[2015-01-05,2017-12-29]",
            "data.split.valid=[2018-02-01,2018-12-31]",
            "data.split.test=[2019-02-01,2020-10-02]",
        ],
        env={},
    )
    (split,) = splits_from_config(cal, resolved)  # a ResolvedConfig works too
    assert split.train.start_date(cal) == dt.date(2015, 1, 5) and split.test.end == 1499


def test_splits_from_config_refuses_explicit_without_dates():
    cfg = OmegaConf.create(
        {
            "data": {
                "horizons": [1, 5],
                "split": {"mode": "explicit", "train": None, "valid": None, "test": None, "purge_days": 5},
            }
        }
    )
    with pytest.raises(SplitError) as e:
        splits_from_config(business_days("2015-01-05", 100), cfg)
    assert "data.split.train and data.split.valid or data.split.test" in str(e.value)


def test_raw_calendar_reads_the_dates_of_a_raw_store(tmp_path):
    dates = [dt.date(2024, 1, 5), dt.date(2024, 1, 2), dt.date(2024, 1, 5), dt.date(2024, 1, 3)]
    pl.DataFrame({"date": dates, "code": ["a", "a", "b", "b"]}).write_parquet(tmp_path / "prices.parquet")
    cal = raw_calendar(tmp_path)
    assert cal.dtype == np.dtype("datetime64[D]")
    assert cal.tolist() == [dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 1, 5)]
    with pytest.raises(StoreError, match="nowhere: neither a dataset folder"):
        raw_calendar(tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    pl.DataFrame({"day": [1]}).write_parquet(tmp_path / "bad" / "prices.parquet")
    with pytest.raises(StoreError, match="cannot read its date column"):
        raw_calendar(tmp_path / "bad")


# --------------------------------------------------------------------------------------------------
# leakage: no training label window touches a validation or test date
# --------------------------------------------------------------------------------------------------

HORIZONS = [1, 5, 10]


def random_walk_panel(calendar: np.ndarray, n_stocks: int = 4, seed: int = 0, missing=None) -> pl.DataFrame:
    """Closes of ``n_stocks`` random walks on every calendar day, and one stock ``GAP`` without ``missing``."""
    rng = np.random.default_rng(seed)
    frames = [
        pl.DataFrame(
            {
                "date": calendar,
                "code": f"S{i}",
                "close": 100 * np.exp(np.cumsum(rng.normal(0, 0.02, len(calendar)))),
            }
        )
        for i in range(n_stocks)
    ]
    if missing is not None:
        keep = np.setdiff1d(np.arange(len(calendar)), missing)
        frames.append(
            pl.DataFrame({"date": calendar[keep], "code": "GAP", "close": rng.uniform(50, 150, len(keep))})
        )
    return with_labels(pl.concat(frames))


def with_labels(panel: pl.DataFrame) -> pl.DataFrame:
    """h-day forward labels from each stock's own rows: the h-th next row ends the window (docs/dataset.md)."""
    panel = panel.sort("code", "date")
    return panel.with_columns(
        *[
            (pl.col("close").shift(-h).over("code") / pl.col("close") - 1).alias(f"target_{h}d")
            for h in HORIZONS
        ],
        *[pl.col("date").shift(-h).over("code").alias(f"label_end_{h}d") for h in HORIZONS],
    )


def leaks(
    panel: pl.DataFrame, split: Split, fit: str = "train", later=("valid", "test"), mask_beyond_end=False
) -> int:
    """Rows of segment ``fit`` with a label whose window (t, label_end] holds a date of a ``later`` segment."""
    later_dates = np.sort(np.concatenate([split.dates(s) for s in later if getattr(split, s) is not None]))
    rows = panel.filter(pl.col("date").is_in(pl.Series(split.dates(fit)).implode()))
    fit_end = split.dates(fit)[-1]
    total = 0
    for h in HORIZONS:
        labelled = rows.filter(pl.col(f"target_{h}d").is_not_null())
        if mask_beyond_end:  # what the loader does: a training label must end inside the training segment
            labelled = labelled.filter(pl.col(f"label_end_{h}d") <= fit_end)
        t = labelled.get_column("date").to_numpy().astype("datetime64[D]")
        end = labelled.get_column(f"label_end_{h}d").to_numpy().astype("datetime64[D]")
        inside = np.searchsorted(later_dates, end, "right") - np.searchsorted(later_dates, t, "right")
        total += int((inside > 0).sum())
    return total


LEAK_CAL = business_days(
    "2019-01-07", 400, [f"2019-{m:02d}-15" for m in range(1, 13)] + ["2020-01-02", "2020-05-04"]
)


def all_kinds_of_split() -> list[Split]:
    folds = []
    for window in ("expanding", "sliding"):
        for embargo in (0, 3):
            folds += walk_forward_splits(
                LEAK_CAL,
                horizons=HORIZONS,
                train_days=60,
                valid_days=25,
                test_days=30,
                purge_days=10,
                embargo_days=embargo,
                n_folds=5,
                window=window,
            )
    folds.append(
        explicit_split(
            LEAK_CAL,
            train=["2019-01-01", "2019-08-31"],
            valid=["2019-09-16", "2019-12-31"],
            test=["2020-01-16", "2020-07-31"],
            horizons=HORIZONS,
            purge_days=10,
        )
    )
    return folds


def test_no_training_label_window_touches_a_validation_or_test_date():
    panel = random_walk_panel(LEAK_CAL)
    assert panel.filter(pl.col("target_10d").is_not_null()).height > 0
    for split in all_kinds_of_split():
        assert leaks(panel, split) == 0, split
        # valid is used for early stopping: its labels must not reach into test either.
        assert leaks(panel, split, fit="valid", later=("test",)) == 0, split
        # The training set really does hold labels that end right at the purge's edge.
        last_train = split.dates("train")[-1]
        ends = panel.filter(pl.col("date") == last_train).get_column("label_end_10d").to_numpy()
        assert (ends.astype("datetime64[D]") < split.dates("valid" if split.valid else "test")[0]).all()


def test_the_leak_check_catches_a_purge_one_day_short():
    panel = random_walk_panel(LEAK_CAL)
    cal = LEAK_CAL
    short = Split(0, Segment("train", 0, 99), Segment("valid", 109, 140), None, cal)  # gap 9 < horizon 10
    assert short.gap_before("valid") == 9
    assert leaks(panel, short) == 4  # one row per stock: t = day 99, its 10-day label ends on day 109
    ok = Split(0, Segment("train", 0, 99), Segment("valid", 110, 140), None, cal)
    assert leaks(panel, ok) == 0


def test_a_stock_with_missing_rows_can_reach_past_the_purge_so_the_loader_masks_it():
    """Labels follow a stock's own rows: a stock absent for days has its h-th next row beyond calendar t+h.

    Here stock GAP is missing the whole purge gap and more, so its last training rows have labels that end
    inside validation although the purge covers the longest horizon. The calendar purge alone cannot stop
    that; the loader also drops training labels whose ``label_end`` is after the training segment's end
    (docs/splits.md), which removes every such leak.
    """
    (split,) = [
        explicit_split(
            LEAK_CAL,
            train=["2019-01-01", "2019-08-30"],
            valid=["2019-09-16", "2019-12-31"],
            test=["2020-01-16", "2020-07-31"],
            horizons=HORIZONS,
            purge_days=10,
        )
    ]
    train_end = split.train.end
    panel = random_walk_panel(LEAK_CAL, missing=np.arange(train_end - 2, split.valid.start + 3))
    clean = panel.filter(pl.col("code") != "GAP")
    assert leaks(clean, split) == 0
    assert leaks(panel, split) > 0
    assert leaks(panel, split, mask_beyond_end=True) == 0
    # GAP's label end is later than calendar t + h.
    row = panel.filter((pl.col("code") == "GAP") & (pl.col("date") == LEAK_CAL[train_end - 3]))
    assert row.get_column("label_end_1d")[0] > LEAK_CAL[train_end - 2].astype(dt.date)


# --------------------------------------------------------------------------------------------------
# atft data splits
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def cli():
    app = typer.Typer()
    app.command()(splits_command)
    return lambda *args: CliRunner().invoke(app, [str(a) for a in args])


def write_store(folder, n_days: int):
    folder.mkdir()
    cal = business_days("2020-01-06", n_days, ["2020-01-13"])
    pl.DataFrame({"date": np.repeat(cal, 2), "code": ["1301", "7203"] * n_days}).write_parquet(
        folder / "prices.parquet"
    )
    return cal


def test_cli_prints_the_date_ranges(tmp_path, cli):
    cal = write_store(tmp_path / "raw", 300)
    r = cli(
        tmp_path / "raw",
        "data.split.train_days=100",
        "data.split.valid_days=50",
        "data.split.test_days=50",
        "data.split.n_folds=2",
        "data.split.embargo_days=5",
    )
    assert r.exit_code == 0, r.output
    folds = walk_forward_splits(
        cal,
        horizons=[1, 5, 10, 20],
        train_days=100,
        valid_days=50,
        test_days=50,
        purge_days=20,
        embargo_days=5,
        n_folds=2,
    )
    for f in folds:
        for seg in f.ranges():
            assert f"{seg.start_date} │ {seg.end_date}" in r.output
    assert str(cal[-1]) in r.output and "purge 20" in r.output and "embargo 5" in r.output
    # Four short folds: fold 3's training skips the 5 days after fold 0's test block.
    short = ["data.split.train_days=50", "data.split.valid_days=10", "data.split.test_days=30"]
    r = cli(tmp_path / "raw", *short, "data.split.n_folds=4", "data.split.embargo_days=5")
    assert r.exit_code == 0, r.output
    folds = walk_forward_splits(
        cal,
        horizons=[20],
        train_days=50,
        valid_days=10,
        test_days=30,
        purge_days=20,
        embargo_days=5,
        n_folds=4,
    )
    (block,) = folds[3].embargo
    assert f"embargo │ {block.start_date(cal)} │ {block.end_date(cal)}" in r.output
    r = cli(
        tmp_path / "raw",
        "data.split.mode=explicit",
        "data.split.train=[2020-01-01,2020-03-31]",
        "data.split.valid=[2020-05-01,2020-06-30]",
        "data.split.test=[2020-08-01,2021-02-26]",
    )
    assert r.exit_code == 0, r.output
    assert "2020-01-06 │ 2020-03-31" in r.output and "2020-08-03 │ 2021-02-26" in r.output


def test_cli_errors_are_one_line_exit_2(tmp_path, cli, monkeypatch):
    write_store(tmp_path / "raw", 300)
    r = cli(tmp_path / "raw")  # the defaults need 1,040 days
    assert r.exit_code == 2 and "need 1,040 trading days" in r.output and "has 300" in r.output
    r = cli(tmp_path / "raw", "data.split.purge_days=3", "data.split.train_days=50")
    assert r.exit_code == 2 and "data.split.purge_days=3" in r.output
    r = cli(
        tmp_path / "raw",
        "data.split.mode=explicit",
        "data.split.train=[2020-01-01,2020-03-31]",
        "data.split.valid=[2020-04-01,2020-06-30]",
        "data.split.test=[2020-08-01,2021-02-26]",
    )
    assert (
        r.exit_code == 2
        and "data.split.train ends 2020-03-31 and data.split.valid starts 2020-04-01" in r.output
    )
    r = cli(tmp_path / "raw", "data.split.nope=1")
    assert r.exit_code == 2 and "Unknown config key" in r.output
    # Paths are data: brackets print as they are, never as Rich markup.
    monkeypatch.chdir(tmp_path)
    r = cli("no[red]where")
    assert r.exit_code == 2 and "no[red]where: neither" in r.output
    write_store(tmp_path / "[red]s", 300)
    r = cli("[red]s", "data.split.train_days=100", "data.split.valid_days=50", "data.split.test_days=50")
    assert r.exit_code == 0 and "Splits of [red]s" in r.output
