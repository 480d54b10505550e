"""Benchmark: import a large long-format CSV (the synthetic market written out as CSV).

Default: 2,000 stocks x 2,650 days (about 5.2M rows, 600 MB of CSV). Measures the whole
`atft data import` in a child process (wall time, peak RSS) and writes ``benchmarks/results/import.json``.
Usage: ``.venv/bin/python benchmarks/bench_import.py [--stocks N --days N]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from harness import run_cli, save_result

from atft.data.synthetic import SynthParams, synthesize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stocks", type=int, default=2000)
    ap.add_argument("--days", type=int, default=2650)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "prices.csv"
        synthesize(SynthParams(n_stocks=args.stocks, n_days=args.days)).prices.write_csv(csv)
        size_mb = csv.stat().st_size / 1024**2
        timing = run_cli("data", "import", "--prices", str(csv), "--out", f"{tmp}/store")
        manifest = json.loads((Path(tmp) / "store" / "manifest.json").read_text())
    result = {
        "benchmark": "import_long_csv",
        "rows": manifest["rows"],
        "csv_mb": round(size_mb),
        "wall_s": timing["wall_s"],
        "rows_per_s": round(manifest["rows"] / timing["wall_s"]),
        "peak_rss_gb": timing["peak_rss_gb"],
    }
    save_result("import", result)


if __name__ == "__main__":
    main()
