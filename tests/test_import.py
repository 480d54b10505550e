"""The real-data importer on small hand-made files: layouts, every check and repair, strict mode, atomicity."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import polars as pl
import pytest

from atft.data.csv_reader import csv_files, csv_records, read_csv
from atft.data.importer import DataImportError, import_market
from atft.data.store import LISTED_INFO_SCHEMA, PRICE_SCHEMA, RawStore, StoreError

HEADER = "date,code,open,high,low,close,volume"
OHLC_NAMES = ("open", "high", "low", "close")


def write(path: Path, *lines: str) -> Path:
    """Write a text file from lines (a trailing newline included) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def clean_csv(path: Path) -> Path:
    """Two codes over three days, nothing to repair."""
    return write(
        path,
        HEADER,
        "2024-01-04,1111,100,110,95,105,1000",
        "2024-01-05,1111,105,112,101,110,1200",
        "2024-01-09,1111,110,111,100,104,900",
        "2024-01-04,2222,50,52,49,51,300",
        "2024-01-05,2222,51,53,50,52,350",
        "2024-01-09,2222,52,54,51,53,400",
    )


def checks(manifest: dict) -> dict:
    return manifest["checks"]


# ------------------------------------------------------------------------------------------ layouts


def test_long_csv_roundtrip(tmp_path):
    stages: list[str] = []
    m = import_market(clean_csv(tmp_path / "prices.csv"), tmp_path / "store", progress=stages.append)
    store = RawStore.read(tmp_path / "store")
    assert dict(store.prices.schema) == PRICE_SCHEMA
    assert dict(store.listed_info.schema) == LISTED_INFO_SCHEMA
    assert store.prices.height == m["rows"] == 6
    assert store.prices["code"].to_list() == ["1111"] * 3 + ["2222"] * 3
    assert store.prices.equals(store.prices.sort("code", "date"))
    assert m["kind"] == "imported"
    assert m["source"]["prices"]["layout"] == "long_csv"
    assert m["source"]["prices"]["path"] == str((tmp_path / "prices.csv").resolve())
    assert m["codes"] == 2 and m["dates"] == 3
    assert m["date_range"] == ["2024-01-04", "2024-01-09"]
    # zero counts are written too, so users see what was checked
    for key in (
        "duplicate_rows_identical",
        "null_ohlc_rows",
        "partial_null_ohlc_rows",
        "non_positive_price_rows",
        "negative_volume_rows",
        "null_volume_rows",
        "high_below_low_swapped",
        "ohlc_range_widened",
        "codes_out_of_order",
        "ragged_start_codes",
        "ragged_end_codes",
        "internal_gap_rows",
        "extreme_moves",
        "listed_codes_without_prices",
    ):
        assert checks(m)[key] == 0, key
    assert checks(m)["codes_without_sector"] == 2  # no listed_info given
    assert m["repairs_total"] == 0 and m["quarantined_rows"] == 0
    assert "rejected_rows" not in m["tables"]
    assert stages[0] == "reading prices" and "writing store" in stages
    assert m["format_version"] == 1 and "created_at" in m


def test_no_listed_info_means_every_code_lacks_a_sector(tmp_path):
    m = import_market(clean_csv(tmp_path / "p.csv"), tmp_path / "store")
    assert checks(m)["codes_without_sector"] == 2
    li = RawStore.read(tmp_path / "store").listed_info
    assert li["code"].to_list() == ["1111", "2222"] and li["sector"].null_count() == 2


def test_long_parquet_with_integer_codes_and_turnover(tmp_path):
    df = pl.DataFrame(
        {
            "Date": [dt.date(2024, 1, 4), dt.date(2024, 1, 5)] * 2,
            "Code": [7203, 7203, 6758, 6758],
            "Open": [1.0, 2.0, 3.0, 4.0],
            "High": [1.5, 2.5, 3.5, 4.5],
            "Low": [0.5, 1.5, 2.5, 3.5],
            "Close": [1.2, 2.2, 3.2, 4.2],
            "Volume": [10, 20, 30, 40],
            "TurnoverValue": [1e3, 2e3, 3e3, 4e3],
        }
    )
    df.write_parquet(tmp_path / "p.parquet")
    m = import_market(tmp_path / "p.parquet", tmp_path / "store")
    prices = RawStore.read(tmp_path / "store").prices
    assert m["source"]["prices"]["layout"] == "long_parquet"
    assert prices["code"].unique().sort().to_list() == ["6758", "7203"]
    assert prices["turnover"].to_list() == [3e3, 4e3, 1e3, 2e3]


def test_aliases_case_spaces_and_float_codes(tmp_path):
    write(
        tmp_path / "p.csv",
        " Date , Ticker ,OPEN,High,low,Close,VOLUME,Note",
        "2024/01/04,7203.0, 10 ,11,9,10.5,,first",
        "20240105,7203,10,11,9,10.5,5,second",
    )
    m = import_market(tmp_path / "p.csv", tmp_path / "store")
    prices = RawStore.read(tmp_path / "store").prices
    assert prices["code"].to_list() == ["7203", "7203"]
    assert prices["date"].to_list() == [dt.date(2024, 1, 4), dt.date(2024, 1, 5)]
    assert prices["open"].to_list() == [10.0, 10.0]
    assert checks(m)["null_volume_rows"] == 1  # kept, volume null
    assert prices["volume"].null_count() == 1


def test_ticker_folder_with_time_zones_and_adj_close(tmp_path):
    folder = tmp_path / "quotes"
    write(
        folder / "7203.T.csv",
        "Date,Open,High,Low,Close,Adj Close,Volume",
        "2021-05-27 00:00:00+09:00,100,110,90,100,50,1000",
        "2021-05-28 00:00:00+09:00,100,120,95,110,55,2000",
    )
    write(
        folder / "6758.csv",
        "Date,Open,High,Low,Close,Volume",
        "2021-05-27T00:00:00Z,10,11,9,10,100",
        "2021-05-28T00:00:00Z,10,12,9,11,200",
    )
    write(folder / "README.txt", "not a quote file")
    m = import_market(folder, tmp_path / "store")
    prices = RawStore.read(tmp_path / "store").prices
    assert m["source"]["prices"] == {
        "path": str(folder.resolve()),
        "layout": "ticker_folder",
        "files": 2,
        "ignored_files": ["README.txt"],
        "adjusted_files": 1,
    }
    assert checks(m)["adj_close_adjusted_files"] == 1
    assert prices["date"].unique().sort().to_list() == [dt.date(2021, 5, 27), dt.date(2021, 5, 28)]
    toyota = prices.filter(pl.col("code") == "7203")
    # factor = Adj Close / Close: 0.5 on both days
    assert toyota["close"].to_list() == [50.0, 55.0]
    assert toyota["open"].to_list() == [50.0, 50.0]
    assert toyota["high"].to_list() == [55.0, 60.0]
    assert toyota["low"].to_list() == [45.0, 47.5]
    sony = prices.filter(pl.col("code") == "6758")
    assert sony["close"].to_list() == [10.0, 11.0]  # no Adj Close: unchanged


def test_index_file_and_folder(tmp_path):
    prices = clean_csv(tmp_path / "p.csv")
    write(tmp_path / "idx.csv", "Date,Open,High,Low,Close", "2024-01-04,1,2,1,2", "2024-01-05,2,3,2,3")
    m = import_market(prices, tmp_path / "s1", index=tmp_path / "idx.csv")
    index = RawStore.read(tmp_path / "s1").index
    assert index.height == 2 and index["volume"].null_count() == 2
    assert m["checks"]["index"]["rows"] == 2
    assert m["checks"]["index"]["price_dates_missing_in_index"] == 1
    write(tmp_path / "idxdir" / "^N225.csv", "Date,Open,High,Low,Close,Volume", "2024-01-04,1,2,1,2,5")
    m = import_market(prices, tmp_path / "s2", index=tmp_path / "idxdir")
    assert m["source"]["index"]["layout"] == "ticker_folder"
    assert RawStore.read(tmp_path / "s2").index["volume"].to_list() == [5.0]


def test_listed_info_sector_precedence_and_coverage(tmp_path):
    prices = write(
        tmp_path / "p.csv",
        HEADER,
        "2024-01-04,1111,1,1,1,1,1",
        "2024-01-04,2222,1,1,1,1,1",
        "2024-01-04,3333,1,1,1,1,1",
        "2024-01-04,4444,1,1,1,1,1",
    )
    write(
        tmp_path / "li.csv",
        "as_of,code,name,market,sector33_code,sector33_name,sector17_code,sector17_name",
        "20211230,1111,A,Prime,1050,Mining,2,Energy ",
        "20211230,2222,B,Prime,2050,Construction,,",
        "20211230,3333,C,Prime,,,,",
        "20211230,9999,Z,Prime,3050,Foods,1,Food",
    )
    m = import_market(prices, tmp_path / "store", listed_info=tmp_path / "li.csv")
    li = RawStore.read(tmp_path / "store").listed_info
    sectors = dict(zip(li["code"].to_list(), li["sector"].to_list(), strict=True))
    assert sectors == {"1111": "Energy", "2222": "Construction", "3333": None, "4444": None, "9999": "Food"}
    assert li.filter(pl.col("code") == "1111")["sector33_code"].to_list() == [1050]
    assert checks(m)["codes_without_sector"] == 2
    assert m["details"]["codes_without_sector"] == ["3333", "4444"]
    assert checks(m)["listed_codes_without_prices"] == 1


def test_listed_info_minimal_parquet_and_duplicates(tmp_path):
    prices = write(tmp_path / "p.csv", HEADER, "2024-01-04,1111,1,1,1,1,1")
    pl.DataFrame(
        {"code": [1111, 1111], "sector": ["Old", "New"], "as_of": [20200101, 20230101]}
    ).write_parquet(tmp_path / "li.parquet")
    m = import_market(prices, tmp_path / "store", listed_info=tmp_path / "li.parquet")
    assert RawStore.read(tmp_path / "store").listed_info["sector"].to_list() == ["New"]
    assert checks(m)["listed_info"]["duplicate_codes"] == 1
    with pytest.raises(DataImportError, match=r"li\.parquet row 0: code 1111 appears on several rows"):
        import_market(prices, tmp_path / "strict", listed_info=tmp_path / "li.parquet", strict=True)


# ------------------------------------------------------------------------------------------ bad input


def test_missing_path(tmp_path):
    with pytest.raises(DataImportError, match="prices path .*nope.csv does not exist"):
        import_market(tmp_path / "nope.csv", tmp_path / "store")
    prices = clean_csv(tmp_path / "p.csv")
    with pytest.raises(DataImportError, match="index path .*nope does not exist"):
        import_market(prices, tmp_path / "store", index=tmp_path / "nope")


def test_unsupported_extension(tmp_path):
    write(tmp_path / "prices.xlsx", "x")
    with pytest.raises(DataImportError, match=r"prices\.xlsx: unsupported extension '.xlsx'"):
        import_market(tmp_path / "prices.xlsx", tmp_path / "store")


def test_empty_file_header_only_and_empty_folder(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataImportError, match=r"empty\.csv is empty"):
        import_market(tmp_path / "empty.csv", tmp_path / "store")
    write(tmp_path / "header.csv", HEADER)
    with pytest.raises(DataImportError, match=r"header\.csv has no data rows"):
        import_market(tmp_path / "header.csv", tmp_path / "store")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataImportError, match="folder .*folder contains no .csv files"):
        import_market(tmp_path / "folder", tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_missing_column_lists_the_columns_found(tmp_path):
    write(tmp_path / "p.csv", "date,code,open,high,low,volume", "2024-01-04,1,1,1,1,1")
    with pytest.raises(DataImportError) as e:
        import_market(tmp_path / "p.csv", tmp_path / "store")
    msg = str(e.value)
    assert "p.csv" in msg and "missing required column 'close'" in msg and "'open', 'high'" in msg


def test_unparseable_date_names_line_and_value(tmp_path):
    write(tmp_path / "p.csv", HEADER, "2024-01-04,1,1,1,1,1,1", "", "04.01.2024,1,1,1,1,1,1")
    # the blank line 3 still counts: the bad row is on line 4
    with pytest.raises(
        DataImportError, match=r"p\.csv line 4: column 'date': unparseable date: '04\.01\.2024'"
    ):
        import_market(tmp_path / "p.csv", tmp_path / "store")


def test_impossible_date(tmp_path):
    write(tmp_path / "p.csv", HEADER, "2024-02-30,1,1,1,1,1,1")
    with pytest.raises(DataImportError, match=r"line 2: column 'date': unparseable date: '2024-02-30'"):
        import_market(tmp_path / "p.csv", tmp_path / "store")


def test_non_numeric_price_names_line_column_value(tmp_path):
    write(
        tmp_path / "p.csv",
        "Date,Code,Open,High,Low,Close,Volume",
        "2024-01-04,1,1,1,1,1,1",
        "2024-01-05,1,1,1,1,abc,1",
    )
    with pytest.raises(DataImportError, match=r"p\.csv line 3: column 'Close': not a number: 'abc'"):
        import_market(tmp_path / "p.csv", tmp_path / "store")


def test_parquet_errors_name_the_row_index(tmp_path):
    pl.DataFrame(
        {
            "date": ["2024-01-04", "bad"],
            "code": ["1", "1"],
            **{c: [1.0, 1.0] for c in "open high low close volume".split()},
        }
    ).write_parquet(tmp_path / "p.parquet")
    with pytest.raises(DataImportError, match=r"p\.parquet row 1: column 'date': unparseable date: 'bad'"):
        import_market(tmp_path / "p.parquet", tmp_path / "store")


def test_missing_code(tmp_path):
    write(tmp_path / "p.csv", HEADER, "2024-01-04,,1,1,1,1,1")
    with pytest.raises(DataImportError, match=r"line 2: column 'code': missing or non-integer code"):
        import_market(tmp_path / "p.csv", tmp_path / "store")


def test_ambiguous_columns(tmp_path):
    write(tmp_path / "p.csv", "date,code,ticker,open,high,low,close,volume", "2024-01-04,1,1,1,1,1,1,1")
    with pytest.raises(DataImportError, match="columns 'code' and 'ticker' both look like 'code'"):
        import_market(tmp_path / "p.csv", tmp_path / "store")


def test_index_folder_needs_exactly_one_csv(tmp_path):
    prices = clean_csv(tmp_path / "p.csv")
    write(tmp_path / "idx" / "a.csv", "Date,Open,High,Low,Close", "2024-01-04,1,1,1,1")
    write(tmp_path / "idx" / "b.csv", "Date,Open,High,Low,Close", "2024-01-04,1,1,1,1")
    with pytest.raises(DataImportError, match="exactly one .csv file, found 2"):
        import_market(prices, tmp_path / "store", index=tmp_path / "idx")


def test_listed_info_without_sector_column(tmp_path):
    prices = clean_csv(tmp_path / "p.csv")
    write(tmp_path / "li.csv", "code,name", "1111,A")
    with pytest.raises(DataImportError, match=r"li\.csv: missing a sector column .*'code', 'name'"):
        import_market(prices, tmp_path / "store", listed_info=tmp_path / "li.csv")


def test_existing_output_needs_overwrite(tmp_path):
    prices = clean_csv(tmp_path / "p.csv")
    import_market(prices, tmp_path / "store")
    with pytest.raises(StoreError, match="already exists"):
        import_market(prices, tmp_path / "store")
    import_market(prices, tmp_path / "store", overwrite=True)


# ------------------------------------------------------------------------------------------ checks and repairs


def messy_csv(path: Path) -> Path:
    """One long CSV with one of every problem; the expected counts are in ``test_messy_counts``."""
    return write(
        path,
        HEADER + ",comment",
        "2024-01-04,1111,100,110,95,105,1000,ok",  # 2
        "2024-01-04,1111,100,110,95,105,1000,identical duplicate",  # 3
        "2024-01-08,1111,,,,,1000,null ohlc",  # 4
        "2024-01-05,1111,105,112,101,110,,null volume; out of order after line 4",  # 5
        "2024-01-09,1111,110,100,105,104,900,high below low",  # 6
        "2024-01-10,1111,104,106,103,108,900,close above high",  # 7
        "2024-01-11,1111,108,109,107,,900,null close",  # 8
        "2024-01-12,1111,108,109,,108,900,partial null",  # 9
        "2024-01-15,1111,108,109,0,108,900,zero low",  # 10
        "2024-01-16,1111,108,109,107,108,-5,negative volume",  # 11
        "2024-01-17,1111,108,150,107,150,900,extreme move +39%",  # 12
        "2024-01-05,2222,50,52,49,51,300,starts late",  # 13
        "2024-01-09,2222,51,53,50,52,350,gap on 01-08",  # 14
        "2024-01-10,2222,52,54,51,53,400,ends early",  # 15
        "2024-01-04,3333,10,10,10,10,1,full",  # 16
        "2024-01-05,3333,10,10,10,10,1,full",  # 17
        "2024-01-08,3333,10,10,10,10,1,full",  # 18
        "2024-01-09,3333,10,10,10,10,1,full",  # 19
        "2024-01-10,3333,10,10,10,10,1,full",  # 20
        "2024-01-17,3333,10,10,10,10,1,full",  # 21
    )


def test_messy_counts(tmp_path):
    m = import_market(messy_csv(tmp_path / "messy.csv"), tmp_path / "store")
    c = checks(m)
    assert c["duplicate_rows_identical"] == 1
    assert c["null_ohlc_rows"] == 1
    assert c["partial_null_ohlc_rows"] == 2
    assert c["non_positive_price_rows"] == 1
    assert c["negative_volume_rows"] == 1
    assert c["null_volume_rows"] == 1
    assert c["high_below_low_swapped"] == 1
    assert c["ohlc_range_widened"] == 2  # line 6 (after the swap, high 105 < open 110) and line 7
    assert c["codes_out_of_order"] == 1 and m["details"]["codes_out_of_order"] == ["1111"]
    assert c["ragged_start_codes"] == 1  # 2222
    assert c["ragged_end_codes"] == 1  # 2222
    # calendar: 01-04 05 08 09 10 17 (quarantined rows add no dates): 1111 and 2222 each lack 01-08
    assert c["internal_gap_rows"] == 2
    assert m["details"]["internal_gap_top_codes"] == [
        {"code": "1111", "gaps": 1},
        {"code": "2222", "gaps": 1},
    ]
    assert c["extreme_moves"] == 1
    move = m["details"]["extreme_moves"][0]
    assert (
        move["code"] == "1111"
        and move["date"] == "2024-01-17"
        and move["return"] == pytest.approx(150 / 108 - 1)
    )
    assert m["quarantined_rows"] == 5
    assert m["repairs_total"] == 1 + 1 + 2 + 1
    assert m["input_rows"] == 20
    assert m["input_rows"] == m["rows"] + m["quarantined_rows"] + c["duplicate_rows_identical"]


def test_messy_repaired_values_and_rejected_rows(tmp_path):
    import_market(messy_csv(tmp_path / "messy.csv"), tmp_path / "store")
    prices = RawStore.read(tmp_path / "store").prices
    a = prices.filter(pl.col("code") == "1111")
    assert a["date"].is_sorted()
    swapped = a.filter(pl.col("date") == dt.date(2024, 1, 9)).row(0, named=True)
    assert (swapped["high"], swapped["low"]) == (110.0, 100.0)  # 100/105 swapped, then widened to open 110
    widened = a.filter(pl.col("date") == dt.date(2024, 1, 10)).row(0, named=True)
    assert (widened["high"], widened["low"]) == (108.0, 103.0)
    rejected = pl.read_parquet(tmp_path / "store" / "rejected_rows.parquet")
    assert rejected.columns[:4] == ["table", "source_file", "source_row", "reason"]
    assert "comment" in rejected.columns  # original columns travel with the row
    assert dict(zip(rejected["source_row"].to_list(), rejected["reason"].to_list(), strict=True)) == {
        4: "null_ohlc",
        8: "partial_null_ohlc",
        9: "partial_null_ohlc",
        10: "non_positive_price",
        11: "negative_volume",
    }
    assert rejected["source_file"].unique().to_list() == [str((tmp_path / "messy.csv").resolve())]
    assert rejected.filter(pl.col("source_row") == 4)["volume"].to_list() == [1000.0]


def test_conflicting_duplicates_always_fail(tmp_path):
    write(
        tmp_path / "p.csv",
        HEADER,
        "2024-01-04,1111,100,110,95,105,1000",
        "2024-01-05,1111,100,110,95,105,1000",
        "2024-01-04,1111,100,110,95,106,1000",
    )
    with pytest.raises(DataImportError) as e:
        import_market(tmp_path / "p.csv", tmp_path / "store")
    msg = str(e.value)
    assert "p.csv" in msg and "code 1111" in msg and "2024-01-04" in msg
    assert "line 2" in msg and "line 4" in msg and "close=105.0" in msg and "close=106.0" in msg


def test_extreme_moves_note_index_moves(tmp_path):
    prices = write(
        tmp_path / "p.csv",
        HEADER,
        "2024-08-01,1111,100,100,100,100,1",
        "2024-08-02,1111,100,100,70,70,1",
        "2024-08-05,1111,70,100,70,100,1",
    )
    index = write(
        tmp_path / "idx.csv",
        "Date,Open,High,Low,Close",
        "2024-08-01,100,100,100,100",
        "2024-08-02,100,100,88,88",
        "2024-08-05,88,90,87,89",
    )
    m = import_market(prices, tmp_path / "store", index=index, extreme_move=0.25)
    moves = m["details"]["extreme_moves"]
    assert checks(m)["extreme_moves"] == 2 and checks(m)["extreme_moves_with_index_move"] == 1
    assert [(x["date"], x["index_moved"]) for x in moves] == [("2024-08-02", True), ("2024-08-05", False)]
    assert import_market(prices, tmp_path / "s2", extreme_move=0.5)["checks"]["extreme_moves"] == 0


def test_index_gets_the_same_checks(tmp_path):
    prices = clean_csv(tmp_path / "p.csv")
    index = write(
        tmp_path / "idx.csv",
        "Date,Open,High,Low,Close,Volume",
        "2024-01-05,2,3,2,3,1",
        "2024-01-04,1,2,1,2,1",
        "2024-01-04,1,2,1,2,1",
        "2024-01-09,,,,,1",
        "2024-01-10,3,2,4,3,1",
    )
    m = import_market(prices, tmp_path / "store", index=index)
    ci = checks(m)["index"]
    assert ci["input_rows"] == 5 and ci["rows"] == 3
    assert ci["duplicate_rows_identical"] == 1
    assert ci["null_ohlc_rows"] == 1
    assert ci["dates_out_of_order"] == 1
    assert ci["high_below_low_swapped"] == 1
    rejected = pl.read_parquet(tmp_path / "store" / "rejected_rows.parquet")
    assert rejected["table"].to_list() == ["index"] and rejected["code"].to_list() == [None]
    assert RawStore.read(tmp_path / "store").index["date"].is_sorted()


def test_blank_lines_are_counted(tmp_path):
    write(tmp_path / "p.csv", HEADER, "2024-01-04,1,1,1,1,1,1", "", ",,,,,,", "2024-01-05,1,1,1,1,1,1")
    m = import_market(tmp_path / "p.csv", tmp_path / "store")
    assert checks(m)["blank_lines_skipped"] == 2 and m["rows"] == 2


def test_everything_quarantined_is_an_error(tmp_path):
    write(tmp_path / "p.csv", HEADER, "2024-01-04,1,,,,,1")
    with pytest.raises(DataImportError, match="no valid price rows left"):
        import_market(tmp_path / "p.csv", tmp_path / "store")


# ------------------------------------------------------------------------------------------ strict mode

STRICT_CASES = {
    "identical duplicate": (
        "2024-01-04,1111,1,1,1,1,1",
        r"identical duplicate rows \(code 1111.*line 2 and .*line 3",
    ),
    "null ohlc": ("2024-01-04,1111,,,,,1", r"line 3: row would be quarantined \(null_ohlc\)"),
    "partial null": ("2024-01-04,1111,1,1,,1,1", r"line 3: row would be quarantined \(partial_null_ohlc\)"),
    "non-positive": (
        "2024-01-04,1111,1,1,-1,1,1",
        r"line 3: row would be quarantined \(non_positive_price\)",
    ),
    "negative volume": (
        "2024-01-04,1111,1,1,1,1,-1",
        r"line 3: row would be quarantined \(negative_volume\)",
    ),
    "high below low": ("2024-01-04,1111,1,1,2,1,1", r"line 3: high below low \(code 1111, date 2024-01-04\)"),
    "range widened": ("2024-01-04,1111,1,1,1,2,1", r"line 3: high/low do not cover open and close"),
}


@pytest.mark.parametrize("case", sorted(STRICT_CASES))
def test_strict_turns_repairs_into_errors(tmp_path, case):
    line, pattern = STRICT_CASES[case]
    first = "2024-01-03,1111,1,1,1,1,1" if case != "identical duplicate" else "2024-01-04,1111,1,1,1,1,1"
    write(tmp_path / "p.csv", HEADER, first, line)
    import_market(tmp_path / "p.csv", tmp_path / "lenient")  # repaired without strict
    with pytest.raises(DataImportError, match=pattern) as e:
        import_market(tmp_path / "p.csv", tmp_path / "store", strict=True)
    assert "p.csv" in str(e.value) and "strict mode" in str(e.value)
    assert not (tmp_path / "store").exists()


def test_strict_out_of_order(tmp_path):
    write(tmp_path / "p.csv", HEADER, "2024-01-05,1111,1,1,1,1,1", "2024-01-04,1111,1,1,1,1,1")
    with pytest.raises(DataImportError, match=r"p\.csv line 3: date earlier than the row before it"):
        import_market(tmp_path / "p.csv", tmp_path / "store", strict=True)


def test_strict_keeps_ragged_and_extreme_moves_as_reports(tmp_path):
    write(
        tmp_path / "p.csv",
        HEADER,
        "2024-01-04,1111,1,1,1,1,1",
        "2024-01-05,1111,2,2,2,2,1",
        "2024-01-05,2222,1,1,1,1,1",
    )
    m = import_market(tmp_path / "p.csv", tmp_path / "store", strict=True)
    assert checks(m)["extreme_moves"] == 1 and checks(m)["ragged_start_codes"] == 1
    assert m["options"]["strict"] is True


# ------------------------------------------------------------------------------------------ atomic writes


def _failing_writer(monkeypatch, fail_on: int) -> None:
    """Make ``DataFrame.write_parquet`` raise on its ``fail_on``-th call (1-based)."""
    real = pl.DataFrame.write_parquet
    calls = {"n": 0}

    def flaky(self, file, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == fail_on:
            Path(file).write_bytes(b"half a file")
            raise OSError("disk full")
        return real(self, file, *args, **kwargs)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", flaky)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    prices = clean_csv(tmp_path / "p.csv")
    _failing_writer(monkeypatch, fail_on=2)
    with pytest.raises(OSError, match="disk full"):
        import_market(prices, tmp_path / "out" / "store")
    assert not (tmp_path / "out" / "store").exists()
    assert list((tmp_path / "out").iterdir()) == []  # no staging folder left behind


def test_failed_overwrite_keeps_the_old_store(tmp_path, monkeypatch):
    prices = clean_csv(tmp_path / "p.csv")
    first = import_market(prices, tmp_path / "store")
    before = {p.name: p.read_bytes() for p in (tmp_path / "store").iterdir()}
    write(tmp_path / "p2.csv", HEADER, "2024-02-01,9999,1,1,1,1,1")
    _failing_writer(monkeypatch, fail_on=2)
    with pytest.raises(OSError, match="disk full"):
        import_market(tmp_path / "p2.csv", tmp_path / "store", overwrite=True)
    after = {p.name: p.read_bytes() for p in (tmp_path / "store").iterdir()}
    assert after == before
    assert RawStore.read(tmp_path / "store").manifest["created_at"] == first["created_at"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "p2.csv", "store"]


def test_parquet_datetimes_use_their_local_date(tmp_path):
    stamps = pl.Series(
        [dt.datetime(2021, 5, 27, 15, 0), dt.datetime(2021, 5, 28, 15, 0)]
    ).dt.replace_time_zone("UTC")
    pl.DataFrame(
        {
            "date": stamps.dt.convert_time_zone("Asia/Tokyo"),  # 2021-05-28 00:00 and 2021-05-29 00:00 JST
            "code": ["1", "1"],
            **{c: [1.0, 1.0] for c in ("open", "high", "low", "close", "volume")},
        }
    ).write_parquet(tmp_path / "p.parquet")
    import_market(tmp_path / "p.parquet", tmp_path / "store")
    assert RawStore.read(tmp_path / "store").prices["date"].to_list() == [
        dt.date(2021, 5, 28),
        dt.date(2021, 5, 29),
    ]


def test_null_adj_close_is_quarantined_with_its_original_values(tmp_path):
    folder = tmp_path / "quotes"
    write(
        folder / "7203.T.csv",
        "Date,Open,High,Low,Close,Adj Close,Volume",
        "2021-05-27,100,110,90,100,50,1000",
        "2021-05-28,100,120,95,110,,2000",
    )
    write(folder / "6758.csv", "Date,Open,High,Low,Close,Volume", "2021-05-27,10,11,9,10,100")
    m = import_market(folder, tmp_path / "store")
    assert checks(m)["partial_null_ohlc_rows"] == 1
    rejected = pl.read_parquet(tmp_path / "store" / "rejected_rows.parquet").row(0, named=True)
    assert rejected["source_file"].endswith("7203.T.csv") and rejected["source_row"] == 3
    assert (rejected["code"], rejected["close"], rejected["adj_close"]) == ("7203", 110.0, None)


def test_per_ticker_file_with_several_codes_is_an_error(tmp_path):
    write(tmp_path / "q" / "7203.csv", HEADER, "2024-01-04,7203,1,1,1,1,1", "2024-01-04,6758,1,1,1,1,1")
    with pytest.raises(DataImportError, match=r"7203\.csv: column 'code' holds several codes"):
        import_market(tmp_path / "q", tmp_path / "store")


def test_output_may_not_replace_an_input(tmp_path):
    folder = tmp_path / "quotes"
    write(folder / "7203.csv", "Date,Open,High,Low,Close,Volume", "2024-01-04,1,1,1,1,1")
    with pytest.raises(DataImportError, match="would replace the input"):
        import_market(folder, folder, overwrite=True)
    with pytest.raises(DataImportError, match="would replace the input"):
        import_market(folder / "7203.csv", tmp_path, overwrite=True)
    assert (folder / "7203.csv").is_file()


def test_parquet_column_of_the_wrong_type(tmp_path):
    frame = {
        "date": ["2024-01-04"],
        "code": [7203.5],
        **{c: [1.0] for c in ("open", "high", "low", "volume")},
    }
    pl.DataFrame({**frame, "close": [True]}).write_parquet(tmp_path / "bool.parquet")
    with pytest.raises(
        DataImportError, match=r"bool\.parquet: column 'close' has type Boolean, not a number"
    ):
        import_market(tmp_path / "bool.parquet", tmp_path / "store")
    pl.DataFrame({**frame, "close": [1.0]}).write_parquet(tmp_path / "code.parquet")
    with pytest.raises(
        DataImportError, match=r"code\.parquet row 0: column 'code': missing or non-integer code: 7203\.5"
    ):
        import_market(tmp_path / "code.parquet", tmp_path / "store")


# ------------------------------------------------------------------------------------------ malformed CSV


def test_literal_duplicate_column_names_are_an_error(tmp_path):
    write(tmp_path / "p.csv", "date,code,open,high,low,close,close,volume", "2021-01-04,1,1,1,1,1,2,1")
    with pytest.raises(DataImportError, match=r"p\.csv: column 'close' appears 2 times in the header"):
        import_market(tmp_path / "p.csv", tmp_path / "store")
    write(tmp_path / "q.csv", HEADER + ",note, note", "2021-01-04,1,1,1,1,1,1,a,b")
    with pytest.raises(DataImportError, match=r"q\.csv: column 'note' appears 2 times in the header"):
        import_market(tmp_path / "q.csv", tmp_path / "store")


@pytest.mark.parametrize(
    ("line", "fields"),
    [("2024-01-05,1,1,1,1,1,1,9", 8), ("2024-01-05,1,1,1,1,1", 6)],
    ids=["too many", "too few"],
)
def test_ragged_lines_name_file_and_line(tmp_path, line, fields):
    write(tmp_path / "p.csv", HEADER, "2024-01-04,1,1,1,1,1,1", "", line, line)
    with pytest.raises(
        DataImportError,
        match=rf"p\.csv line 4 has {fields} fields, the header has 7 \(2 malformed lines\)",
    ):
        import_market(tmp_path / "p.csv", tmp_path / "store")


def test_quoted_fields_with_commas_and_newlines_keep_line_numbers(tmp_path):
    write(
        tmp_path / "p.csv",
        HEADER + ",note",
        '2024-01-04,1,1,1,1,1,1,"a, b, and ""c"""',
        '2024-01-05,1,1,1,1,1,1,"two',
        'lines, one note"',
        "2024-01-08,1,1,1,1,1,1,plain",
    )
    m = import_market(tmp_path / "p.csv", tmp_path / "store")
    assert m["rows"] == 3 and checks(m)["blank_lines_skipped"] == 0
    # a quoted newline spans two lines: the row after it is on line 5, and an error there says so
    write(
        tmp_path / "bad.csv",
        HEADER + ",note",
        '2024-01-05,1,1,1,1,1,1,"two',
        'lines"',
        "2024-01-08,1,1,1,1,x,1,plain",
    )
    with pytest.raises(DataImportError, match=r"bad\.csv line 4: column 'close': not a number: 'x'"):
        import_market(tmp_path / "bad.csv", tmp_path / "s2")
    write(tmp_path / "ragged.csv", HEADER + ",note", '2024-01-05,1,1,1,1,1,1,"a', 'b",9')
    with pytest.raises(DataImportError, match=r"ragged\.csv line 2 has 9 fields, the header has 8"):
        import_market(tmp_path / "ragged.csv", tmp_path / "s3")


@pytest.mark.parametrize(
    "value",
    [
        "2021-01-05 garbage!!",
        "2021-01-05T99:99",
        "2021-01-05T10:60",
        "2021-01-05 10:00:00+25:00",
        "2021-01-05T10:00:00 junk",
        "2021-01-05T",
        "2021-01-05 10",
    ],
)
def test_text_after_the_date_must_be_a_time(tmp_path, value):
    write(tmp_path / "p.csv", HEADER, f"{value},1,1,1,1,1,1")
    with pytest.raises(
        DataImportError, match=rf"line 2: column 'date': unparseable date: '{re.escape(value)}'"
    ):
        import_market(tmp_path / "p.csv", tmp_path / "store")


@pytest.mark.parametrize(
    "value",
    [
        "2021-01-05 10:00",
        "2021-01-05T23:59:59",
        "2021-01-05T10:00:00.123456Z",
        "2021-01-05 10:00:00+0900",
        "2021-01-05 00:00:00-05:00",
        "2021-01-05 10:00 JST",
        "2021/01/05 10:00:00",
        "20210105 10:00",
    ],
)
def test_accepted_date_and_time_forms(tmp_path, value):
    write(tmp_path / "p.csv", HEADER, f"{value},1,1,1,1,1,1")
    import_market(tmp_path / "p.csv", tmp_path / "store")
    assert RawStore.read(tmp_path / "store").prices["date"].to_list() == [dt.date(2021, 1, 5)]


# ------------------------------------------------------------------------------------------ ticker folders


def test_ticker_column_must_match_the_file_name(tmp_path):
    folder = tmp_path / "q"
    write(folder / "7203.csv", "Date,Ticker,Open,High,Low,Close,Volume", "2024-01-04,6758,1,1,1,1,1")
    with pytest.raises(
        DataImportError,
        match=r"7203\.csv line 2: column 'Ticker' has code 6758 but the file name gives 7203",
    ):
        import_market(folder, tmp_path / "store")
    # integer-like codes, a .T suffix and empty cells all agree with 7203
    write(
        folder / "7203.csv",
        "Date,Symbol,Open,High,Low,Close,Volume",
        "2024-01-04,7203.T,1,1,1,1,1",
        "2024-01-05,7203.0,1,1,1,1,1",
        "2024-01-08,,1,1,1,1,1",
    )
    write(folder / "6758.T.csv", "Date,Code,Open,High,Low,Close,Volume", "2024-01-04,6758,1,1,1,1,1")
    m = import_market(folder, tmp_path / "store")
    assert m["rows"] == 4 and m["codes"] == 2


def test_two_files_with_the_same_code(tmp_path):
    folder = tmp_path / "q"
    write(folder / "6758.csv", "Date,Open,High,Low,Close,Volume", "2024-01-04,1,1,1,1,1")
    write(folder / "6758.T.csv", "Date,Open,High,Low,Close,Volume", "2024-01-05,1,1,1,1,1")
    with pytest.raises(DataImportError, match=r"6758\.T\.csv and 6758\.csv both give code 6758"):
        import_market(folder, tmp_path / "store")


def test_extra_columns_are_listed_in_the_manifest(tmp_path):
    folder = tmp_path / "q"
    header = "Date,Open,High,Low,Close,Adj Close,Volume,Dividends,Stock Splits"
    write(folder / "7203.csv", header, "2024-01-04,1,1,1,1,1,1,0,0")
    write(folder / "6758.csv", header + ",Note", "2024-01-04,1,1,1,1,1,1,0,0,x")
    m = import_market(folder, tmp_path / "store")
    assert m["source"]["prices"]["extra_columns_not_imported"] == ["Dividends", "Stock Splits", "Note"]
    li = write(tmp_path / "li.csv", "code,sector,scale_name,as_of", "6758,Tech,Core30,20240101")
    idx = write(tmp_path / "idx.csv", "Date,Open,High,Low,Close,Turnover", "2024-01-04,1,1,1,1,5")
    m = import_market(clean_csv(tmp_path / "p.csv"), tmp_path / "s2", index=idx, listed_info=li)
    assert "extra_columns_not_imported" not in m["source"]["prices"]
    assert m["source"]["index"]["extra_columns_not_imported"] == ["Turnover"]
    assert m["source"]["listed_info"]["extra_columns_not_imported"] == ["scale_name"]


def test_progress_reports_files_read(tmp_path):
    folder = tmp_path / "q"
    for code in ("1111", "2222", "3333"):
        write(folder / f"{code}.csv", "Date,Open,High,Low,Close,Volume", "2024-01-04,1,1,1,1,1")
    calls: list[tuple] = []
    import_market(folder, tmp_path / "store", progress=lambda *a: calls.append(a))
    assert calls[0] == ("reading prices",)
    assert [c for c in calls if len(c) == 3] == [
        ("reading 1111.csv", 1, 3),
        ("reading 2222.csv", 2, 3),
        ("reading 3333.csv", 3, 3),
    ]
    assert ("writing store",) in calls


def test_progress_is_throttled_for_large_folders(tmp_path):
    folder = tmp_path / "q"
    folder.mkdir()
    for i in range(1000, 1650):
        (folder / f"{i}.csv").write_text("Date,Open,High,Low,Close,Volume\n2024-01-04,1,1,1,1,1\n")
    counted: list[tuple] = []
    import_market(folder, tmp_path / "store", progress=lambda *a: counted.extend([a] if len(a) == 3 else []))
    assert 100 <= len(counted) <= 200
    assert counted[-1] == ("reading 1649.csv", 650, 650)


# ------------------------------------------------------------------------------------------ listed info


@pytest.mark.parametrize("value", ["99999999999", "2.5", "two"])
def test_listed_info_sector_codes_must_be_integers(tmp_path, value):
    prices = clean_csv(tmp_path / "p.csv")
    write(tmp_path / "li.csv", "code,sector17_code,sector17_name", "1111,1,Food", f"2222,{value},Tech")
    with pytest.raises(
        DataImportError, match=rf"li\.csv line 3: column 'sector17_code': not a 32-bit integer: '{value}'"
    ):
        import_market(prices, tmp_path / "store", listed_info=tmp_path / "li.csv")


def test_listed_info_integral_float_sector_codes(tmp_path):
    prices = clean_csv(tmp_path / "p.csv")
    pl.DataFrame({"code": ["1111"], "sector33_code": [1050.0], "sector": ["Mining"]}).write_parquet(
        tmp_path / "li.parquet"
    )
    import_market(prices, tmp_path / "store", listed_info=tmp_path / "li.parquet")
    li = RawStore.read(tmp_path / "store").listed_info
    assert li.filter(pl.col("code") == "1111")["sector33_code"].to_list() == [1050]


def test_listed_info_latest_as_of_is_compared_as_a_date(tmp_path):
    prices = clean_csv(tmp_path / "p.csv")
    write(
        tmp_path / "li.csv",
        "as_of,code,sector",
        "2021-12-01,1111,Fish",
        "2021-6-1,1111,Foods",
        "20210101,2222,Old",
        ",2222,Undated",
        "2021/02/01,2222,New",
    )
    import_market(prices, tmp_path / "store", listed_info=tmp_path / "li.csv")
    li = RawStore.read(tmp_path / "store").listed_info
    assert dict(zip(li["code"].to_list(), li["sector"].to_list(), strict=True)) == {
        "1111": "Fish",
        "2222": "New",
    }
    write(tmp_path / "bad.csv", "as_of,code,sector", "2021-12-01,1111,Fish", "Dec 2021,2222,Foods")
    with pytest.raises(
        DataImportError, match=r"bad\.csv line 3: column 'as_of': unparseable date: 'Dec 2021'"
    ):
        import_market(prices, tmp_path / "s2", listed_info=tmp_path / "bad.csv")


# ------------------------------------------------------------------------------------------ quarantine


def test_everything_quarantined_names_reasons_and_lines(tmp_path):
    write(
        tmp_path / "p.csv",
        HEADER,
        "2024-01-04,1,,,,,1",
        "2024-01-05,1,1,1,1,1,-1",
        "2024-01-08,1,,,,,1",
        "2024-01-09,1,,,,,1",
        "2024-01-10,1,,,,,1",
    )
    with pytest.raises(DataImportError) as e:
        import_market(tmp_path / "p.csv", tmp_path / "store")
    msg = str(e.value)
    assert "p.csv: no valid price rows left after quarantine" in msg
    assert "all 5 rows quarantined: null_ohlc 4, negative_volume 1" in msg
    assert "line 2 (null_ohlc)" in msg and "line 3 (negative_volume)" in msg and "line 4 (null_ohlc)" in msg
    assert "line 5" not in msg  # only the first few
    idx = write(tmp_path / "idx.csv", "Date,Open,High,Low,Close", "2024-01-04,,,,")
    with pytest.raises(
        DataImportError, match=r"no valid index rows left .*all 1 rows quarantined: null_ohlc 1"
    ):
        import_market(clean_csv(tmp_path / "ok.csv"), tmp_path / "store", index=idx)


def test_quoted_line_break_in_the_last_row_and_crlf(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(
        b"date,code,open,high,low,close,volume,note\r\n"
        b'2024-01-04,1,1,1,1,1,1,"a, b"\r\n'
        b"\r\n"
        b'2024-01-05,1,1,1,1,1,1,"last\r\nrow"'
    )
    m = import_market(path, tmp_path / "store")
    assert m["rows"] == 2 and checks(m)["blank_lines_skipped"] == 1
    path.write_bytes(b'date,code,open,high,low,close,volume\n2024-01-04,1,1,1,1,1,"1\n')
    with pytest.raises(DataImportError, match=r"p\.csv line 2: malformed quoting"):
        import_market(path, tmp_path / "s2")


# ------------------------------------------------------------------------------------------ nasty input

ENDINGS = {"LF": b"\n", "CRLF": b"\r\n", "CR": b"\r"}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_line_endings_lf_crlf_and_old_mac_cr(tmp_path, ending):
    eol = ENDINGS[ending]
    lines = [HEADER, "2024-01-04,1,1,1,1,1,1", "", "2024-01-05,1,1,1,1,1,1"]
    path = tmp_path / "p.csv"
    path.write_bytes(eol.join(s.encode() for s in lines) + eol)
    m = import_market(path, tmp_path / "store")
    assert m["rows"] == 2 and checks(m)["blank_lines_skipped"] == 1
    # an error names the line as an editor shows it, and the value without a line-ending byte
    path.write_bytes(eol.join(s.encode() for s in [*lines, "2024-01-08,1,1,1,1,1,x"]) + eol)
    with pytest.raises(DataImportError, match=r"p\.csv line 5: column 'volume': not a number: 'x'$"):
        import_market(path, tmp_path / "s2")
    # a quoted CR-only file too (Python's csv module path)
    path.write_bytes(eol.join([HEADER.encode() + b",note", b'2024-01-04,1,1,1,1,1,1,"a, b"']) + eol)
    assert import_market(path, tmp_path / "s3")["rows"] == 1


def test_mixed_cr_and_lf_line_endings_are_an_error(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(HEADER.encode() + b"\n2024-01-04,1,1,1,1,1,1\r2024-01-05,1,1,1,1,1,1\n")
    with pytest.raises(
        DataImportError, match=r"p\.csv line 2 has a carriage return \(CR\) .* mixes CR and LF"
    ):
        import_market(path, tmp_path / "store")
    # a CR inside a quoted field is text, and CR CR LF (a CRLF file converted twice) ends a line
    path.write_bytes(HEADER.encode() + b',note\r\r\n2024-01-04,1,1,1,1,1,1,"a\rb"\r\r\n')
    m = import_market(path, tmp_path / "store")
    assert m["rows"] == 1


def test_utf16_and_other_encodings_say_how_to_fix_them(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(f"{HEADER}\n2024-01-04,1,1,1,1,1,1\n".encode("utf-16"))
    with pytest.raises(DataImportError, match=r"p\.csv is UTF-16 text; save it as UTF-8"):
        import_market(path, tmp_path / "store")
    path.write_bytes(f"{HEADER},note\n2024-01-04,1,1,1,1,1,1,トヨタ\n".encode("shift_jis"))
    with pytest.raises(
        DataImportError, match=r"p\.csv line 2 is not UTF-8 text \(byte 0x.*save the file as UTF-8"
    ):
        import_market(path, tmp_path / "store")


def test_other_separators_are_named_in_the_missing_column_error(tmp_path):
    write(tmp_path / "p.csv", HEADER.replace(",", ";"), "2024-01-04;1;1;1;1;1;1")
    with pytest.raises(DataImportError, match=r"p\.csv: missing required column .* only commas are read"):
        import_market(tmp_path / "p.csv", tmp_path / "store")


def test_input_columns_named_like_internal_columns_are_kept(tmp_path):
    # provenance names, their input_ form, the quarantine reason and working columns (_order, _swap, _day)
    clash = "source_file,input_source_file,source_row,reason,table,_order,_adjust,_swap,_day,_bad_close"
    values = ",".join(f"v{i}" for i in range(len(clash.split(","))))
    write(
        tmp_path / "p.csv",
        f"{HEADER},{clash}",
        f"2024-01-04,1,1,1,2,1,1,{values}",  # high below low: the importer's own _swap does the repair
        f"2024-01-05,1,,,,,1,{values}",  # quarantined: every input column travels into rejected_rows
    )
    m = import_market(tmp_path / "p.csv", tmp_path / "store")
    assert m["source"]["prices"]["extra_columns_not_imported"] == clash.split(",")
    assert m["input_rows"] == 2 and m["rows"] == 1 and m["quarantined_rows"] == 1
    assert checks(m)["high_below_low_swapped"] == 1 and m["repairs_total"] == 1
    rejected = pl.read_parquet(tmp_path / "store" / "rejected_rows.parquet")
    assert rejected.row(0, named=True)["source_row"] == 3 and rejected["reason"].to_list() == ["null_ohlc"]
    kept = {c: rejected[c][0] for c in rejected.columns if c.startswith("input_")}
    assert kept == {
        "input_input_source_file": "v0",  # input_source_file was taken by the input's own column
        "input_source_file": "v1",
        "input_source_row": "v2",
        "input_reason": "v3",
        "input_table": "v4",
        "input__order": "v5",
        "input__adjust": "v6",
        "input__swap": "v7",
        "input__day": "v8",
        "input__bad_close": "v9",
    }
    # the same for parquet, the index and listed info
    pl.DataFrame(
        {
            "date": [dt.date(2024, 1, 4)],
            "code": ["1"],
            **{c: [1.0] for c in (*OHLC_NAMES, "volume")},
            "source_file": ["a"],
            "input_source_file": ["b"],
        }
    ).write_parquet(tmp_path / "p.parquet")
    idx = write(
        tmp_path / "idx.csv", "Date,Open,High,Low,Close,source_row,input_source_row", "2024-01-04,1,1,1,1,a,b"
    )
    li = write(tmp_path / "li.csv", "code,sector,source_row,input_source_row", "1,Food,a,b")
    m = import_market(tmp_path / "p.parquet", tmp_path / "s2", index=idx, listed_info=li)
    assert m["source"]["prices"]["extra_columns_not_imported"] == ["source_file", "input_source_file"]
    assert m["source"]["index"]["extra_columns_not_imported"] == ["source_row", "input_source_row"]
    assert m["source"]["listed_info"]["extra_columns_not_imported"] == ["source_row", "input_source_row"]


def test_parquet_column_names_that_differ_only_in_spaces(tmp_path):
    frame = {c: ["2024-01-04"] if c == "date" else ["1"] for c in HEADER.split(",")}
    pl.DataFrame({**frame, "note": ["a"], " note": ["b"]}).write_parquet(tmp_path / "p.parquet")
    with pytest.raises(DataImportError, match=r"p\.parquet: column 'note' appears 2 times in the header"):
        import_market(tmp_path / "p.parquet", tmp_path / "store")


def test_nested_types_where_text_or_a_code_is_expected(tmp_path):
    prices = clean_csv(tmp_path / "p.csv")
    pl.DataFrame({"code": ["1111"], "sector": [["Food"]]}).write_parquet(tmp_path / "li.parquet")
    with pytest.raises(
        DataImportError, match=r"li\.parquet: column 'sector' has type List.*not a text value"
    ):
        import_market(prices, tmp_path / "store", listed_info=tmp_path / "li.parquet")
    pl.DataFrame(
        {"date": [dt.date(2024, 1, 4)], "code": [[1]], **{c: [1.0] for c in OHLC_NAMES}}
    ).write_parquet(tmp_path / "idx.parquet")
    with pytest.raises(DataImportError, match=r"idx\.parquet: column 'code' has type List.*not a code"):
        import_market(prices, tmp_path / "store", index=tmp_path / "idx.parquet")


def test_categorical_codes_in_parquet(tmp_path):
    pl.DataFrame(
        {
            "date": [dt.date(2024, 1, 4)],
            "code": pl.Series(["7203"], dtype=pl.Categorical),
            **{c: [1.0] for c in (*OHLC_NAMES, "volume")},
        }
    ).write_parquet(tmp_path / "p.parquet")
    import_market(tmp_path / "p.parquet", tmp_path / "store")
    assert RawStore.read(tmp_path / "store").prices["code"].to_list() == ["7203"]


def test_rejected_rows_keep_extra_columns_of_clashing_types_apart(tmp_path):
    pl.DataFrame(
        {
            "date": [dt.date(2024, 1, 4), dt.date(2024, 1, 5)],
            "code": ["1", "1"],
            **{c: [1.0, None] for c in OHLC_NAMES},
            "volume": [1.0, 1.0],
            "note": [[1], [2]],
        }
    ).write_parquet(tmp_path / "p.parquet")
    idx = write(
        tmp_path / "idx.csv", "date,open,high,low,close,note", "2024-01-04,1,1,1,1,x", "2024-01-05,,,,,y"
    )
    m = import_market(tmp_path / "p.parquet", tmp_path / "store", index=idx)
    assert m["quarantined_rows"] == 2
    rejected = pl.read_parquet(tmp_path / "store" / "rejected_rows.parquet")
    assert rejected["note"].to_list() == [None, [2]] and rejected["index_note"].to_list() == ["y", None]


@pytest.mark.parametrize("name", ["[x].csv", "7203 (1).csv", " .csv", "my prices.csv"])
def test_per_ticker_file_names_must_look_like_tickers(tmp_path, name):
    folder = tmp_path / "q"
    write(folder / "7203.csv", "Date,Open,High,Low,Close,Volume", "2024-01-04,1,1,1,1,1")
    write(folder / name, "Date,Open,High,Low,Close,Volume", "2024-01-05,1,1,1,1,1")
    with pytest.raises(
        DataImportError, match=rf"{re.escape(name)}: the file name gives code .* not look like a ticker"
    ):
        import_market(folder, tmp_path / "store")
    # odd but ticker-like names are fine; the index folder's file name is never a code
    (folder / name).rename(folder / "BRK-B.csv")
    write(tmp_path / "idx" / f"^N225 {name}", "Date,Open,High,Low,Close", "2024-01-04,1,1,1,1")
    m = import_market(folder, tmp_path / "store", index=tmp_path / "idx")
    assert m["codes"] == 2


def test_unexpected_polars_errors_still_name_the_input(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise pl.exceptions.ComputeError("boom\npages of polars context")

    monkeypatch.setattr("atft.data.importer.clean_bars", broken)
    with pytest.raises(DataImportError, match=r"p\.csv cannot be imported: ComputeError: boom$") as e:
        import_market(clean_csv(tmp_path / "p.csv"), tmp_path / "store")
    assert isinstance(e.value.__cause__, pl.exceptions.ComputeError)


def _nasty(tmp_path: Path, case: str) -> Path:
    """One malformed input per case, for ``test_malformed_input_names_the_file``."""
    p = tmp_path / ("p.parquet" if case == "parquet that is text" else "p.csv")
    body = {
        "empty": b"",
        "header only": HEADER.encode() + b"\n",
        "text in a numeric column": HEADER.encode() + b"\n2024-01-04,1,a,b,c,d,e\n",
        "mixed date formats": HEADER.encode() + b"\n2024-01-04,1,1,1,1,1,1\n01/05/2024,1,1,1,1,1,1\n",
        "non-UTF-8 bytes": HEADER.encode() + b"\n2024-01-04,\xff,1,1,1,1,1\n",
        "parquet that is text": HEADER.encode() + b"\n2024-01-04,1,1,1,1,1,1\n",
        "BOM then a bad value": b"\xef\xbb\xbf" + HEADER.encode() + b"\n2024-01-04,1,1,1,1,1,x\n",
    }
    if case == "folder without CSV":
        write(tmp_path / "q" / "7203.txt", "x")
        return tmp_path / "q"
    p.write_bytes(body[case])
    return p


NASTY = {
    "empty": r"p\.csv is empty",
    "header only": r"p\.csv has no data rows",
    "text in a numeric column": r"p\.csv line 2: column 'open': not a number: 'a'",
    "mixed date formats": r"p\.csv line 3: column 'date': unparseable date: '01/05/2024'",
    "non-UTF-8 bytes": r"p\.csv line 2 is not UTF-8 text",
    "parquet that is text": r"p\.parquet cannot be read",
    "BOM then a bad value": r"p\.csv line 2: column 'volume': not a number: 'x'",
    "folder without CSV": r"prices folder .*q contains no \.csv files",
}


@pytest.mark.parametrize("case", sorted(NASTY))
def test_malformed_input_names_the_file(tmp_path, case):
    with pytest.raises(DataImportError, match=NASTY[case]):
        import_market(_nasty(tmp_path, case), tmp_path / "store")


# ------------------------------------------------------------------------------------- the CSV layer


@pytest.mark.parametrize("quoted", [False, True])
def test_the_csv_layer_returns_named_parts(tmp_path, quoted):
    code = '"1111"' if quoted else "1111"
    f = write(
        tmp_path / "p.csv", HEADER, "", f"2024-01-04,{code},1,1,1,1,1", ",,", f"2024-01-05,{code},1,1,1,1,1"
    )
    records = csv_records(f)
    assert records.header == HEADER.split(",") and records.by_csv_module == quoted
    assert list(records.lines) == [3, 5] and records.blank_lines == 2
    table = read_csv(f)
    assert table.frame.columns == HEADER.split(",") and table.frame["code"].to_list() == ["1111", "1111"]
    assert list(table.lines) == [3, 5] and table.blank_lines == 2
    (tmp_path / ".hidden.csv").write_text(HEADER)
    assert csv_files(tmp_path) == ([f], [tmp_path / ".hidden.csv"])
