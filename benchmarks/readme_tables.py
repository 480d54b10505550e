"""The README's two compare tables (one row per model, then atft's paired tests) from a compare.json.

The README shows a compact view of ``atft compare``'s tables: the test RankIC per horizon, the 5-day NW t,
the 5-day book's net figures, capture, the validation RankIC a choice may use, and the cost. It is generated
from the same compare.json the benchmark writes, so that no number is typed by hand.
Usage: ``.venv/bin/python benchmarks/readme_tables.py benchmarks/results/compare_synth/compare.json``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

COLUMNS = [
    ("RankIC 1d", "rankic_1d", "{:.4f}"),
    ("RankIC 5d", "rankic_5d", "{:.4f}"),
    ("RankIC 10d", "rankic_10d", "{:.4f}"),
    ("RankIC 20d", "rankic_20d", "{:.4f}"),
    ("NW t 5d", "rankic_nw_tstat_5d", "{:.1f}"),
    ("book Sharpe (net)", "book_sharpe", "{:.2f}"),
    ("annual return", "book_annual_return", "{:.1%}"),
    ("max DD", "book_max_drawdown", "{:.1%}"),
    ("turnover", "book_mean_turnover", "{:.0%}"),
    ("capture 5d", "capture_5d", "{:.0%}"),
    ("valid RankIC 5d", "valid_rankic_5d", "{:.4f}"),
    ("train s", "seconds", "{:.0f}"),
]


def cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    std = row.get(f"{key}_std")
    if row.get("seeds", 1) > 1 and std is not None and math.isfinite(std):
        return f"{fmt.format(value)} ± {fmt.format(std)}"
    return fmt.format(value)


def tables(compare: dict, against: str = "atft") -> str:
    rows = compare["rows"]
    lines = [
        "| model | seeds | " + " | ".join(c[0] for c in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    for row in rows:
        cells = [cell(row, key, fmt) for _, key, fmt in COLUMNS]
        lines.append(f"| {row['model']} | {row['seeds']} | " + " | ".join(cells) + " |")
    paired = [p for p in compare["paired"] if p["model"] == against]
    horizons = sorted({p["horizon"] for p in paired})
    lines += ["", f"| {against} vs | " + " | ".join(f"{h}d mean diff (NW t)" for h in horizons) + " |"]
    lines.append("|---" * (len(horizons) + 1) + "|")
    for rival in dict.fromkeys(p["against"] for p in paired):
        by_h = {p["horizon"]: p for p in paired if p["against"] == rival}
        cells = [
            f"{by_h[h]['mean_diff']:+.4f} ({by_h[h]['nw_tstat']:.1f})" if h in by_h else "-" for h in horizons
        ]
        lines.append(f"| {rival} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("compare_json", type=Path)
    ap.add_argument("--against", default="atft", help="the model whose paired tests are shown")
    args = ap.parse_args()
    print(tables(json.loads(args.compare_json.read_text()), args.against))


if __name__ == "__main__":
    main()
