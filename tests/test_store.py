"""The raw store: atomic and interrupt-safe writes, overwrite safety, clear errors on a folder that is not a
store or on a damaged table."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat

import polars as pl
import pytest
from typer.testing import CliRunner

from atft.cli.app import app
from atft.data.store import (
    RawStore,
    StoreError,
    check_tables,
    check_target,
    conform,
    read_manifest,
    remove_leftovers,
    restore_old_copy,
    write_store,
)

runner = CliRunner()


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


# ------------------------------------------------------------------------------------ damaged tables


def _damage(file, how: str) -> None:
    """Truncate ``file`` to half its size, or replace it with random bytes of its size."""
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2] if how == "half" else os.urandom(len(data)))


@pytest.mark.parametrize("how", ["half", "random"])
@pytest.mark.parametrize("table", ["prices", "listed_info"])
def test_a_damaged_table_is_a_one_line_store_error(tmp_path, how, table):
    write_store(tmp_path / "s", tables(), {"kind": "imported"})
    assert check_tables(tmp_path / "s") == [
        tmp_path / "s" / "prices.parquet",
        tmp_path / "s" / "listed_info.parquet",
    ]
    _damage(tmp_path / "s" / f"{table}.parquet", how)
    for read in (check_tables, RawStore.read):
        with pytest.raises(StoreError) as info:
            read(tmp_path / "s")
        message = str(info.value)
        assert message.startswith(f"{tmp_path / 's' / table}.parquet is damaged (truncated or not parquet)")
        assert "atft data import ... --overwrite" in message and "\n" not in message


def test_damage_inside_the_data_pages_is_found_when_the_table_is_read(tmp_path):
    write_store(tmp_path / "s", tables(), {"kind": "synthetic"})
    file = tmp_path / "s" / "prices.parquet"
    data = bytearray(file.read_bytes())
    data[4:100] = b"\xff" * 96  # the first column's pages; the footer stays intact
    file.write_bytes(bytes(data))
    check_tables(tmp_path / "s")  # the footer opens
    with pytest.raises(
        StoreError, match=r"prices\.parquet is damaged \(its data cannot be read: .*atft data synth"
    ):
        RawStore.read(tmp_path / "s")


def test_a_damaged_table_left_on_disk_still_fails_the_read(tmp_path):
    # `atft data build` reads with oracle=False and copies the oracle later: the damage must show up now.
    write_store(tmp_path / "s", {**tables(), "oracle": pl.DataFrame({"x": [1.0]})}, {"kind": "synthetic"})
    _damage(tmp_path / "s" / "oracle.parquet", "half")
    with pytest.raises(StoreError, match=r"oracle\.parquet is damaged"):
        RawStore.read(tmp_path / "s", oracle=False)


def test_info_and_build_fail_on_a_damaged_table_with_one_line(tmp_path):
    write_store(tmp_path / "s", tables(), {"kind": "imported"})
    ok = runner.invoke(app, ["data", "info", str(tmp_path / "s")])
    assert ok.exit_code == 0, ok.output
    _damage(tmp_path / "s" / "prices.parquet", "random")
    for args in (
        ["data", "info", str(tmp_path / "s")],
        ["data", "build", "--raw", str(tmp_path / "s"), "--out", str(tmp_path / "d")],
    ):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
        assert "prices.parquet is damaged" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "d").exists()


# ------------------------------------------------------------------------------- interrupted writes


def test_ctrl_c_while_writing_removes_the_staging_folder(tmp_path, monkeypatch):
    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pl.DataFrame, "write_parquet", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_store(tmp_path / "s", tables(), {"kind": "test"})
    assert list(tmp_path.iterdir()) == []


def test_a_second_ctrl_c_does_not_stop_the_cleanup(tmp_path, monkeypatch):
    real_rmtree = shutil.rmtree
    calls = []

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    def rmtree_hit_again(path, *a, **k):
        calls.append(path)
        signal.raise_signal(signal.SIGINT)  # the user presses Ctrl-C again while the folder is deleted
        return real_rmtree(path, *a, **k)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", interrupted)
    monkeypatch.setattr(shutil, "rmtree", rmtree_hit_again)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        write_store(tmp_path / "s", tables(), {"kind": "test"})
    assert calls and list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGINT) is handler  # restored


def test_sigterm_while_writing_removes_the_staging_folder(tmp_path, monkeypatch):
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM has a handler in this process")

    def terminated(self, *a, **k):
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", terminated)
    with pytest.raises(SystemExit) as info:
        write_store(tmp_path / "s", tables(), {"kind": "test"})
    assert info.value.code == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_ctrl_c_during_the_swap_waits_until_the_swap_is_done(tmp_path, monkeypatch):
    # Python's own Ctrl-C handler, whatever the suite was started under (a background job ignores SIGINT)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c_during_the_swap(tmp_path, monkeypatch)
    finally:
        signal.signal(signal.SIGINT, previous)


def _ctrl_c_during_the_swap(tmp_path, monkeypatch):
    write_store(tmp_path / "s", tables(3), {"kind": "old"})
    real_replace = os.replace

    def replace_hit(src, dst):
        real_replace(src, dst)
        if str(dst).endswith(f".s.old-{os.getpid()}"):
            signal.raise_signal(signal.SIGINT)  # between hiding the old store and moving the new one in

    monkeypatch.setattr(os, "replace", replace_hit)
    with pytest.raises(KeyboardInterrupt):
        write_store(tmp_path / "s", tables(5), {"kind": "new"}, overwrite=True)
    assert read_manifest(tmp_path / "s")["kind"] == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_leftovers_of_dead_writers_are_removed_counted_and_logged(tmp_path, caplog):
    dead = [tmp_path / ".s.tmp-999999999-abcd", tmp_path / ".s.del-999999999-ef01"]
    for folder in dead:
        folder.mkdir()
        (folder / "prices.parquet").write_text("half written")
    other = tmp_path / ".t.tmp-999999999-abcd"  # another target's: not ours to remove
    other.mkdir()
    with caplog.at_level(logging.WARNING, logger="atft.data.store"):
        write_store(tmp_path / "s", tables(), {"kind": "test"})
    assert not any(p.exists() for p in dead) and other.exists()
    assert "removed 2 folder(s)" in caplog.text and ".s.tmp-999999999-abcd" in caplog.text
    assert remove_leftovers(tmp_path / "t") == [other]


def _killed_mid_swap(tmp_path):
    """A store ``s`` as a writer killed between its two renames leaves it: hidden old copy, no ``s``."""
    write_store(tmp_path / "s", tables(3), {"kind": "old"})
    staging = tmp_path / ".s.tmp-999999999-abcd"
    staging.mkdir()
    (staging / "manifest.json").write_text("{}")
    os.rename(tmp_path / "s", tmp_path / ".s.old-999999999")
    return tmp_path / "s"


def test_a_read_restores_the_old_copy_a_killed_swap_hid(tmp_path, caplog):
    store = _killed_mid_swap(tmp_path)
    with caplog.at_level(logging.WARNING, logger="atft.data.store"):
        assert RawStore.read(store).manifest["kind"] == "old"
    assert "restored" in caplog.text and ".s.old-999999999" in caplog.text
    assert not (tmp_path / ".s.old-999999999").exists()


def test_a_write_restores_the_old_copy_instead_of_deleting_it(tmp_path):
    store = _killed_mid_swap(tmp_path)
    with pytest.raises(StoreError, match="already exists"):  # the old store is back: no silent overwrite
        write_store(store, tables(5), {"kind": "new"})
    assert read_manifest(store)["kind"] == "old"
    store = _killed_mid_swap(tmp_path / "again")
    write_store(store, tables(5), {"kind": "new"}, overwrite=True)
    assert read_manifest(store)["kind"] == "new"
    assert [p.name for p in store.parent.iterdir()] == ["s"]  # old copy and staging are gone


def test_a_live_writers_hidden_copy_is_left_alone(tmp_path):
    write_store(tmp_path / "s", tables(3), {"kind": "old"})
    os.rename(tmp_path / "s", tmp_path / f".s.old-{os.getpid()}")  # a swap in progress
    assert restore_old_copy(tmp_path / "s") is None
    with pytest.raises(StoreError, match="not a folder"):
        read_manifest(tmp_path / "s")
    assert (tmp_path / f".s.old-{os.getpid()}").exists()
