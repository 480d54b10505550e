"""Read CSV input files into text frames, with the line number of every row.

This is the CSV layer of the importer (:mod:`atft.data.importer`): it finds the CSV files of a folder,
checks the encoding (UTF-8, a byte-order mark allowed) and the line endings (LF, CRLF or old Mac CR,
never mixed), splits the file into records with the line each starts on, checks that every record has
as many fields as the header and that no column is named twice, and reads the records into a polars
frame with every column as text. Every error is a :class:`DataImportError` naming the file and line.
Parsing the text into dates, codes and numbers is the importer's job.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from atft.data.validation import DataImportError, location

__all__ = ["CSV_SUFFIXES", "CsvRecords", "CsvTable", "check_header", "csv_files", "csv_records", "read_csv"]

CSV_SUFFIXES = (".csv",)


class CsvRecords(NamedTuple):
    """A CSV file split into records (see :func:`csv_records`)."""

    payload: bytes  # CSV bytes for polars: the header and the data records, without the blank records
    header: list[str]  # the header's fields, as written
    lines: Sequence[int]  # the 1-based line on which each data record starts
    blank_lines: int  # blank records removed (empty lines, or only spaces and commas)
    by_csv_module: bool  # whether Python's csv module split the file (it had quotes, or ``careful``)


@dataclass(frozen=True)
class CsvTable:
    """A CSV file read as text (see :func:`read_csv`)."""

    frame: pl.DataFrame  # the data records, every column as text
    lines: Sequence[int]  # the 1-based line on which each row of ``frame`` starts (header = line 1)
    blank_lines: int  # blank records skipped


def csv_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """The visible CSV files of a folder (sorted) and every other entry, which is ignored."""
    entries = sorted(folder.iterdir())
    is_csv = [
        p.is_file() and p.suffix.lower() in CSV_SUFFIXES and not p.name.startswith(".") for p in entries
    ]
    return [p for p, ok in zip(entries, is_csv, strict=True) if ok], [
        p for p, ok in zip(entries, is_csv, strict=True) if not ok
    ]


def read_csv(file: Path) -> CsvTable:
    """Read a CSV file (all columns as text): the frame, each row's line number, blank lines removed."""
    records = csv_records(file)
    check_header(file, records.header)
    df = pl.read_csv(records.payload, infer_schema=False)
    if df.height != len(records.lines) and not records.by_csv_module:
        # polars split the records differently: let the csv module decide
        records = csv_records(file, careful=True)
        df = pl.read_csv(records.payload, infer_schema=False)
    if df.height != len(records.lines):
        raise DataImportError(f"{file} cannot be split into records consistently")
    return CsvTable(df, records.lines, records.blank_lines)


def check_header(file: Path, header: list[str]) -> None:
    """Error for a column name that appears more than once (polars would rename the copies silently).

    Names are compared without surrounding spaces; the importer applies the same rule to parquet columns.
    """
    names = [h.strip() for h in header]
    for name in dict.fromkeys(names):
        if names.count(name) > 1:
            raise DataImportError(f"{file}: column '{name}' appears {names.count(name)} times in the header")


def csv_records(file: Path, *, careful: bool = False) -> CsvRecords:
    """Split a CSV file into header and records, and check every record has as many fields as the header.

    The payload is CSV bytes for polars with the blank records removed (empty lines, or only spaces and
    commas), so that its rows are exactly the data records. Polars reports neither the line of a ragged
    record nor short records at all, hence this pass. A file without quotes (the usual case) has one
    record per line, and its commas are counted per line with numpy over the raw bytes; a file with
    quotes (or ``careful``) is parsed with Python's csv module, which handles quoted commas, doubled
    quotes and fields spanning lines.
    """
    data = file.read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataImportError(f"{file} is UTF-16 text; save it as UTF-8")
    # Old Mac files end lines with a bare CR, which polars does not split on: it would read the whole
    # file as one header line. With no LF anywhere every CR is a line break, so turning each CR into an
    # LF keeps every line and its number (and UTF-8 never has a CR byte inside a multi-byte character).
    if b"\r" in data and b"\n" not in data:
        data = data.replace(b"\r", b"\n")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataImportError(
            f"{location(file, line)} is not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as UTF-8"
        ) from None
    data = data.removeprefix(codecs.BOM_UTF8)
    _check_bare_cr(file, data)
    if not careful and b'"' not in data:
        del text  # not needed: free it before the bytes are split
        return _unquoted_records(file, data)
    records, starts, blank = _csv_module_records(file, text.removeprefix("\ufeff"))
    if not starts:
        raise DataImportError(f"{file} is empty" if not data else f"{file} has only blank lines")
    _check_field_counts(file, [len(r) for r in records], starts)
    # Write the records again, one per line, quoting what needs it (a field may span lines).
    payload = "".join(",".join(map(_quote, r)) + "\n" for r in records).encode()
    return CsvRecords(payload, records[0], starts[1:], blank, by_csv_module=True)


def _quote(field: str) -> str:
    """One CSV field, quoted so that any comma, quote, CR or LF inside survives; empty stays empty."""
    return '"' + field.replace('"', '""') + '"' if field else ""


def _check_bare_cr(file: Path, data: bytes) -> None:
    """Error for a CR outside quotes that does not end a line, in a file that also has LF line breaks.

    Such a file mixes line endings (say, an old Mac file appended to a Unix one). Polars would read the
    CR as part of a field and the csv module as a line break, so line numbers would disagree with one
    viewer or another; asking for one convention is clearer. A CR before an LF (CRLF, also the CRCRLF
    of a CRLF file converted twice) or at the end of the file ends a line and is fine; so is any CR
    inside a quoted field, which is text.
    """
    if b"\r" not in data:
        return
    buf = np.frombuffer(data, dtype=np.uint8)
    cr = np.flatnonzero(buf == ord("\r"))
    after = buf[np.minimum(cr + 1, len(buf) - 1)]
    bare = cr[(cr + 1 < len(buf)) & (after != ord("\n")) & (after != ord("\r"))]
    if len(bare) and b'"' in data:  # outside quotes: an even number of quote bytes before it
        quotes = np.flatnonzero(buf == ord('"'))
        bare = bare[np.searchsorted(quotes, bare) % 2 == 0]
    if len(bare):
        line = data[: bare[0]].count(b"\n") + 1
        more = f" ({len(bare)} such CRs)" if len(bare) > 1 else ""
        raise DataImportError(
            f"{location(file, line)} has a carriage return (CR) that does not end the line{more}: the file "
            "mixes CR and LF line endings; convert it to LF or CRLF line endings (for example with "
            "dos2unix or an editor's line-ending setting)"
        )


def _unquoted_records(file: Path, data: bytes) -> CsvRecords:
    """``csv_records`` for a file without quotes: one record per line, vectorized over the bytes."""
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == ord("\n"))
    n_lines = len(newlines) + (0 if data.endswith(b"\n") or not data else 1)
    line_start = np.r_[0, newlines + 1][:n_lines]
    line_end = np.r_[newlines, len(buf)][:n_lines]  # exclusive; a trailing \r is stripped below

    def per_line(mask: np.ndarray) -> np.ndarray:
        # How many marked bytes lie before each line's end, less those before the previous line's end.
        return np.diff(np.searchsorted(np.flatnonzero(mask), line_end), prepend=0)

    # Count only the rare bytes (commas, blanks) per line; a line with nothing else is a blank record.
    commas = per_line(buf == ord(","))
    blanks = per_line((buf == ord(" ")) | (buf == ord("\t")) | (buf == ord("\r")))
    content = (line_end - line_start) - commas - blanks
    fields = commas + 1
    records = np.flatnonzero(content > 0)
    if len(records) == 0:
        raise DataImportError(f"{file} is empty" if not data else f"{file} has only blank lines")
    starts = records + 1  # 1-based line numbers
    _check_field_counts(file, fields[records], starts)
    first = records[0]
    header = data[line_start[first] : line_end[first]].decode("utf-8").removesuffix("\r").split(",")
    if len(records) == n_lines:
        payload = data
    else:  # cut out the blank lines: few runs of consecutive records, joined once
        breaks = np.flatnonzero(np.diff(records) != 1)
        run_first = records[np.r_[0, breaks + 1]]
        run_last = records[np.r_[breaks, len(records) - 1]]
        payload = b"".join(
            data[line_start[a] : line_end[b]] + b"\n" for a, b in zip(run_first, run_last, strict=True)
        )
    return CsvRecords(payload, header, starts[1:], n_lines - len(records), by_csv_module=False)


def _check_field_counts(file: Path, fields, starts: Sequence[int]) -> None:
    """Error naming the first record whose number of fields differs from the header's."""
    fields = np.asarray(fields)
    wrong = np.flatnonzero(fields != fields[0])
    if len(wrong):
        more = f" ({len(wrong)} malformed lines)" if len(wrong) > 1 else ""
        i = wrong[0]
        raise DataImportError(
            f"{location(file, starts[i])} has {fields[i]} fields, the header has {fields[0]}{more}"
        )


def _csv_module_records(file: Path, text: str) -> tuple[list[list[str]], list[int], int]:
    """The non-blank records of a CSV text, the line each starts on, and the number of blank records."""
    records: list[list[str]] = []
    starts: list[int] = []
    end = blank = 0
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        for row in reader:
            start, end = end + 1, reader.line_num
            if any(field.strip() for field in row):
                records.append(row)
                starts.append(start)
            else:
                blank += 1
    except csv.Error as e:
        raise DataImportError(f"{location(file, end + 1)}: malformed quoting ({e})") from None
    return records, starts, blank
