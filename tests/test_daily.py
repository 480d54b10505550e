"""The daily ranked list: ``atft predict`` (point in time, the same scores as training), ``atft bundle`` (round
trip, refused when damaged or its features differ) and ``atft serve`` (on loopback, with bounded loops)."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import uvicorn
from typer.testing import CliRunner

from atft.cli.app import app
from atft.data.store import RawStore, write_store
from atft.training.bundle import BundleError, ModelBundle, feature_hash
from atft.workflow.predict import DailyListError, NoDataForDay, daily_ranked_list, predict_day
from atft.workflow.service import create_app

runner = CliRunner()
pytestmark = pytest.mark.slow  # every test here needs a trained run

TINY = [
    "data.split.train_days=100",
    "data.split.valid_days=40",
    "data.split.test_days=40",
    "data.min_stocks_per_day=10",
    "model.hidden_size=16",
    "model.gat.heads=2",
    "model.temporal.attention_heads=2",
]


def cli(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("daily_runs")
    cli("train", "--data-path", str(tiny_dataset), "--max-epochs", "1", "--run-name", "r",
        *TINY, f"train.runs_dir={runs}")  # fmt: skip
    return runs / "r"


@pytest.fixture(scope="module")
def raw(tiny_dataset) -> Path:
    return tiny_dataset.parent / "raw"


@pytest.fixture(scope="module")
def bundle_file(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "model.atft"
    assert "Wrote" in cli("bundle", str(run), "--out", str(out))
    return out


def quiet(_line: str) -> None:
    pass


def store_with(raw: Path, out: Path, prices: pl.DataFrame, index: pl.DataFrame | None = None) -> Path:
    """A copy of the raw store ``raw`` with other prices (and index)."""
    store = RawStore.read(raw, oracle=False)
    tables = {
        "prices": prices,
        "index": store.index if index is None else index,
        "listed_info": store.listed_info,
    }
    write_store(out, tables, {"kind": "test"})
    return out


def last_test_day(run: Path) -> str:
    return str(pl.read_parquet(run / "predictions" / "test.parquet")["date"].max())


# ---- predict -----------------------------------------------------------------------------------------------


def test_the_list_of_a_test_day_scores_what_training_forecast(run, raw):
    day = last_test_day(run)
    daily = daily_ranked_list(ModelBundle.open(run), raw, day, say=quiet)
    trained = pl.read_parquet(run / "predictions" / "test.parquet").filter(
        pl.col("date").cast(pl.String) == day
    )
    joined = daily.ranked.join(trained, on=["date", "code", "horizon"])
    assert joined.height == daily.ranked.height == trained.height > 0  # the same stocks, every horizon
    assert (joined["score"] - joined["prediction"]).abs().max() < 1e-5
    assert (joined["q95"] - joined["q95_right"]).abs().max() < 1e-5
    for h in daily.info["horizons"]:  # rank 1 is the highest score, ranks are 1..N
        frame = daily.for_horizon(h)
        assert frame["rank"].to_list() == list(range(1, frame.height + 1))
        assert frame["score"].is_sorted(descending=True)


def test_predict_writes_the_lists_trims_to_top_k_and_names_the_neighbours(run, raw, tmp_path):
    daily, out = predict_day(run, "latest", raw_dir=raw, top_k=7, out=tmp_path / "list", say=quiet)
    for h in (1, 5, 10, 20):
        csv = pl.read_csv(out / f"ranked_{h}d.csv")
        parquet = pl.read_parquet(out / f"ranked_{h}d.parquet")
        assert csv.height == parquet.height == 7 and parquet["rank"].to_list() == list(range(1, 8))
        assert {"code", "sector", "score", "rank", "q05", "q50", "q95", "neighbours"} <= set(parquet.columns)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["date"] == str(daily.date) == str(RawStore.read(raw, oracle=False).prices["date"].max())
    assert summary["top_k"] == 7 and summary["scored"] == daily.for_horizon(5).height
    # neighbours: codes scored that day, by descending attention, whose weights (a softmax over the
    # stock's incoming edges) sum to at most 1
    scored = set(daily.for_horizon(5)["code"])
    named = daily.for_horizon(5).drop_nulls("neighbours")
    assert named.height > 0
    for text in named["neighbours"]:
        pairs = [item.split(":") for item in text.split(", ")]
        weights = [float(w) for _, w in pairs]
        assert {c for c, _ in pairs} <= scored and weights == sorted(weights, reverse=True)
        assert 0 < sum(weights) <= 1.0 + 1e-3


def test_predict_is_point_in_time_a_store_cut_at_the_day_gives_the_same_list(run, raw, tmp_path):
    store = RawStore.read(raw, oracle=False)
    days = store.prices["date"].unique().sort()
    day = days[-15]  # later bars exist in the full store
    cut = store_with(
        raw,
        tmp_path / "cut",
        store.prices.filter(pl.col("date") <= day),
        store.index.filter(pl.col("date") <= day),
    )
    bundle = ModelBundle.open(run)
    full = daily_ranked_list(bundle, raw, str(day), say=quiet)
    truncated = daily_ranked_list(bundle, cut, "latest", say=quiet)
    assert truncated.date == full.date == day
    assert truncated.ranked.equals(full.ranked)
    assert truncated.skipped.equals(full.skipped)
    # and the same scores as training forecast for that day from the dataset built on the full store
    trained = pl.read_parquet(run / "predictions" / "test.parquet").filter(pl.col("date") == day)
    joined = truncated.ranked.join(trained, on=["date", "code", "horizon"])
    assert joined.height == trained.height == truncated.ranked.height > 0
    assert (joined["score"] - joined["prediction"]).abs().max() < 1e-5


def test_every_stock_is_scored_or_skipped_with_its_reason(run, raw, tmp_path):
    store = RawStore.read(raw, oracle=False)
    prices = store.prices
    days = prices["date"].unique().sort()
    day = days[-1]
    codes = prices["code"].unique().sort().to_list()
    absent, gappy, young = codes[0], codes[1], codes[2]
    prices = prices.filter(
        ~((pl.col("code") == absent) & (pl.col("date") == day))  # no bar on the day
        & ~((pl.col("code") == gappy) & (pl.col("date") == days[-4]))  # a hole in its window
        & ~((pl.col("code") == young) & (pl.col("date") < days[-150]))  # listed 150 days ago
    )
    daily = daily_ranked_list(
        ModelBundle.open(run), store_with(raw, tmp_path / "s", prices), str(day), say=quiet
    )
    reasons = dict(daily.skipped.select("code", "reason").iter_rows())
    assert reasons[absent].startswith(f"no bar on {day}")
    assert reasons[young].startswith("warmup: 150 days of history")
    assert reasons[gappy].startswith("gaps: 19 of the 20 window days")
    assert set(daily.for_horizon(5)["code"]) | set(reasons) == set(codes)
    assert not set(daily.for_horizon(5)["code"]) & set(reasons)
    assert daily.info["skipped_by_reason"] == {"gaps": 1, "no_bar": 1, "warmup": 1}


def test_a_day_without_data_or_with_incomplete_features_is_refused(run, raw, tmp_path):
    bundle = ModelBundle.open(run)
    store = RawStore.read(raw, oracle=False)
    last = store.prices["date"].max()
    with pytest.raises(
        NoDataForDay, match=r"prices.parquet has no bars on 2099-01-01 \(the last trading day"
    ):
        daily_ranked_list(bundle, raw, "2099-01-01", say=quiet)
    with pytest.raises(DailyListError, match="--date must be 'latest' or a date"):
        daily_ranked_list(bundle, raw, "yesterday", say=quiet)
    no_index = store_with(raw, tmp_path / "i", store.prices, store.index.filter(pl.col("date") < last))
    with pytest.raises(NoDataForDay, match=f"index.parquet has no close on {last}: the market features"):
        daily_ranked_list(bundle, no_index, str(last), say=quiet)
    said = []  # 'latest' is then the last day with both, and says so
    daily = daily_ranked_list(bundle, no_index, "latest", say=said.append)
    before = store.prices["date"].unique().sort()[-2]
    assert (
        daily.date == before and f"'latest' is {before}, the last day with both" in daily.info["latest_note"]
    )
    assert daily.info["latest_note"] in said
    early = str(store.prices["date"].unique().sort()[30])  # every stock is still in its 200-day warmup
    with pytest.raises(
        DailyListError, match=r"only 0 stocks have a complete 20-day window .*\(warmup: \d+\)$"
    ):
        daily_ranked_list(bundle, raw, early, say=quiet)


# ---- bundle ------------------------------------------------------------------------------------------------


def test_a_bundle_scores_exactly_what_its_run_folder_scores(run, raw, bundle_file):
    from_run = daily_ranked_list(ModelBundle.open(run), raw, "latest", say=quiet)
    loaded = ModelBundle.open(bundle_file)
    from_bundle = daily_ranked_list(loaded, raw, "latest", say=quiet)
    assert from_bundle.ranked.equals(from_run.ranked)
    info = loaded.info
    assert info["feature_hash"] == feature_hash(info["feature_names"], info["normalization"])
    assert info["dataset"]["schema_hash"] and len(info["dataset"]["manifest_sha256"]) == 64
    assert loaded.raw_dir == raw.resolve()


def rewrite_bundle(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    info = json.loads(members["bundle.json"])
    edit(info)
    members["bundle.json"] = json.dumps(info).encode()
    with zipfile.ZipFile(dst, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return dst


def test_a_bundle_whose_features_fail_their_hash_is_refused(bundle_file, tmp_path):
    def rename(info):
        info["feature_names"][0] = "ret_2d"

    edited = rewrite_bundle(bundle_file, tmp_path / "edited.atft", rename)
    with pytest.raises(BundleError, match="the feature list does not match its hash"):
        ModelBundle.read(edited)
    assert "does not match its hash" in cli("predict", str(edited), code=2)


def test_a_bundle_of_features_this_atft_does_not_build_is_refused_at_predict(bundle_file, raw, tmp_path):
    def rename_and_rehash(info):
        info["feature_names"][0] = "ret_2d"
        info["feature_hash"] = feature_hash(info["feature_names"], info["normalization"])

    def other_warmup(info):
        info["normalization"]["warmup_days"] = 100
        info["feature_hash"] = feature_hash(info["feature_names"], info["normalization"])

    renamed = ModelBundle.read(rewrite_bundle(bundle_file, tmp_path / "a.atft", rename_and_rehash))
    with pytest.raises(BundleError, match=r"trained on features this ATFT no longer builds \(ret_2d\)"):
        daily_ranked_list(renamed, raw, say=quiet)
    warm = ModelBundle.read(rewrite_bundle(bundle_file, tmp_path / "b.atft", other_warmup))
    with pytest.raises(BundleError, match="feature hash mismatch"):
        daily_ranked_list(warm, raw, say=quiet)


def test_a_damaged_or_foreign_bundle_is_one_line(bundle_file, tmp_path):
    truncated = tmp_path / "cut.atft"
    truncated.write_bytes(bundle_file.read_bytes()[:2000])
    with pytest.raises(BundleError, match="is damaged or not an ATFT bundle"):
        ModelBundle.read(truncated)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("hello.txt", "hi")
    with pytest.raises(
        BundleError, match=r"is not an ATFT bundle \(no bundle.json, config.yaml, weights.pt\)"
    ):
        ModelBundle.read(other)
    assert "not found" in cli("predict", str(tmp_path / "missing.atft"), code=2)


def test_predict_cli_writes_beside_the_run_and_prints_the_top(run, raw):
    out = cli("predict", str(run), "--raw", str(raw), "--top-k", "3")
    day = str(RawStore.read(raw, oracle=False).prices["date"].max())
    assert "the top of the 5-day list" in out and (run / "daily" / day / "ranked_5d.csv").is_file()
    assert pl.read_csv(run / "daily" / day / "ranked_20d.csv").height == 3


# ---- serve -------------------------------------------------------------------------------------------------

KEY = "test-key-123"


@pytest.fixture(scope="module")
def service(bundle_file, raw):
    """The app on a free loopback port in a thread; yields its base URL, stops it after the module."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(ModelBundle.open(bundle_file), raw, KEY),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):  # bounded: at most 10 s to start
        if server.started:
            break
        time.sleep(0.05)
    assert server.started, "the service did not start within 10 s"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def call(url: str, body: bytes | dict | None = None, key: str | None = KEY) -> tuple[int, dict]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    request.add_header("Content-Type", "application/json")
    if key is not None:
        request.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_service_health_and_a_ranked_list(service, bundle_file, raw):
    status, health = call(f"{service}/healthz", key=None)
    assert status == 200 and health["status"] == "ok" and health["horizons"] == [1, 5, 10, 20]
    status, body = call(f"{service}/predict", {"date": "latest", "top_k": 5, "horizons": [5, 20]})
    assert status == 200, body
    assert set(body["lists"]) == {"5", "20"} and [r["rank"] for r in body["lists"]["5"]] == [1, 2, 3, 4, 5]
    expected = daily_ranked_list(ModelBundle.open(bundle_file), raw, "latest", say=quiet).for_horizon(5, 5)
    assert [r["code"] for r in body["lists"]["5"]] == expected["code"].to_list()
    assert np.allclose([r["score"] for r in body["lists"]["5"]], expected["score"].to_numpy())


def test_service_refuses_a_wrong_or_missing_key(service):
    assert call(f"{service}/predict", {"date": "latest"}, key="wrong")[0] == 401
    status, body = call(f"{service}/predict", {"date": "latest"}, key=None)
    assert status == 401 and "X-API-Key" in body["detail"]


def test_service_refuses_malformed_bodies(service):
    assert call(f"{service}/predict", b"{not json")[0] == 422
    assert call(f"{service}/predict", {"top_k": 0})[0] == 422
    assert call(f"{service}/predict", {"dates": "latest"})[0] == 422  # unknown field: a typo is not ignored
    status, body = call(f"{service}/predict", {"horizons": [3]})
    assert status == 422 and "the model forecasts [1, 5, 10, 20]" in body["detail"]


def test_service_says_404_for_a_day_without_data(service):
    status, body = call(f"{service}/predict", {"date": "2099-01-01"})
    assert status == 404 and "has no bars on 2099-01-01" in body["detail"]


def test_service_answers_concurrent_requests_alike(service):
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: call(f"{service}/predict", {"top_k": 10}), range(12)))
    assert {status for status, _ in answers} == {200}
    first = answers[0][1]["lists"]
    assert all(body["lists"] == first for _, body in answers)


def test_serve_without_an_api_key_does_not_start(bundle_file, monkeypatch):
    monkeypatch.delenv("ATFT_API_KEY", raising=False)
    assert "set the API key in the environment variable ATFT_API_KEY" in cli(
        "serve", str(bundle_file), code=2
    )
