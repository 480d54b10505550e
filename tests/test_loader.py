"""The day-panel loader against slow, obvious references (Python loops over every stock and day)."""

from __future__ import annotations

import json
import math
from datetime import date

import numpy as np
import polars as pl
import pytest
import torch

from atft.features.panel import DayPanel
from atft.training.datamodule import (
    DayDataModule,
    DayDataset,
    collate_days,
    gather_windows,
    recency_weights,
)
from atft.training.trainer import panel_on_device

FEATURES = ["f_a", "f_b", "f_c"]
LABELS = ["target_1d", "target_5d"]
HORIZONS = [1, 5]
N_DAYS, L = 40, 5
CALENDAR = np.busday_offset(np.datetime64("2021-01-04"), np.arange(N_DAYS), roll="forward")
SATURDAY = np.datetime64("2021-01-09")  # between calendar days 4 (Fri) and 5 (Mon)


def stock_days(s: int) -> list[int]:
    """The calendar days stock ``s`` trades on: 0 full, 1 listed late, 2 misses a day, 4 delisted early."""
    return {1: list(range(15, N_DAYS)), 2: [d for d in range(N_DAYS) if d != 20], 4: list(range(30))}.get(
        s, list(range(N_DAYS))
    )


def write_dataset(root, *, extra_label_groups: dict | None = None):
    """A 6-stock x 40-day dataset folder in the format of docs/dataset.md, ragged on purpose."""
    rng = np.random.default_rng(7)
    feature_rows, label_rows = [], []
    for s in range(6):
        code = f"{1001 + s}"
        days = stock_days(s)
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, len(days))))
        for k, d in enumerate(days):
            f = [float(v) for v in rng.normal(size=3)]
            if s == 3 and d < 8:  # warmup: features unknown
                f = [None, None, None]
            if s == 5 and d == 25:  # one unknown feature
                f[1] = None
            row = {"date": CALENDAR[d].item(), "code": code, **dict(zip(FEATURES, f, strict=True))}
            feature_rows.append({**row, "is_valid_5d": k >= 5})
            labels = {}
            for h in HORIZONS:
                ahead = k + h < len(days)
                labels[f"target_{h}d"] = float(close[k + h] / close[k] - 1) if ahead else None
                labels[f"label_end_{h}d"] = CALENDAR[days[k + h]].item() if ahead else None
                labels[f"target_{h}d_rank"] = 0.5 if ahead else None
            if s == 0 and d == 3:  # a label window ending on a day outside the calendar
                labels["label_end_1d"] = SATURDAY.item()
            label_rows.append({"date": row["date"], "code": code, **labels})
    schema = {"date": pl.Date, "code": pl.String, **{f: pl.Float32 for f in FEATURES}}
    features = pl.DataFrame(feature_rows, schema={**schema, "is_valid_5d": pl.Boolean})
    label_schema = {"date": pl.Date, "code": pl.String}
    for h in HORIZONS:
        label_schema |= {
            f"target_{h}d": pl.Float32,
            f"target_{h}d_rank": pl.Float32,
            f"label_end_{h}d": pl.Date,
        }
    labels = pl.DataFrame(label_rows, schema=label_schema)
    stocks = pl.DataFrame(
        {
            "code": [f"{1001 + s}" for s in range(6)],
            "stock_id": list(range(6)),
            "sector": ["A", "A", "B", None, "B", "A"],
            "sector_id": [1, 1, 2, 0, 2, 1],
        },
        schema={"code": pl.String, "stock_id": pl.Int32, "sector": pl.String, "sector_id": pl.Int32},
    )
    root.mkdir(parents=True, exist_ok=True)
    features.write_parquet(root / "features.parquet")
    labels.write_parquet(root / "labels.parquet")
    stocks.write_parquet(root / "stocks.parquet")
    label_groups = {
        "target": LABELS,
        "rank": [f"target_{h}d_rank" for h in HORIZONS],
        "label_end": [f"label_end_{h}d" for h in HORIZONS],
        **(extra_label_groups or {}),
    }
    manifest = {
        "kind": "dataset",
        "format_version": 1,
        "horizons": HORIZONS,
        "features": {"prices": FEATURES, "validity": ["is_valid_5d"]},
        "model_features": FEATURES,
        "validity_flags": ["is_valid_5d"],
        "labels": label_groups,
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return features, labels


@pytest.fixture
def dataset(tmp_path):
    features, labels = write_dataset(tmp_path / "ds")
    return tmp_path / "ds", features, labels


@pytest.fixture
def panel(dataset):
    return DayPanel.load(dataset[0])


# ---- slow references -------------------------------------------------------------------------------------


def ref_arrays(features: pl.DataFrame, labels: pl.DataFrame):
    """x, y, label_end as dicts keyed by (stock, day), built one row at a time."""
    day_of = {CALENDAR[d].item(): d for d in range(N_DAYS)}
    x, y, end = {}, {}, {}
    for row in features.iter_rows(named=True):
        key = (int(row["code"]) - 1001, day_of[row["date"]])
        x[key] = [math.nan if row[f] is None else row[f] for f in FEATURES]
    for row in labels.iter_rows(named=True):
        key = (int(row["code"]) - 1001, day_of[row["date"]])
        y[key] = [math.nan if row[n] is None else row[n] for n in LABELS]
        ends = []
        for h in HORIZONS:
            e = row[f"label_end_{h}d"]
            # first calendar day on or after the end date
            ends.append(-1 if e is None else next(d for d in range(N_DAYS) if CALENDAR[d].item() >= e))
        end[key] = ends
    return x, y, end


def ref_eligible(x, y, end, lookback, cutoff=None):
    """{day: [stocks]} with a full finite window and one label (ending by ``cutoff``) left."""
    out = {}
    for d in range(N_DAYS):
        out[d] = []
        for s in range(6):
            if d < lookback - 1:
                continue
            window_ok = all(
                (s, t) in x and all(math.isfinite(v) for v in x[(s, t)])
                for t in range(d - lookback + 1, d + 1)
            )
            labels = y.get((s, d), [math.nan] * 2)
            ends = end.get((s, d), [-1] * 2)
            label_ok = any(
                math.isfinite(v) and (cutoff is None or e <= cutoff)
                for v, e in zip(labels, ends, strict=True)
            )
            if window_ok and label_ok:
                out[d].append(s)
    return out


def ref_served(x, lookback):
    """{day: [stocks]} with a full finite window: the day's universe, decided by the past alone."""
    out = {}
    for d in range(N_DAYS):
        out[d] = [
            s
            for s in range(6)
            if d >= lookback - 1
            and all(
                (s, t) in x and all(math.isfinite(v) for v in x[(s, t)])
                for t in range(d - lookback + 1, d + 1)
            )
        ]
    return out


# ---- the panel ---------------------------------------------------------------------------------------------


def test_panel_values_at_every_stock_and_day(dataset, panel):
    _, features, labels = dataset
    x, y, end = ref_arrays(features, labels)
    assert panel.x.shape == (6, N_DAYS, 3) and panel.y.shape == (6, N_DAYS, 2)
    assert list(panel.dates) == list(CALENDAR) and list(panel.codes) == [f"{1001 + s}" for s in range(6)]
    assert panel.feature_names == FEATURES and panel.label_names == LABELS and panel.horizons == HORIZONS
    for s in range(6):
        for d in range(N_DAYS):
            want_x = x.get((s, d), [math.nan] * 3)
            want_y = y.get((s, d), [math.nan] * 2)
            np.testing.assert_array_equal(panel.x[s, d], np.float32(want_x))
            np.testing.assert_array_equal(panel.y[s, d], np.float32(want_y))
            assert list(panel.label_end[s, d]) == end.get((s, d), [-1, -1])
    assert panel.label_end[0, 3, 0] == 5  # the Saturday maps to the Monday after it
    assert panel.label_end[2, 19, 0] == 21  # the missing day is skipped by the stock's own next row
    assert list(panel.stock_id) == list(range(6)) and list(panel.sector_id) == [1, 1, 2, 0, 2, 1]


def test_panel_is_contiguous_float32_and_windows_are_views(panel):
    assert panel.x.dtype == np.float32 and panel.x.flags.c_contiguous
    assert panel.x_tensor.data_ptr() == panel.x.ctypes.data  # the tensor is the array's memory
    view = panel.window_view(10, L)
    assert view.shape == (6, L, 3)
    assert np.shares_memory(view.numpy(), panel.x)
    assert view.untyped_storage().data_ptr() == panel.x_tensor.untyped_storage().data_ptr()
    gathered = panel.windows_for_day(10, np.array([0, 2]), L)
    np.testing.assert_array_equal(gathered.numpy(), panel.x[[0, 2], 10 - L + 1 : 11])
    with pytest.raises(IndexError):
        panel.window_view(L - 2, L)


def test_eligibility_matches_reference(dataset, panel):
    _, features, labels = dataset
    x, y, end = ref_arrays(features, labels)
    for lookback in (1, L, 12):
        ref = ref_eligible(x, y, end, lookback)
        got = panel.eligible(lookback)
        for d in range(N_DAYS):
            assert list(np.flatnonzero(got[:, d])) == ref[d], (lookback, d)


def test_labels_can_never_be_features(dataset):
    root = dataset[0]
    for name in ("target_1d", "target_5d_rank", "label_end_1d", "oracle_5d"):
        with pytest.raises(ValueError, match=f"{name}.*can never be features"):
            DayPanel.load(root, features=["f_a", name])
    write_dataset(root, extra_label_groups={"odd": ["f_c"]})  # a manifest label is refused whatever its name
    with pytest.raises(ValueError, match="can never be features"):
        DayPanel.load(root, features=["f_c"])


def test_unknown_names_list_near_matches(dataset):
    root = dataset[0]
    with pytest.raises(ValueError, match=r"'f_x'.*features\.parquet.*f_a"):
        DayPanel.load(root, features=["f_a", "f_x"])
    with pytest.raises(ValueError, match=r"labels\.parquet.*'target_10d'"):
        DayPanel.load(root, labels=["target_10d"])


def test_only_requested_columns_and_flags_as_features(dataset):
    panel = DayPanel.load(dataset[0], features=["is_valid_5d", "f_c"], labels=["target_5d_rank"])
    assert panel.x.shape == (6, N_DAYS, 2) and panel.horizons == [5]
    assert panel.x[0, 4, 0] == 0.0 and panel.x[0, 5, 0] == 1.0  # booleans become 0 / 1
    assert np.isnan(panel.x[1, 0]).all()


# ---- the day dataset ---------------------------------------------------------------------------------------


def test_day_windows_labels_and_masks(dataset, panel):
    _, features, labels = dataset
    x, y, end = ref_arrays(features, labels)
    ref = ref_served(x, L)
    data = DayDataset(panel, lookback=L, min_stocks=1)
    assert [int(d) for d in data.day_index] == [d for d in range(N_DAYS) if ref[d]]
    for i in range(len(data)):
        item = data[i]
        d = item["day_index"]
        stocks = ref[d]
        assert item["date"] == str(CALENDAR[d])
        assert item["x"].shape == (len(stocks), L, 3) and item["x"].dtype == torch.float32
        assert item["stock_id"].tolist() == stocks and item["stock_id"].dtype == torch.long
        assert item["sector_id"].tolist() == [[1, 1, 2, 0, 2, 1][s] for s in stocks]
        for n, s in enumerate(stocks):
            np.testing.assert_array_equal(
                item["x"][n].numpy(), np.float32([x[(s, t)] for t in range(d - L + 1, d + 1)])
            )
            for h in range(2):
                label = y.get((s, d), [math.nan] * 2)[h]
                assert item["y_mask"][n, h].item() == math.isfinite(label)
                assert item["y"][n, h].item() == (np.float32(label) if math.isfinite(label) else 0.0)
        assert torch.isfinite(item["y"]).all()


def test_days_dropped_and_counted(panel):
    data = DayDataset(panel, lookback=L, min_stocks=5)
    eligible = panel.full_windows(L).sum(0)
    kept = [d for d in range(L - 1, N_DAYS) if eligible[d] >= 5]
    assert data.day_index.tolist() == kept
    assert data.dropped_reasons == {
        "embargo": 0,
        "before_first_full_window": L - 1,
        "too_few_stocks": N_DAYS - (L - 1) - len(kept),
        "no_labels": 0,
    }
    assert data.dropped_days == N_DAYS - len(kept) and data.dropped_reasons["too_few_stocks"] > 0
    assert data.stock_windows == int(eligible[kept].sum())
    # a date range keeps only its own days; windows may still reach back before it
    span = DayDataset(panel, "2021-01-18", date(2021, 1, 29), lookback=L, min_stocks=1)
    assert [str(CALENDAR[d]) for d in span.day_index] == [str(c) for c in CALENDAR[10:20]]


def test_label_cutoff_masks_and_counts(dataset, panel):
    _, features, labels = dataset
    x, y, end = ref_arrays(features, labels)
    cutoff = 24
    ref = ref_served(x, L)
    by_index = DayDataset(panel, end=CALENDAR[cutoff], lookback=L, min_stocks=1, label_cutoff=cutoff)
    by_date = DayDataset(
        panel, end=CALENDAR[cutoff], lookback=L, min_stocks=1, label_cutoff=str(CALENDAR[cutoff])
    )
    assert by_date.label_cutoff == cutoff and by_date.day_index.tolist() == by_index.day_index.tolist()
    assert by_index.day_index.tolist() == [d for d in range(cutoff + 1) if ref[d]]
    masked = 0
    for i in range(len(by_index)):
        item = by_index[i]
        d = item["day_index"]
        assert item["stock_id"].tolist() == ref[d]
        for n, s in enumerate(ref[d]):
            for h in range(2):
                usable = (
                    math.isfinite(y.get((s, d), [math.nan] * 2)[h]) and end.get((s, d), [-1] * 2)[h] <= cutoff
                )
                assert item["y_mask"][n, h].item() == usable
                assert usable or item["y"][n, h].item() == 0.0
    for d in range(cutoff + 1):  # reference count over the stocks with a full window
        for s in range(6):
            full = d >= L - 1 and all(
                (s, t) in x and np.isfinite(x[(s, t)]).all() for t in range(d - L + 1, d + 1)
            )
            if full:
                masked += sum(
                    math.isfinite(v) and e > cutoff for v, e in zip(y[(s, d)], end[(s, d)], strict=True)
                )
    assert by_index.masked_labels == masked > 0
    # stock 2 misses day 20, so its 1-day label on day 19 ends on day 21: past a cutoff of 20, though a purge
    # of one calendar day would keep it. With no label left it is still in day 19's universe (eligibility
    # reads only the past), but every one of its labels is masked: it leaves the loss and the metrics only.
    assert panel.eligible(L)[2, 19] and panel.label_end[2, 19, 0] == 21
    at_20 = DayDataset(panel, end=CALENDAR[20], lookback=L, min_stocks=1, label_cutoff=20)
    item = at_20[at_20.day_index.tolist().index(19)]
    row = item["stock_id"].tolist().index(2)
    assert 0 in item["stock_id"].tolist() and not item["y_mask"][row].any()
    # Training drops a day only when no stock on it has a usable label; evaluation serves it.
    train = DayDataset(
        panel, end=CALENDAR[20], lookback=L, min_stocks=1, label_cutoff=20, require_labels=True
    )
    served = set(at_20.day_index.tolist())
    assert set(train.day_index.tolist()) <= served and train.dropped_reasons["no_labels"] == len(
        served
    ) - len(train)
    for i in range(len(train)):
        assert train[i]["y_mask"].any()


def test_collate_shapes_and_day_ptr(panel):
    data = DayDataset(panel, lookback=L, min_stocks=1)
    items = [data[i] for i in (0, 7, 3)]
    batch = collate_days(items)
    sizes = [len(item["stock_id"]) for item in items]
    total = sum(sizes)
    assert batch["x"].shape == (total, L, 3) and batch["y"].shape == batch["y_mask"].shape == (total, 2)
    assert batch["stock_id"].shape == batch["sector_id"].shape == batch["day"].shape == (total,)
    assert batch["day_ptr"].tolist() == [0, sizes[0], sizes[0] + sizes[1], total]
    assert batch["day"].tolist() == [0] * sizes[0] + [1] * sizes[1] + [2] * sizes[2]
    assert batch["dates"] == [item["date"] for item in items]
    for k, item in enumerate(items):
        part = slice(batch["day_ptr"][k], batch["day_ptr"][k + 1])
        assert torch.equal(batch["x"][part], item["x"]) and torch.equal(batch["y_mask"][part], item["y_mask"])


def test_batched_fetch_gathers_once_and_collates_without_copy(panel):
    data = DayDataset(panel, lookback=L, min_stocks=1)
    one_by_one = collate_days([data[i] for i in (5, 2, 9)])
    items = data.__getitems__([5, 2, 9])  # what the DataLoader calls
    batch = collate_days(items)
    assert batch["x"].data_ptr() == items[0]["x"].data_ptr()  # the days' buffer is the batch: no copy
    for key in ("x", "y", "y_mask", "stock_id", "sector_id", "day", "day_ptr", "day_index"):
        assert torch.equal(batch[key], one_by_one[key]), key
    assert batch["dates"] == one_by_one["dates"]


# ---- the data module ---------------------------------------------------------------------------------------


def make_module(source, seed=0):
    return DayDataModule(
        source,
        lookback=L,
        days_per_batch=3,
        min_stocks=2,
        train=(None, "2021-02-05"),
        valid=("2021-02-08", "2021-02-19"),
        test=("2021-02-22", None),
        seed=seed,
    )


def loader_days(loader):
    return [d for batch in loader for d in batch["dates"]]


def test_datamodule_loaders_iterate_in_the_right_order(dataset):
    module = make_module(dataset[0])
    module.setup()
    train, valid, test = module.train_dataloader(), module.val_dataloader(), module.test_dataloader()
    train_days = loader_days(train)  # the first epoch
    assert loader_days(train) == train_days  # the order is a function of (seed, epoch) alone
    train.sampler.set_epoch(1)  # as Lightning does before each epoch
    assert loader_days(train) != train_days  # each epoch draws a new order
    train.sampler.set_epoch(0)
    for loader in (train, valid, test):
        for batch in loader:
            assert batch["x"].shape[1:] == (L, 3) and len(batch["dates"]) <= 3
            if loader is train:  # every training day teaches something (a row may lack labels)
                for k in range(len(batch["dates"])):
                    assert batch["y_mask"][batch["day_ptr"][k] : batch["day_ptr"][k + 1]].any()
    assert sorted(train_days) == [str(d) for d in module.panel.dates[module.datasets["train"].day_index]]
    assert train_days != sorted(train_days)  # shuffled
    again = make_module(module.panel)
    again.setup()
    assert loader_days(again.train_dataloader()) == train_days  # the seed fixes the order of every epoch
    other = make_module(module.panel, seed=1)
    other.setup()
    assert loader_days(other.train_dataloader()) != train_days
    for loader in (valid, test):
        days = loader_days(loader)
        assert days == sorted(days) and len(days) > 0  # chronological
    assert max(train_days) < min(loader_days(valid)) and max(loader_days(valid)) < min(loader_days(test))


def test_recency_weights_halve_every_halflife_and_average_one():
    days = np.array([3, 10, 11, 13, 30])  # calendar indices; a gap (an embargo) counts as age
    w = recency_weights(days, halflife_days=10)
    raw = np.array([0.5 ** ((30 - d) / 10) for d in days])  # slow: one day at a time
    np.testing.assert_allclose(w, raw / raw.mean(), rtol=1e-6)
    assert w.dtype == np.float32 and w.mean() == pytest.approx(1.0)
    assert w[-1] / w[1] == pytest.approx(4.0)  # 20 days older: two half-lives
    np.testing.assert_array_equal(recency_weights(days, 0), np.ones(5, np.float32))  # 0: off
    with pytest.raises(ValueError, match="recency_halflife_days"):
        recency_weights(days, -1)


def test_datamodule_weights_training_days_by_recency_only(dataset):
    module = DayDataModule(
        dataset[0], lookback=L, days_per_batch=3, min_stocks=2, train=(None, "2021-02-05"),
        valid=("2021-02-08", "2021-02-19"), recency_halflife=5,
    )  # fmt: skip
    module.setup()
    train = module.datasets["train"]
    expected = dict(zip(train.day_index.tolist(), recency_weights(train.day_index, 5).tolist(), strict=True))
    seen = 0
    for batch in module.train_dataloader():
        assert batch["day_weight"].shape == (len(batch["dates"]),)
        for day, weight in zip(batch["day_index"].tolist(), batch["day_weight"].tolist(), strict=True):
            assert weight == pytest.approx(expected[day])
            seen += 1
    assert seen == len(train)
    assert all("day_weight" not in batch for batch in module.val_dataloader())  # never on evaluation days
    plain = make_module(module.panel)
    plain.setup()
    assert all("day_weight" not in batch for batch in plain.train_dataloader())  # off by default


def test_datamodule_cutoffs_and_summary(dataset):
    module = make_module(dataset[0])
    module.setup()
    train_end = int(np.searchsorted(module.panel.dates, np.datetime64("2021-02-05"), side="right")) - 1
    assert module.datasets["train"].label_cutoff == train_end
    # no usable training label ends after the training segment
    data = module.datasets["train"]
    for i in range(len(data)):
        item = data[i]
        ends = torch.from_numpy(module.panel.label_end[item["stock_id"].numpy(), item["day_index"]])
        assert (ends[item["y_mask"]] <= train_end).all()
    summary = module.summary()
    assert set(summary) == {"train", "valid", "test"}
    for split, counts in summary.items():
        data = module.datasets[split]
        assert counts["days"] == len(data) and counts["stock_windows"] == data.stock_windows
        assert counts["days_dropped"] == sum(counts["dropped_reasons"].values())
    assert summary["train"]["labels_masked_by_cutoff"] > 0
    assert summary["train"]["dropped_reasons"]["before_first_full_window"] == L - 1


def test_datamodule_without_a_split_says_so(panel):
    module = DayDataModule(panel, lookback=L, train=(None, None), min_stocks=7)  # more than there are stocks
    module.setup()
    with pytest.raises(ValueError, match="train split has no days.*too_few_stocks"):
        module.train_dataloader()
    with pytest.raises(ValueError, match="no valid split"):
        module.val_dataloader()


def test_from_arrays_defaults():
    x = np.random.default_rng(0).normal(size=(3, 10, 2))
    y = np.ones((3, 10, 2))
    y[0, 9] = np.nan
    panel = DayPanel.from_arrays(x, y)
    assert panel.x.dtype == np.float32 and panel.x.flags.c_contiguous and panel.horizons == [1, 2]
    assert panel.label_end[1, 4].tolist() == [5, 6] and panel.label_end[0, 9].tolist() == [-1, -1]
    assert len(panel.dates) == 10 and np.is_busday(panel.dates).all()


# ---- the panel resident on the device ------------------------------------------------------------------


def test_gather_windows_equals_the_host_windows(panel):
    rng = np.random.default_rng(0)
    days = rng.integers(L - 1, len(panel.dates), size=40)
    stocks = rng.integers(0, panel.x.shape[0], size=40)
    got = gather_windows(panel.x_tensor, torch.from_numpy(stocks), torch.from_numpy(days), L)
    for r, (s, d) in enumerate(zip(stocks, days, strict=True)):
        expected = panel.windows_for_day(int(d), np.array([s]), L)[0]  # NaN where the stock has no row
        torch.testing.assert_close(got[r], expected, rtol=0, atol=0, equal_nan=True)


def test_device_batches_equal_host_batches(panel):
    """A training batch whose windows are gathered from the resident panel (``on_after_batch_transfer``)
    is the host-built batch, key by key; the other loaders keep their windows (forecasts read them)."""
    host, device = make_module(panel, seed=3), make_module(panel, seed=3)
    device.panel_on_device = True
    host.setup()
    device.setup()
    host_batches = list(host.train_dataloader())
    device_batches = list(device.train_dataloader())
    assert len(host_batches) == len(device_batches) > 1
    for ours, theirs in zip(device_batches, host_batches, strict=True):
        assert "x" not in ours and "window_stock" in ours
        ours = device.on_after_batch_transfer(ours, 0)
        assert "window_stock" not in ours
        for key in ("x", "y", "y_mask", "stock_id", "sector_id", "day", "day_ptr", "day_index"):
            assert torch.equal(ours[key], theirs[key]), key
    assert "x" in next(iter(device.val_dataloader())) and "x" in next(iter(device.eval_dataloader("train")))


def test_panel_on_device_decision(monkeypatch):
    assert panel_on_device("on", 10**12, "cpu") and not panel_on_device("off", 1, "gpu", cuda=True)
    assert not panel_on_device("auto", 1, "auto", cuda=False)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (8 * 10**9, 80 * 10**9))
    assert panel_on_device("auto", 4 * 10**9, "auto", cuda=True)  # half the free memory fits
    assert not panel_on_device("auto", 5 * 10**9, "gpu", cuda=True)
    assert not panel_on_device("auto", 1, "cpu", cuda=True)  # the CPU was asked for
