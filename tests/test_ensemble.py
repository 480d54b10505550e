"""The seed ensemble's forecasts (atft.evaluation.ensemble) against a slow loop over days and horizons."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from atft.evaluation.ensemble import average_forecasts


def member(seed: int, scale: float = 1.0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        (dt.date(2021, 1, 4) + dt.timedelta(days=d), f"{s:04d}", h)
        for d in range(6) for s in range(12) for h in (1, 5)
    ]  # fmt: skip
    frame = pl.DataFrame(rows, schema=["date", "code", "horizon"], orient="row")
    label = np.random.default_rng(99).standard_normal(frame.height)
    return frame.with_columns(
        prediction=pl.Series(scale * rng.standard_normal(frame.height)), label=pl.Series(label)
    ).sample(fraction=1.0, shuffle=True, seed=seed)  # members need not be sorted alike


def test_matches_a_slow_loop():
    members = [member(0), member(1, scale=50.0), member(2, scale=0.01)]
    got = average_forecasts(members).sort("date", "code", "horizon")
    for (day, h), rows in got.group_by("date", "horizon"):
        zs = []
        for m in members:
            part = m.filter((pl.col("date") == day) & (pl.col("horizon") == h)).sort("code")
            p = part["prediction"].to_numpy()
            zs.append((p - p.mean()) / p.std(ddof=1))
        want = np.mean(zs, axis=0)
        assert np.allclose(rows.sort("code")["prediction"].to_numpy(), want, atol=1e-12)
    first = members[0].sort("date", "code", "horizon")
    assert got["label"].to_list() == first["label"].to_list()


def test_a_flat_day_counts_as_no_opinion():
    a, b = member(0), member(1)
    day = a["date"].min()
    a = a.with_columns(
        pl.when(pl.col("date") == day).then(1.0).otherwise(pl.col("prediction")).alias("prediction")
    )
    got = average_forecasts([a, b]).filter(pl.col("date") == day).sort("date", "code", "horizon")
    b_day = b.filter(pl.col("date") == day)
    z_b = b_day.with_columns(
        z=(pl.col("prediction") - pl.col("prediction").mean().over("horizon"))
        / pl.col("prediction").std().over("horizon")
    ).sort("date", "code", "horizon")
    assert np.allclose(got["prediction"].to_numpy(), z_b["z"].to_numpy() / 2)


def test_bad_members_are_refused():
    with pytest.raises(ValueError, match="at least 2 members"):
        average_forecasts([member(0)])
    with pytest.raises(ValueError, match="member 1 forecasts other rows"):
        average_forecasts([member(0), member(1).head(10)])
    with pytest.raises(ValueError, match="member 1: column"):
        average_forecasts([member(0), member(1).drop("label")])
