"""The raw store: atomic writes, overwrite safety, clear errors on a folder that is not a store."""

from __future__ import annotations

import json
import os
import stat

import polars as pl
import pytest

from atft.data.store import RawStore, StoreError, check_target, conform, read_manifest, write_store


def tables(n: int = 3):
    prices = conform(
        pl.DataFrame(
            {
                "date": pl.date_range(pl.date(2020, 1, 1), pl.date(2020, 1, n), eager=True),
                "code": ["1301"] * n,
                "open": 1.0,
                "high": 1.0,
                "low": 1.0,
                "close": 1.0,
                "volume": 1.0,
            }
        ),
        "prices",
    )
    info = conform(pl.DataFrame({"code": ["1301"], "sector": ["Foods"]}), "listed_info")
    return {"prices": prices, "listed_info": info}


def test_roundtrip_and_manifest(tmp_path):
    write_store(tmp_path / "s", tables(), {"kind": "test"})
    store = RawStore.read(tmp_path / "s")
    assert store.prices.height == 3 and store.index is None and store.oracle is None
    assert store.prices["turnover"].null_count() == 3  # optional column absent -> null, not 0
    m = read_manifest(tmp_path / "s")
    assert m["kind"] == "test" and m["tables"]["prices"]["rows"] == 3 and m["format_version"] == 1


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = pl.DataFrame.write_parquet

    def failing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(self, *a, **k)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", failing)
    with pytest.raises(OSError):
        write_store(tmp_path / "s", tables(), {"kind": "test"})
    assert list(tmp_path.iterdir()) == []  # no store, no staging folder


def test_failed_overwrite_keeps_the_old_store(tmp_path, monkeypatch):
    write_store(tmp_path / "s", tables(3), {"kind": "old"})
    monkeypatch.setattr(pl.DataFrame, "write_parquet", lambda *a, **k: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError):
        write_store(tmp_path / "s", tables(5), {"kind": "new"}, overwrite=True)
    assert read_manifest(tmp_path / "s")["kind"] == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_overwrite_replaces(tmp_path):
    write_store(tmp_path / "s", tables(3), {"kind": "old"})
    with pytest.raises(StoreError, match="already exists"):
        write_store(tmp_path / "s", tables(5), {"kind": "new"})
    write_store(tmp_path / "s", tables(5), {"kind": "new"}, overwrite=True)
    assert RawStore.read(tmp_path / "s").prices.height == 5
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="not a folder"):
        read_manifest(tmp_path / "missing")
    with pytest.raises(StoreError, match="no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{oops")
    with pytest.raises(StoreError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "x"}))
    with pytest.raises(StoreError, match="missing prices.parquet"):
        RawStore.read(tmp_path)


def test_overwrite_never_replaces_a_folder_that_is_not_a_store(tmp_path):
    victim = tmp_path / "thesis"
    victim.mkdir()
    (victim / "thesis.txt").write_text("years of work")
    with pytest.raises(StoreError, match="not an ATFT store"):
        write_store(victim, tables(), {"kind": "test"}, overwrite=True)
    assert (victim / "thesis.txt").read_text() == "years of work"
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        write_store(tmp_path / "file", tables(), {"kind": "test"}, overwrite=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    write_store(empty, tables(), {"kind": "test"}, overwrite=True)  # an empty folder may be filled


def test_stale_staging_of_a_dead_writer_is_removed(tmp_path):
    dead = tmp_path / ".s.tmp-999999999-abcd"  # no such pid
    dead.mkdir()
    (dead / "prices.parquet").write_text("half written")
    alive = tmp_path / f".s.tmp-{os.getpid()}-efgh"  # a live writer's staging is left alone
    alive.mkdir()
    write_store(tmp_path / "s", tables(), {"kind": "test"})
    assert not dead.exists() and alive.exists()


def test_store_is_readable_by_others_per_umask(tmp_path):
    write_store(tmp_path / "s", tables(), {"kind": "test"})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "s").stat().st_mode) == 0o777 & ~mask


@pytest.mark.parametrize("content", ["[1, 2]", '{"tables": 5}'])
def test_manifest_that_is_not_an_object(tmp_path, content):
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(StoreError, match="not an ATFT manifest"):
        read_manifest(tmp_path)


def test_manifest_listing_missing_tables(tmp_path):
    write_store(tmp_path / "s", tables(), {"kind": "test"})
    (tmp_path / "s" / "prices.parquet").unlink()
    with pytest.raises(StoreError, match="incomplete.*prices.parquet"):
        read_manifest(tmp_path / "s")


def test_overwrite_refuses_a_store_that_also_holds_other_files(tmp_path):
    write_store(tmp_path / "s", tables(), {"kind": "old"})
    (tmp_path / "s" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="notes.txt"):
        write_store(tmp_path / "s", tables(), {"kind": "new"}, overwrite=True)
    assert (tmp_path / "s" / "notes.txt").exists()


def _store_with_manifest(tmp_path, edit):
    write_store(tmp_path / "s", tables(), {"kind": "test"})
    mf = tmp_path / "s" / "manifest.json"
    manifest = json.loads(mf.read_text())
    edit(manifest)
    mf.write_text(json.dumps(manifest))
    return tmp_path / "s"


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda m: m["tables"].update(prices=5), "tables.prices must be an object"),
        (lambda m: m["tables"]["prices"].pop("rows"), "tables.prices needs 'rows'"),
        (lambda m: m["tables"]["prices"].update(rows="many"), "tables.prices needs 'rows'"),
        (lambda m: m["tables"]["prices"].update(columns="date"), "tables.prices needs 'columns'"),
        (lambda m: m["tables"]["prices"].update(file="../other.parquet"), "tables.prices must name"),
        (lambda m: m["tables"].update({"../x": {"rows": 0, "columns": []}}), "not a table name"),
    ],
)
def test_malformed_table_entries_name_the_entry(tmp_path, edit, named):
    store = _store_with_manifest(tmp_path, edit)
    with pytest.raises(StoreError, match=named.replace(".", r"\.").replace("'", "'")):
        read_manifest(store)


def test_manifest_that_is_not_utf8(tmp_path):
    (tmp_path / "manifest.json").write_bytes(b'{"kind": "\xff"}')
    with pytest.raises(StoreError, match="not UTF-8"):
        read_manifest(tmp_path)


def test_overwrite_trusts_only_table_files_a_manifest_lists(tmp_path):
    # A manifest that claims someone's file as a table must not let --overwrite delete it.
    store = _store_with_manifest(tmp_path, lambda m: m["tables"].update({"notes.txt": {}}))
    (store / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="notes.txt"):
        write_store(store, tables(), {"kind": "new"}, overwrite=True)
    assert (store / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlinked_target_is_refused(tmp_path, dangling):
    real = tmp_path / "real"
    if not dangling:
        write_store(real, tables(), {"kind": "old"})
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(StoreError, match="symbolic link"):
        write_store(link, tables(), {"kind": "new"}, overwrite=True)
    assert (
        link.is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"][: 2 - dangling]
    )


def test_store_name_with_glob_characters(tmp_path):
    # Stale-staging cleanup globs on the name; brackets must match literally, not as a character class.
    out = tmp_path / "s[1]"
    write_store(out, tables(), {"kind": "test"})
    write_store(out, tables(), {"kind": "again"}, overwrite=True)
    assert read_manifest(out)["kind"] == "again"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s[1]"]


def test_a_target_under_a_file_fails_before_any_work(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError, match="is a file, not a folder"):
        check_target(tmp_path / "f" / "sub" / "raw", overwrite=False)
