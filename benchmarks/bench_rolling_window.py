"""Benchmark: the JP rolling retrain's window, chosen on the validation year and read once on the test year.

The rolling retrain (``atft rolling``) refits ATFT-GAT-FAN every 21 trading days, warm-started for one
epoch. Two of its settings decide how recent the data a block learns from is: the training window
(``--train-days``) and the validation window that sits between it and the block (``data.split.valid_days``;
a warm-started block trains one epoch, so there it only delays the training data). Each candidate is run
over the Quality issue's validation year (2024-06-03..2025-04-30: no test-year day enters any block), the
one with the best 5-day RankIC of the continuous series is chosen, and only that one is run over the test
year (2025-06-02..2026-05-29). ``results/rolling_window.json`` holds every candidate's validation-year
figures and the chosen one's test-year figures (its rolling.md stays in --work; when the chosen setting is
``bench_compare.py``'s, it reproduces ``results/compare_rolling/``). Resumable: a finished rolling run (its
rolling.json) is reused.
Usage: ``.venv/bin/python benchmarks/bench_rolling_window.py [--work DIR]`` (10-15 minutes a candidate on
one core; the JP dataset is built under --work when it is not there).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from harness import dataset, run_cli, save_result

VALID_YEAR = ("2024-06-03", "2025-04-30")
TEST_YEAR = ("2025-06-02", "2026-05-29")
# (training days, validation days); (756, 250) is the setting of results/compare_rolling/
CANDIDATES = [(756, 250), (756, 63), (504, 63), (252, 63)]


def rolling(data: Path, out: Path, train_days: int, valid_days: int, span: tuple[str, str]) -> dict:
    """The continuous series' 5-day RankIC, its NW t and the book's net Sharpe of one rolling run."""
    if not (out / "rolling.json").is_file():
        run_cli("rolling", "--data-path", str(data), "--model", "atft", "--every", "21", "--train-days",
                str(train_days), "--start", span[0], "--end", span[1], "--warm-start", "--warm-epochs", "1",
                "--out", str(out), f"data.split.valid_days={valid_days}", "eval.cost_bps=10",
                "train.max_epochs=3")  # fmt: skip
    summary = json.loads((out / "rolling.json").read_text())
    five = summary["metrics"]["5d"]
    return {
        "train_days": train_days,
        "valid_days": valid_days,
        "span": list(span),
        "rankic_5d": five["rankic"],
        "rankic_5d_nw_t": five["rankic_nw_tstat"],
        "rankic": {h: m["rankic"] for h, m in summary["metrics"].items() if h[:-1].isdigit()},
        "book_sharpe": summary["book"]["sharpe"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="atft_rolling_window_"))
    data = dataset(work, "jp")
    valid = [rolling(data, work / f"valid_{t}_{v}", t, v, VALID_YEAR) for t, v in CANDIDATES]
    best = max(valid, key=lambda r: r["rankic_5d"])
    chosen = work / f"test_{best['train_days']}_{best['valid_days']}"
    test = rolling(data, chosen, best["train_days"], best["valid_days"], TEST_YEAR)
    save_result("rolling_window", {"validation_year": valid, "chosen": best, "test_year": test})


if __name__ == "__main__":
    main()
